"""One k-line bucket: open, close, high, low, volume (stock) and deal (money)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from exchange_server.common.decimals import ZERO, fmt, parse
from exchange_server.common.jsonfmt import dumps


class Kline:
    __slots__ = ("open", "close", "high", "low", "volume", "deal")

    def __init__(self, open: Decimal, close: Decimal, high: Decimal, low: Decimal,
                 volume: Decimal, deal: Decimal) -> None:
        self.open = open
        self.close = close
        self.high = high
        self.low = low
        self.volume = volume
        self.deal = deal

    @classmethod
    def seed(cls, price: Decimal) -> Kline:
        """A new bucket: open = close = high = low = ``price``, nothing traded."""
        return cls(price, price, price, price, ZERO, ZERO)

    def copy(self) -> Kline:
        return Kline(self.open, self.close, self.high, self.low, self.volume, self.deal)

    def update(self, price: Decimal, amount: Decimal, deal: Decimal) -> None:
        """One trade in this bucket."""
        self.close = price
        self.volume += amount
        self.deal += deal
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price

    def fold(self, close: Decimal, high: Decimal, low: Decimal, volume: Decimal,
             deal: Decimal) -> None:
        """Several trades in this bucket at once (``MarketState.fold``): the last one's price,
        the highest and lowest prices (the first of their value), the summed amounts and
        deals; the same as ``update`` for each in turn."""
        self.close = close
        self.volume += volume
        self.deal += deal
        if high > self.high:
            self.high = high
        if low < self.low:
            self.low = low

    def merge(self, other: Kline) -> None:
        """Append a later bucket (used to build wider output buckets)."""
        self.close = other.close
        self.volume += other.volume
        self.deal += other.deal
        if other.high > self.high:
            self.high = other.high
        if other.low < self.low:
            self.low = other.low

    def values(self) -> list[str]:
        """``[open, close, high, low, volume, deal]`` as zero-stripped strings."""
        return [fmt(self.open), fmt(self.close), fmt(self.high), fmt(self.low), fmt(self.volume),
                fmt(self.deal)]

    def to_json(self) -> str:
        """The stored form (Redis hash value): a JSON array of six strings."""
        return dumps(self.values())

    @classmethod
    def from_json(cls, text: str | bytes) -> Kline | None:
        """Parse a stored bucket; older entries have 5 elements (deal then 0).  None if bad."""
        try:
            data: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, list) or len(data) < 5:
            return None
        values = [parse(v) for v in data[:6]]
        if any(v is None for v in values):
            return None
        if len(values) == 5:
            values.append(ZERO)
        o, c, h, lo, v, d = values
        assert o is not None and c is not None and h is not None and lo is not None
        assert v is not None and d is not None
        return cls(o, c, h, lo, v, d)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Kline):
            return NotImplemented
        return (self.open, self.close, self.high, self.low, self.volume, self.deal) == (
            other.open, other.close, other.high, other.low, other.volume, other.deal)

    def __repr__(self) -> str:
        return f"Kline({', '.join(self.values())})"
