"""The operation log's ``detail`` text: ``{"method": ..., "params": [...]}``, exact both ways.

Why one module: both stores (SQLite, MySQL) write records, and replay and the history follower
read them.  Whatever an operation was accepted with must come back identical, because the
follower rebuilds history from it: a balance.update detail keeps the client's key order (the
original writes history details that way, me_update.c) and integers of any size.  So unlike
the original's operation log (me_operlog.c sorts keys) this codec does not sort; it is
:mod:`exchange_server.common.exactjson` (orjson, with an exact fallback for long integers).

A record that cannot be decoded is a :class:`StoreError` naming its operation id: replay and
the follower stop on it instead of retrying or skipping (docs/operations.md, "A log record that
cannot be replayed").
"""

from __future__ import annotations

from typing import Any

from exchange_server.common import exactjson
from exchange_server.matchengine.store import StoreError


def encode_detail(method: str, params: list[Any]) -> str:
    """The operlog ``detail`` text: compact JSON, keys in the client's order, exact integers.

    Raises ValueError when ``params`` holds something that is not a JSON value."""
    return exactjson.dumps({"method": method, "params": params}).decode()


def decode_detail(text: str | bytes | None, oper_id: int) -> tuple[str, list[Any]]:
    """``(method, params)`` of a stored detail; StoreError if it is not a valid one."""
    if text is None:
        raise StoreError(f"operlog id {oper_id}: detail is NULL")
    try:
        obj = exactjson.loads(text)
    except ValueError as e:
        raise StoreError(f"operlog id {oper_id}: detail cannot be decoded: {e}") from None
    if (not isinstance(obj, dict) or not isinstance(obj.get("method"), str)
            or not isinstance(obj.get("params"), list)):
        raise StoreError(f"operlog id {oper_id}: detail lacks a method name or params array")
    return obj["method"], obj["params"]
