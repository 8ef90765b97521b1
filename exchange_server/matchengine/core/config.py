"""The configuration the core reads, as structural types.

Why protocols rather than the config dataclasses: the config file's types live in
``common/config.py``, which every service imports, and the core may not depend on it (it parses
files and JSON paths), nor may ``common`` depend on the matchengine package.  So the core states
the fields it reads; ``common.config.AssetConfig`` / ``MarketConfig`` / ``MatchEngineConfig``
have them, and mypy checks that at every call site.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol


class AssetSpec(Protocol):
    """An asset: its name and the decimal places balances keep (``prec_save``) and show."""

    @property
    def name(self) -> str: ...
    @property
    def prec_save(self) -> int: ...
    @property
    def prec_show(self) -> int: ...


class MarketSpec(Protocol):
    """A market: its two assets, their precisions in it, the fee precision and minimum amount."""

    @property
    def name(self) -> str: ...
    @property
    def stock(self) -> str: ...
    @property
    def money(self) -> str: ...
    @property
    def stock_prec(self) -> int: ...
    @property
    def money_prec(self) -> int: ...
    @property
    def fee_prec(self) -> int: ...
    @property
    def min_amount(self) -> Decimal: ...


class EngineSpec(Protocol):
    """What an engine is built from: assets, markets and the default self-trade prevention mode
    (a key of ``model.STP_MODES``)."""

    @property
    def assets(self) -> Sequence[AssetSpec]: ...
    @property
    def markets(self) -> Sequence[MarketSpec]: ...
    @property
    def self_trade_prevention(self) -> str: ...
