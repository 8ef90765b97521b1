"""marketprice state in Redis, with the original's key layout (storage.md 3).

* ``k:<market>:1s`` / ``1m`` / ``1h`` / ``1d`` (hash): bucket start -> JSON
  ``["open", "close", "high", "low", "volume", "deal"]`` (zero-stripped strings)
* ``k:<market>:deals`` (list): newest first (LPUSH, LTRIM to 10000), JSON
  ``{"id", "time", "price", "amount", "type"}``
* ``k:<market>:last`` (string): last price, not zero-stripped
* ``k:offset`` (string): offset of the last consumed ``deals`` message
* ``k:markets`` (set): markets first seen in deal messages (the original's older layout; lets
  a market missing from ``market.list`` keep its data across restarts)

Every flush is one MULTI/EXEC: changed buckets (HSET), buckets past retention (HDEL), last
prices, new deals (LPUSH + LTRIM) and ``k:offset``.  Connection: directly to a Redis server,
or through Redis Sentinel to the master named in the config (config.md ``redis`` block).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from exchange_server.marketprice.state import DEALS_MAX, KINDS, Changes, StoredMarket


def parse_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port)."""
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad address {addr!r}: expected host:port")
    return host, int(port)


class RedisStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "") -> None:
        """``prefix`` is prepended to every key (tests; empty in production)."""
        self.client = client
        self.prefix = prefix

    @classmethod
    def direct(cls, host: str = "127.0.0.1", port: int = 6379, db: int = 0,
               prefix: str = "", **kwargs: Any) -> RedisStore:
        """Directly to one Redis server (``kwargs``: more redis-py client options)."""
        return cls(aioredis.Redis(host=host, port=port, db=db, decode_responses=True, **kwargs),
                   prefix)

    @classmethod
    def sentinel(cls, addrs: list[str], name: str, db: int = 0, prefix: str = "",
                 socket_timeout: float = 2.0) -> RedisStore:
        """Through Redis Sentinel: ``addrs`` = sentinels' "host:port", ``name`` = master."""
        sentinel = Sentinel([parse_addr(a) for a in addrs], socket_timeout=socket_timeout)
        client = sentinel.master_for(name, db=db, decode_responses=True,
                                     socket_timeout=socket_timeout)
        return cls(client, prefix)

    def key(self, market: str, kind: str) -> str:
        return f"{self.prefix}k:{market}:{kind}"

    async def open(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()

    async def load_offset(self) -> int:
        value = await self.client.get(f"{self.prefix}k:offset")
        if value is None:
            return -1
        return int(value)

    async def load_market_names(self) -> list[str]:
        names = await self.client.smembers(f"{self.prefix}k:markets")
        return sorted(str(n) for n in names)

    async def load_market(self, name: str) -> StoredMarket:
        async with self.client.pipeline(transaction=False) as pipe:
            for kind in KINDS:
                pipe.hgetall(self.key(name, kind))
            pipe.lrange(self.key(name, "deals"), 0, DEALS_MAX - 1)
            pipe.get(self.key(name, "last"))
            replies = await pipe.execute()
        klines = tuple({int(ts): value for ts, value in replies[i].items()} for i in range(4))
        return StoredMarket(last=replies[5], klines=klines, deals=list(replies[4]))

    async def write(self, changes: Changes) -> None:
        buckets: dict[str, dict[Any, Any]] = defaultdict(dict)
        for market, kind, ts, value in changes.buckets:
            buckets[self.key(market, KINDS[kind])][str(ts)] = value
        deleted: dict[str, list[str]] = defaultdict(list)
        for market, kind, ts in changes.deleted:
            deleted[self.key(market, KINDS[kind])].append(str(ts))
        async with self.client.pipeline(transaction=True) as pipe:
            for key, fields in deleted.items():
                pipe.hdel(key, *fields)
            for key, mapping in buckets.items():
                pipe.hset(key, mapping=mapping)
            for market, last in changes.lasts:
                pipe.set(self.key(market, "last"), last)
            for market, texts in changes.deals.items():
                key = self.key(market, "deals")
                pipe.lpush(key, *(text for _, text in texts))
                pipe.ltrim(key, 0, DEALS_MAX - 1)
            if changes.markets:
                pipe.sadd(f"{self.prefix}k:markets", *changes.markets)
            if changes.offset >= 0:
                pipe.set(f"{self.prefix}k:offset", changes.offset)
            await pipe.execute()
