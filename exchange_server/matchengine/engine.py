"""The matching engine core: a deterministic state machine.

Every state-changing operation takes the command's time as an argument and draws order and deal
ids from counters held here, so feeding the same commands with the same times into a fresh
engine (replay) rebuilds exactly the same state.  There is no I/O, clock or randomness in this
package: replies are returned, and everything else that happens is appended to ``events``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from exchange_server.common.config import AssetConfig, MarketConfig, MatchEngineConfig
from exchange_server.common.decimals import ZERO, use_engine_context
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.balance import Balances
from exchange_server.matchengine.market import Market
from exchange_server.matchengine.model import (
    ASK,
    BID,
    EVENT_FINISH,
    EVENT_PUT,
    LIMIT,
    MARKET,
    BalanceChanged,
    BalanceUpdated,
    Event,
    Order,
    OrderChanged,
    OrderFinished,
    OrderSnapshot,
)

#: balance.update business ids are remembered this long (seconds of command time).
DEDUP_WINDOW = 86400.0
DEDUP_SWEEP_INTERVAL = 60.0

DedupKey = tuple[int, str, str, int]


@dataclass
class EngineState:
    """Everything a snapshot (slice) holds, in plain values."""

    order_id: int = 0
    deal_id: int = 0
    orders: list[Order] = field(default_factory=list)
    balances: list[tuple[int, str, int, Decimal]] = field(default_factory=list)
    updates: list[tuple[int, str, str, int, float]] = field(default_factory=list)


class Engine:
    def __init__(self, assets: list[AssetConfig], markets: list[MarketConfig]) -> None:
        use_engine_context()
        self.events: list[Event] = []
        self.assets: dict[str, AssetConfig] = {a.name: a for a in assets}
        self.balances = Balances(assets)
        self.markets: dict[str, Market] = {
            m.name: Market(m, self.balances, self.events) for m in markets
        }
        self.order_id = 0
        self.deal_id = 0
        self.updates: dict[DedupKey, float] = {}
        self._last_sweep = 0.0

    @classmethod
    def from_config(cls, config: MatchEngineConfig) -> Engine:
        return cls(config.assets, config.markets)

    def take_events(self) -> list[Event]:
        """Hand over the events of the operations since the last call."""
        events = self.events[:]
        self.events.clear()
        return events

    # -- balances ---------------------------------------------------------------------------------

    def update_balance(self, now: float, user: int, asset: str, business: str, business_id: int,
                       change: Decimal, detail: dict[str, Any]) -> None:
        """balance.update: credit or debit ``available``, once per business id (engine.md 4)."""
        self._sweep_updates(now)
        key = (user, asset, business, business_id)
        seen = self.updates.get(key)
        if seen is not None and now - seen < DEDUP_WINDOW:
            raise RpcError(10, "repeat update")
        balances = self.balances
        if change >= 0:
            balances.add(user, asset, change)
        else:
            if balances.get_available(user, asset) < -change:
                raise RpcError(11, "balance not enough")
            balances.sub(user, asset, -change)
        self.updates[key] = now
        detail = dict(detail)
        detail["id"] = business_id
        self.events.append(BalanceChanged(now, user, asset, business, change,
                                          balances.total(user, asset), detail))
        self.events.append(BalanceUpdated(now, user, asset, business, change))

    def _sweep_updates(self, now: float) -> None:
        if now - self._last_sweep < DEDUP_SWEEP_INTERVAL:
            return
        self._last_sweep = now
        expired = [k for k, t in self.updates.items() if now - t >= DEDUP_WINDOW]
        for k in expired:
            del self.updates[k]

    # -- orders -----------------------------------------------------------------------------------

    def put_limit(self, now: float, market: Market, user: int, side: int, amount: Decimal,
                  price: Decimal, taker_fee: Decimal, maker_fee: Decimal,
                  source: str) -> OrderSnapshot:
        """order.put_limit after parameter validation (engine.md 7)."""
        balances = self.balances
        if side == ASK:
            if balances.get_available(user, market.stock) < amount:
                raise RpcError(10, "balance not enough")
        elif balances.get_available(user, market.money) < amount * price:
            raise RpcError(10, "balance not enough")
        if amount < market.min_amount:
            raise RpcError(11, "amount too small")

        self.order_id += 1
        order = Order(self.order_id, market.name, source, LIMIT, side, user, now, now, price,
                      amount, taker_fee, maker_fee, amount, ZERO, ZERO, ZERO, ZERO)
        self.deal_id = market.execute(order, now, self.deal_id)
        snapshot = order.snapshot()
        if not order.left:
            self.events.append(OrderFinished(snapshot))
            self.events.append(OrderChanged(EVENT_FINISH, snapshot, market.stock, market.money))
        else:
            self.events.append(OrderChanged(EVENT_PUT, snapshot, market.stock, market.money))
            market.put(order)
        return snapshot

    def put_market(self, now: float, market: Market, user: int, side: int, amount: Decimal,
                   taker_fee: Decimal, source: str) -> OrderSnapshot:
        """order.put_market after parameter validation (engine.md 8)."""
        balances = self.balances
        if side == ASK:
            if balances.get_available(user, market.stock) < amount:
                raise RpcError(10, "balance not enough")
            if not market.bids:
                raise RpcError(12, "no enough trader")
            if amount < market.min_amount:
                raise RpcError(11, "amount too small")
        else:
            if balances.get_available(user, market.money) < amount:
                raise RpcError(10, "balance not enough")
            best = market.best_ask()
            if best is None:
                raise RpcError(12, "no enough trader")
            if amount < best.price * market.min_amount:
                raise RpcError(11, "amount too small")

        self.order_id += 1
        order = Order(self.order_id, market.name, source, MARKET, side, user, now, now, ZERO,
                      amount, taker_fee, ZERO, amount, ZERO, ZERO, ZERO, ZERO)
        self.deal_id = market.execute(order, now, self.deal_id)
        snapshot = order.snapshot()
        self.events.append(OrderFinished(snapshot))
        self.events.append(OrderChanged(EVENT_FINISH, snapshot, market.stock, market.money))
        return snapshot

    def cancel(self, now: float, market: Market, user: int, order_id: int) -> OrderSnapshot:
        """order.cancel: the order as it was, then off the book with its funds released."""
        order = market.orders.get(order_id)
        if order is None:
            raise RpcError(10, "order not found")
        if order.user != user:
            raise RpcError(11, "user not match")
        snapshot = order.snapshot()
        self.events.append(OrderChanged(EVENT_FINISH, snapshot, market.stock, market.money))
        market.remove(order)
        return snapshot

    # -- snapshots --------------------------------------------------------------------------------

    def dump_state(self) -> EngineState:
        """The engine's state for a slice: open orders (per market, asks then bids), balances,
        and the business-id dedup window."""
        orders: list[Order] = []
        for market in self.markets.values():
            orders.extend(market.side_orders(ASK))
            orders.extend(market.side_orders(BID))
        return EngineState(
            order_id=self.order_id,
            deal_id=self.deal_id,
            orders=orders,
            balances=list(self.balances.items()),
            updates=[(k[0], k[1], k[2], k[3], t) for k, t in self.updates.items()],
        )

    def load_state(self, state: EngineState) -> list[str]:
        """Restore a slice into a fresh engine.  Returns warnings for skipped rows (orders of
        unknown markets, balances of unknown assets), which the original also skips."""
        warnings: list[str] = []
        self.order_id = state.order_id
        self.deal_id = state.deal_id
        for order in sorted(state.orders, key=lambda o: o.id):
            market = self.markets.get(order.market)
            if market is None:
                warnings.append(f"order {order.id}: unknown market {order.market}, skipped")
                continue
            market.insert(order)
        for user, asset, kind, amount in state.balances:
            if asset not in self.assets:
                warnings.append(f"balance of user {user}: unknown asset {asset}, skipped")
                continue
            self.balances.set(user, asset, kind, amount)
        for user, asset, business, business_id, t in state.updates:
            self.updates[(user, asset, business, business_id)] = t
        return warnings

    def asset_names(self) -> Iterable[str]:
        return self.assets.keys()
