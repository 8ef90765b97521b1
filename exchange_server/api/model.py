"""The shapes of the API description: methods, their params and errors, and pushes.

Why a module of its own: the method tables (``http_methods.py``, ``ws_methods.py``) and the
lookups (``registry.py``) both need these classes, and neither should import the other's
module to get them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exchange_server.api.schema import Schema
from exchange_server.common.errors import GENERIC_MESSAGES, ErrorCode

#: Generic error codes (rpc.md 2), declared in :mod:`exchange_server.common.errors`.
GENERIC_ERRORS: dict[int, str] = GENERIC_MESSAGES

#: A documented error is the declaration the servers raise (common/errors.py).
Error = ErrorCode


@dataclass(frozen=True)
class Param:
    """One positional parameter."""

    name: str
    schema: Schema
    description: str = ""
    #: may be left out (only trailing params)
    required: bool = True
    #: may repeat: ``[user_id, asset, asset, ...]`` (only the last param)
    variadic: bool = False

    def doc(self) -> str:
        return self.description or str(self.schema.get("description", ""))


@dataclass(frozen=True)
class Method:
    """A request/response method (HTTP or WebSocket)."""

    name: str
    summary: str
    params: tuple[Param, ...]
    result: Schema
    result_doc: str = ""
    errors: tuple[Error, ...] = ()
    #: longer explanation (Markdown)
    notes: str = ""
    #: the params array is not looked at (any array is accepted)
    params_ignored: bool = False
    #: HTTP: the service that answers (matchengine, readhistory, marketprice);
    #: WebSocket: "local" or the service a forwarded query goes to
    service: str = ""
    #: WebSocket: needs server.auth / server.sign first
    auth: bool = False
    #: WebSocket: the HTTP method this one forwards to
    forwards: str = ""
    #: replies may come from a cache (seconds or a description)
    cached: str = ""
    #: changes state (written to the operation log)
    write: bool = False
    tags: tuple[str, ...] = field(default=())

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]

    def param_count(self) -> tuple[int, int | None]:
        """(fewest, most) params accepted (most None: unbounded)."""
        if self.params_ignored:
            return 0, None
        fewest = sum(1 for p in self.params if p.required)
        most: int | None = None if any(p.variadic for p in self.params) else len(self.params)
        return fewest, most

    def all_errors(self) -> list[Error]:
        """The method's errors, generic ones included, by code."""
        return sorted(self.errors, key=lambda e: e.code)


@dataclass(frozen=True)
class Push:
    """A WebSocket notification ``{"method": name, "params": [...], "id": null}``."""

    name: str
    summary: str
    params: tuple[Param, ...]
    #: which method subscribes to it
    subscribe: str
    trigger: str
    notes: str = ""

    @property
    def schema(self) -> Schema:
        if len(self.params) == 1 and self.params[0].variadic:
            return {"type": "array", "items": self.params[0].schema, "minItems": 1}
        return {"type": "array", "items": [p.schema for p in self.params],
                "minItems": len(self.params), "maxItems": len(self.params)}


def by_name(entries: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for entry in entries:
        if entry.name in out:
            raise ValueError(f"{entry.name}: documented twice")
        out[entry.name] = entry
    return out
