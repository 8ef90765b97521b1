"""The engine the services run: the pure core plus the config file's rules.

Why a subclass: the core (``matchengine/core``) may not import the config file's parser and
checks (``common/config.py``), yet an admin command's asset or market, and a slice's runtime
config, arrive in the config file's shape and must pass the same checks as the file at start-up.
This adapter supplies exactly those two hooks, so each rule stays written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from exchange_server.common.config import (
    AssetConfig,
    ConfigError,
    MarketConfig,
    Node,
    check_market,
    read_asset,
    read_market,
)
from exchange_server.common.decimals import use_engine_context
from exchange_server.matchengine.core import engine as core
from exchange_server.matchengine.core.config import AssetSpec, EngineSpec, MarketSpec
from exchange_server.matchengine.core.engine import EngineState, admin_error

__all__ = ["Engine", "EngineState", "read_asset_detail", "read_market_detail"]


def read_asset_detail(detail: Any) -> AssetConfig:
    """An asset in the config file's shape (config.update_asset's param, slices)."""
    return read_asset(Node(detail, "asset"))


def read_market_detail(detail: Any) -> MarketConfig:
    """A market in the config file's shape (config.update_market's param, slices)."""
    return read_market(Node(detail, "market"))


class Engine(core.Engine):
    """The core engine, checking markets and reading runtime config like the config file."""

    def __init__(self, assets: Sequence[AssetSpec], markets: Sequence[MarketSpec],
                 self_trade_prevention: int = 0) -> None:
        super().__init__(assets, markets, self_trade_prevention)
        # the core computes on its own context; the code around it (parameter checks, replies)
        # uses the thread's, which gets the same 60-digit ROUND_DOWN context here
        use_engine_context()

    @classmethod
    def from_config(cls, config: EngineSpec) -> Self:
        """The core's ``from_config``, whose context wrapper restores the thread's context on
        the way out, undoing what ``__init__`` installed: install it again here.  (Without
        this every command paid for two context swaps, and the code around the engine computed
        on the default 28-digit context.)"""
        engine = super().from_config(config)
        use_engine_context()
        return engine

    def check_market(self, config: MarketSpec) -> None:
        try:
            check_market(self.assets, config)  # type: ignore[arg-type]
        except ConfigError as e:
            raise admin_error(str(e)) from None

    def apply_detail(self, kind: str, detail: Any) -> None:
        if kind == "asset":
            self.update_asset(read_asset_detail(detail))
        elif kind == "market":
            self.update_market(read_market_detail(detail))
