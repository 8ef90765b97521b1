"""Per-user balances: available and frozen amounts of each asset.

Like the original, a balance that becomes exactly zero is removed (absent means zero) and every
stored value is truncated to the asset's ``prec_save``.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_DOWN, Decimal

from exchange_server.common.config import AssetConfig
from exchange_server.common.decimals import ZERO, quantum

AVAILABLE = 1
FREEZE = 2


class BalanceError(Exception):
    """An impossible balance operation inside the engine: a bug, never a user error."""


class Balances:
    def __init__(self, assets: list[AssetConfig]) -> None:
        self.assets = {a.name: a for a in assets}
        self._quant = {a.name: quantum(a.prec_save) for a in assets}
        self.available: dict[tuple[int, str], Decimal] = {}
        self.frozen: dict[tuple[int, str], Decimal] = {}

    def add_asset(self, asset: AssetConfig) -> None:
        self.assets[asset.name] = asset
        self._quant[asset.name] = quantum(asset.prec_save)

    def get_available(self, user: int, asset: str) -> Decimal:
        return self.available.get((user, asset), ZERO)

    def get_frozen(self, user: int, asset: str) -> Decimal:
        return self.frozen.get((user, asset), ZERO)

    def total(self, user: int, asset: str) -> Decimal:
        key = (user, asset)
        return self.available.get(key, ZERO) + self.frozen.get(key, ZERO)

    def add(self, user: int, asset: str, amount: Decimal) -> None:
        """available += amount (amount >= 0)."""
        key = (user, asset)
        table = self.available
        value = table.get(key)
        value = amount if value is None else value + amount
        if value:
            table[key] = value.quantize(self._quant[asset], ROUND_DOWN)
        else:
            table.pop(key, None)

    def sub(self, user: int, asset: str, amount: Decimal) -> None:
        """available -= amount; the caller has checked that it is enough."""
        self._sub(self.available, user, asset, amount)

    def sub_frozen(self, user: int, asset: str, amount: Decimal) -> None:
        self._sub(self.frozen, user, asset, amount)

    def _sub(self, table: dict[tuple[int, str], Decimal], user: int, asset: str,
             amount: Decimal) -> None:
        key = (user, asset)
        value = table.get(key, ZERO) - amount
        if value > 0:
            table[key] = value.quantize(self._quant[asset], ROUND_DOWN)
        elif value == 0:
            table.pop(key, None)
        else:
            raise BalanceError(f"balance of user {user} {asset} would go negative")

    def freeze(self, user: int, asset: str, amount: Decimal) -> None:
        """Move ``amount`` from available to frozen."""
        self._sub(self.available, user, asset, amount)
        key = (user, asset)
        value = self.frozen.get(key)
        value = amount if value is None else value + amount
        if value:
            self.frozen[key] = value.quantize(self._quant[asset], ROUND_DOWN)

    def unfreeze(self, user: int, asset: str, amount: Decimal) -> None:
        """Move ``amount`` from frozen back to available."""
        self._sub(self.frozen, user, asset, amount)
        self.add(user, asset, amount)

    def set(self, user: int, asset: str, kind: int, amount: Decimal) -> None:
        """Load a value from a snapshot."""
        table = self.available if kind == AVAILABLE else self.frozen
        if amount:
            table[(user, asset)] = amount.quantize(self._quant[asset], ROUND_DOWN)
        else:
            table.pop((user, asset), None)

    def items(self) -> Iterator[tuple[int, str, int, Decimal]]:
        """Every non-zero balance as (user, asset, kind, amount)."""
        for (user, asset), value in self.available.items():
            yield user, asset, AVAILABLE, value
        for (user, asset), value in self.frozen.items():
            yield user, asset, FREEZE, value
