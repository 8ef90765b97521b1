"""The publisher's durable mark: the highest operation id whose messages are all acknowledged.

Stored in a small JSON file, ``{"oper_id": N, "offsets": {"deals": n, ...}}``, replaced
atomically (write a temporary file, fsync, rename).  ``offsets`` is only used by the
in-process adapter: the offset the first message after operation N gets on each topic, so that
re-published messages get back the offsets they had before the restart.

The file may lag behind the truth (it is rewritten every 0.5 s at most) but is never ahead of
it: a lower mark only means some operations are published a second time after a restart.  A
missing or unreadable file reads as mark 0.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("exchange_server.bus")


@dataclass(frozen=True)
class Mark:
    oper_id: int = 0
    offsets: dict[str, int] = field(default_factory=dict)


class MarkFile:
    """A mark stored at ``path``; with ``path=None`` nothing is stored (mark is always 0)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None

    def load(self) -> Mark:
        if self.path is None:
            return Mark()
        try:
            data = json.loads(self.path.read_text())
            oper_id = data["oper_id"]
            offsets = data.get("offsets", {})
            if type(oper_id) is not int or oper_id < 0 or not isinstance(offsets, dict) or not all(
                    isinstance(k, str) and type(v) is int and v >= 0 for k, v in offsets.items()):
                raise ValueError("bad field types")
        except FileNotFoundError:
            return Mark()
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("%s: unreadable bus mark (%s): starting from mark 0", self.path, e)
            return Mark()
        return Mark(oper_id, dict(offsets))

    def save(self, mark: Mark) -> None:
        if self.path is None:
            return
        text = json.dumps({"oper_id": mark.oper_id, "offsets": mark.offsets}, sort_keys=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
