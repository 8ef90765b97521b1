"""Where marketprice keeps its state between runs.

Two implementations: Redis (production, the original's key layout, storage.md 3) and SQLite
(embedded mode).  Both commit the buckets, last prices, new deals and the consumed offset of
one flush in a single transaction, so after a restart the state matches the stored offset
exactly: consuming from offset + 1 neither misses nor double-counts a deal.
"""

from __future__ import annotations

from typing import Protocol

from exchange_server.marketprice.state import Changes, StoredMarket


class MarketStore(Protocol):
    async def open(self) -> None:
        ...

    async def load_offset(self) -> int:
        """Offset of the last consumed ``deals`` message, -1 if none."""
        ...

    async def load_market_names(self) -> list[str]:
        """Markets the store knows about (seen in deal messages)."""
        ...

    async def load_market(self, name: str) -> StoredMarket:
        ...

    async def write(self, changes: Changes) -> None:
        """Commit one flush atomically (data and offset together); raise on failure."""
        ...

    async def close(self) -> None:
        ...
