"""The packets captured on the wire between the original's C services (tests/data/rpc/).

Why a module of its own: the offline framing tests and the live tests against this project's
matchengine and readhistory read the same fixtures the same way.  See tests/data/rpc/README.md
for what was captured; the one stale ``order.depth`` reply (req_id 45, served from the
original's depth cache) is marked ``stale`` here and left out of comparisons.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from exchange_server.rpc import protocol as p
from tests.support.server import REPO

DATA = REPO / "tests" / "data" / "rpc"
MATCHENGINE = DATA / "matchengine-transcript-1.jsonl"
READHISTORY = DATA / "readhistory-transcript-1.jsonl"

#: the reply the original served from its 0.45 s depth cache (README)
STALE_DEPTH_REQ_ID = 45
#: keys whose values are wall-clock times
CLOCK_KEYS = frozenset({"ctime", "mtime", "ftime", "time"})


@dataclass(frozen=True)
class Captured:
    conn: int
    direction: str
    raw: bytes
    packet: p.Packet

    @property
    def header(self) -> tuple[int, int, int, int, int, int]:
        """The header fields a peer checks: command, pkg_type, result, sequence, req_id, ext."""
        pk = self.packet
        return (pk.command, pk.pkg_type, pk.result, pk.sequence, pk.req_id, len(pk.ext))


def load(path: Path) -> list[Captured]:
    out = []
    for line in path.read_text().splitlines():
        row = orjson.loads(line)
        raw = bytes.fromhex(row["hex"])
        out.append(Captured(row["conn"], row["dir"], raw,
                            p.decode_datagram(raw, max_pkg_size=1 << 24)))
    return out


def exchanges(path: Path) -> list[tuple[Captured, Captured]]:
    """(request, reply) pairs of the non-heartbeat packets, in the order they were executed."""
    packets = [c for c in load(path) if c.packet.command != p.CMD_HEARTBEAT]
    pending: dict[tuple[int, int], Captured] = {}
    pairs = []
    for c in packets:
        key = (c.conn, c.packet.sequence)
        if c.direction == "req":
            pending[key] = c
        else:
            pairs.append((pending.pop(key), c))
    assert not pending, "a captured request without its reply"
    return pairs


def crc_ok(raw: bytes) -> bool:
    (crc,) = struct.unpack_from("<I", raw, p.CRC_OFFSET)
    return p.packet_crc(raw, len(raw)) == crc


def without_clock(value: Any) -> Any:
    """``value`` with every clock field (ctime, mtime, ftime, time) set to None."""
    if isinstance(value, dict):
        return {k: None if k in CLOCK_KEYS else without_clock(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


def is_stale(request: Captured) -> bool:
    return request.packet.req_id == STALE_DEPTH_REQ_ID and request.packet.command == 206
