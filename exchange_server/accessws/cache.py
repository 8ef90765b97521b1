"""The query cache: results of cacheable forwarded queries (websocket.md 4).

Why on its own: the ``*.query`` methods of market data answer from it, the server empties it
every minute, and neither needs to know how the other works.  As in the original, an entry is
keyed by ``"<backend method>-<params json>"``, lives ``cache_timeout`` seconds, only a result
(never an error) is kept, and the whole cache is dropped when it is full rather than evicting
entry by entry.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from exchange_server.accessws.protocol import parse_reply


def cache_key(prefix: bytes, params: list[Any]) -> bytes:
    """The entry's key; ``prefix`` is ``b"<backend method>-"`` (computed once per method)."""
    return prefix + orjson.dumps(params)


class QueryCache:
    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Any]] = {}
        self.hits = 0

    def get(self, key: bytes) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if time.monotonic() - entry[0] > self.ttl:
            del self._entries[key]
            return False, None
        self.hits += 1
        return True, entry[1]

    def put(self, key: bytes, result: Any) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), result)

    def put_reply(self, key: bytes, body: bytes) -> None:
        """Keep the result of a backend's reply body (nothing for an error or a bad body)."""
        try:
            _, result = parse_reply(body)
        except ValueError:
            return
        if result is not None:
            self.put(key, result)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
