"""The matching engine core: a deterministic state machine.

Every state-changing operation takes the command's time as an argument and draws order and deal
ids from counters held here, so feeding the same commands with the same times into a fresh
engine (replay) rebuilds exactly the same state.  There is no I/O, clock or randomness in this
package: replies are returned, and everything else that happens is appended to ``events``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import compress, islice, repeat
from operator import attrgetter, eq, lt
from typing import Any, Self

from exchange_server.common.decimals import ZERO, fmt
from exchange_server.common.errors import (
    BalanceUpdate,
    Cancel,
    CancelStop,
    PutLimit,
    PutMarket,
    PutStopLimit,
    PutStopMarket,
    RpcError,
    invalid_argument_because,
)
from exchange_server.matchengine.core.arith import engine_context
from exchange_server.matchengine.core.balance import Balances
from exchange_server.matchengine.core.config import AssetSpec, EngineSpec, MarketSpec
from exchange_server.matchengine.core.market import Market
from exchange_server.matchengine.core.model import (
    ASK,
    BID,
    EVENT_FINISH,
    EVENT_PUT,
    LIMIT,
    MARKET,
    OPTION_FOK,
    OPTION_IOC,
    OPTION_MAKER_ONLY,
    OPTION_STOP,
    OPTION_UNLIMITED_MIN_AMOUNT,
    STOP_EVENT_ACTIVE,
    STOP_EVENT_CANCEL,
    STOP_EVENT_PUT,
    STOP_STATE_HIGH,
    STOP_STATE_LOW,
    STOP_STATUS_ACTIVE,
    STOP_STATUS_FAIL,
    STP_MODES,
    BalanceChanged,
    BalanceUpdated,
    BookKeys,
    Event,
    Order,
    OrderChanged,
    OrderColumns,
    OrderFinished,
    OrderSnapshot,
    OrderType,
    Side,
    SideOrBoth,
    Stop,
    StopChanged,
    StopSnapshot,
    fresh_order,
)

#: balance.update business ids are remembered this long (seconds of command time).
DEDUP_WINDOW = 86400.0
DEDUP_SWEEP_INTERVAL = 60.0

DedupKey = tuple[int, str, str, int]

#: Events are built with tuple.__new__ on the order path (see market.py).
_new = tuple.__new__

#: Per-order result of order.cancel_batch: (code, message, the order as it was or None).
CancelResult = tuple[int, str, OrderSnapshot | None]


def admin_error(reason: str) -> RpcError:
    """An admin command that cannot be applied: code 1 with the reason (skipped on replay like
    any invalid argument)."""
    return invalid_argument_because(reason)


def asset_detail(a: AssetSpec) -> dict[str, Any]:
    return {"name": a.name, "prec_save": a.prec_save, "prec_show": a.prec_show}


def market_detail(m: MarketSpec) -> dict[str, Any]:
    """A market config in the config file's shape (what config.update_market takes)."""
    return {"name": m.name, "stock": {"name": m.stock, "prec": m.stock_prec},
            "money": {"name": m.money, "prec": m.money_prec}, "fee_prec": m.fee_prec,
            "min_amount": fmt(m.min_amount)}


@dataclass
class EngineState:
    """Everything a snapshot (slice) holds, in plain values."""

    order_id: int = 0
    deal_id: int = 0
    orders: list[Order] = field(default_factory=list)
    #: the columns ``orders`` were built from, position for position, in id order (a slice
    #: document's), or None.  ``load_state`` then files the books by them (one pass over the
    #: orders' objects fewer per key).  Whoever changes ``orders`` sets this to None.
    order_columns: OrderColumns | None = None
    balances: list[tuple[int, str, int, Decimal]] = field(default_factory=list)
    updates: list[tuple[int, str, str, int, float]] = field(default_factory=list)
    #: pending stop orders (their funds are frozen: the balances above include them)
    stops: list[Stop] = field(default_factory=list)
    #: runtime configuration as (kind, name, detail): kind "asset" / "market" = the config an
    #: admin command left (config file shape), kind "state" = a market's
    #: ``{"last": text, "suspended": bool}``.
    config: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

#: The sort key of slice rows (a C-level getter: a restart sorts every open order by it).
_by_id = attrgetter("id")
_market_of = attrgetter("market")


def _increasing(ids: list[int]) -> bool:
    """Each id greater than the one before (a C-level pass)."""
    return all(map(lt, ids, islice(ids, 1, None)))


class Engine:
    @engine_context
    def __init__(self, assets: Sequence[AssetSpec], markets: Sequence[MarketSpec],
                 self_trade_prevention: int = 0) -> None:
        #: the option bits of the ``self_trade_prevention`` config (0: none, the original's
        #: behaviour), for orders that choose no mode; the methods resolve and log it
        self.self_trade_prevention = self_trade_prevention
        self.events: list[Event] = []
        #: no one takes the events (a replay whose operations every sink has): commands
        #: append none, which spares building them (``set_quiet``)
        self.quiet = False
        #: only the history writer takes the events (the history follower): commands append
        #: only those it turns into rows, and build no reply (``set_history_only``)
        self.history_only = False
        self.assets: dict[str, AssetSpec] = {a.name: a for a in assets}
        self.balances = Balances(assets)
        self.markets: dict[str, Market] = {
            m.name: Market(m, self.balances, self.events) for m in markets
        }
        self.order_id = 0
        self.deal_id = 0
        self.updates: dict[DedupKey, float] = {}
        self._last_sweep = 0.0
        #: assets and markets as the admin commands left them (restored over the config file)
        self.asset_overrides: dict[str, AssetSpec] = {}
        self.market_overrides: dict[str, MarketSpec] = {}

    @classmethod
    @engine_context
    def from_config(cls, config: EngineSpec) -> Self:
        return cls(config.assets, config.markets, STP_MODES[config.self_trade_prevention])

    @engine_context  # no arithmetic, but every public entry point has it (test_core_purity)
    def set_quiet(self, quiet: bool) -> None:
        """Whether commands append events (False, the default) or none at all.  Why: a replay
        of operations every sink has already processed needs only the state they leave, and
        the events (deals, balance changes, order snapshots) are half of what matching costs.
        The state, the replies and the errors are the same either way, but for ``put_limit``,
        which gives no reply while quiet (None: a replay discards it)."""
        self.quiet = quiet
        for market in self.markets.values():
            market.quiet = self._market_quiet()

    @engine_context  # no arithmetic, but every public entry point has it (test_core_purity)
    def set_history_only(self, history_only: bool) -> None:
        """Whether commands append every event (False, the default: the matching process, whose
        events go to the bus and the replies too) or only those the history writer turns into
        rows: ``BalanceChanged``, ``Deal``, ``OrderFinished`` and the ``StopChanged`` of a stop
        that fired or was cancelled.  Why: the history follower re-executes every operation
        only for its history, and the bus-only events (``OrderChanged`` for every order placed
        and every maker a deal touches, with a snapshot where no ``OrderFinished`` shares one,
        ``BalanceUpdated``, a stop's PUT) and ``put_limit``'s reply snapshot were 4% of its
        replay (3.6k instructions per order of the e2e load).  The state, the errors and the
        history events are the same either way; ``put_limit`` returns None, as while quiet (a
        replay discards it)."""
        self.history_only = history_only
        for market in self.markets.values():
            market.quiet = self._market_quiet()

    def _market_quiet(self) -> bool | None:
        """``Market.quiet`` for this engine's modes (see there)."""
        if self.quiet:
            return True
        return None if self.history_only else False

    def take_events(self) -> list[Event]:
        """Hand over the events of the operations since the last call.  No decimal is touched,
        so no context is installed (it runs once per command: the swap would be pure cost)."""
        events = self.events[:]
        self.events.clear()
        return events

    # -- balances ---------------------------------------------------------------------------------

    @engine_context
    def update_balance(self, now: float, user: int, asset: str, business: str, business_id: int,
                       change: Decimal, detail: dict[str, Any]) -> None:
        """balance.update: credit or debit ``available``, once per business id (engine.md 4)."""
        self._sweep_updates(now)
        key = (user, asset, business, business_id)
        seen = self.updates.get(key)
        if seen is not None and now - seen < DEDUP_WINDOW:
            raise BalanceUpdate.REPEAT_UPDATE()
        balances = self.balances
        if change >= 0:
            balances.add(user, asset, change)
        else:
            if balances.get_available(user, asset) < -change:
                raise BalanceUpdate.BALANCE_NOT_ENOUGH()
            balances.sub(user, asset, -change)
        self.updates[key] = now
        if self.quiet:
            return
        detail = dict(detail)
        detail["id"] = business_id
        self.events.append(BalanceChanged(now, user, asset, business, change,
                                          balances.total(user, asset), detail))
        if not self.history_only:
            self.events.append(BalanceUpdated(now, user, asset, business, change))

    def _sweep_updates(self, now: float) -> None:
        if now - self._last_sweep < DEDUP_SWEEP_INTERVAL:
            return
        self._last_sweep = now
        expired = [k for k, t in self.updates.items() if now - t >= DEDUP_WINDOW]
        for k in expired:
            del self.updates[k]

    # -- orders -----------------------------------------------------------------------------------

    @engine_context
    def put_limit(self, now: float, market: Market, user: int, side: Side, amount: Decimal,
                  price: Decimal, taker_fee: Decimal, maker_fee: Decimal, source: str,
                  option: int = 0, client_id: str | None = None,
                  stop: Stop | None = None) -> OrderSnapshot | None:
        """order.put_limit after parameter validation (engine.md 7), then the stops the new
        last price reaches; the order's snapshot (the reply), or None while the engine is quiet
        or history only (a replay discards replies: building it was 4% of a replayed order).
        ``stop``: the triggered stop this order is spawned for (see ``_fire``); its ACTIVE
        event goes first, once the order is accepted, and the stops are left to the trigger
        loop."""
        if market.suspended:
            raise PutLimit.SUSPENDED()
        # balances.get_available, written out (one call less for every order placed)
        if side == ASK:
            account = self.balances.accounts.get((user, market.stock))
            if (ZERO if account is None else account[0]) < amount:
                raise PutLimit.BALANCE_NOT_ENOUGH()
        else:
            account = self.balances.accounts.get((user, market.money))
            if (ZERO if account is None else account[0]) < amount * price:
                raise PutLimit.BALANCE_NOT_ENOUGH()
        if amount < market.min_amount and not option & OPTION_UNLIMITED_MIN_AMOUNT:
            raise PutLimit.AMOUNT_TOO_SMALL()
        if option:
            if option & OPTION_FOK and not market.fillable(side, LIMIT, price, amount, user,
                                                           option):
                raise PutLimit.FILL_OR_KILL()
            if option & OPTION_MAKER_ONLY and market.crosses(side, price):
                raise PutLimit.POST_ONLY()

        self.order_id += 1
        events = self.events
        quiet = self.quiet
        if stop is not None and not quiet:
            events.append(_activated(stop, self.order_id, market))
        # by position (see fresh_order): id, market, source, type, side, user, now, price,
        # amount, taker_fee, maker_fee, option, client_id
        order = fresh_order(self.order_id, market.name, source, LIMIT, side, user, now, price,
                            amount, taker_fee, maker_fee, option, client_id)
        before = market.last
        self.deal_id, stopped, stp_makers = market.execute(order, now, self.deal_id)
        order.stp_cancelled = stopped
        rests = order.left and not stopped and not option & OPTION_IOC
        # quiet (a replay): nobody takes the reply either, so none is made (see set_quiet)
        snapshot = None if quiet or self.history_only else order.snapshot()
        if stp_makers and snapshot is not None:  # the makers self-trade prevention cancelled
            snapshot = snapshot._replace(stp_cancelled_orders=stp_makers)
        if quiet:
            pass
        elif snapshot is None:  # history only: its finish (as below), no reply, no messages
            if not order.left or (not rests and (order.deal_stock or stopped)):
                finished = order.snapshot()
                if stp_makers:
                    finished = finished._replace(stp_cancelled_orders=stp_makers)
                events.append(_new(OrderFinished, (finished,)))
        elif not order.left:
            events.append(_new(OrderFinished, (snapshot,)))
            events.append(_new(OrderChanged, (EVENT_FINISH, snapshot, market.stock, market.money)))
        elif not rests:
            # the remainder is cancelled: finished like a cancelled order (history only if
            # something was dealt)
            if order.deal_stock or stopped:
                events.append(_new(OrderFinished, (snapshot,)))
            events.append(_new(OrderChanged, (EVENT_FINISH, snapshot, market.stock, market.money)))
        else:
            events.append(_new(OrderChanged, (EVENT_PUT, snapshot, market.stock, market.money)))
        if rests:
            market.put(order)
        if market.stops and stop is None and market.last != before:
            self._trigger(now, market, before)
        return snapshot

    @engine_context
    def put_limit_quiet(self, now: float, market: Market, user: int, side: Side,
                        amount: Decimal, price: Decimal, taker_fee: Decimal, maker_fee: Decimal,
                        source: str) -> None:
        """``put_limit`` of an order placed with the original's parameters (option 0, no
        client id, no stop) whose reply is not wanted: the same checks, errors and state.
        While the engine is quiet (a replay no one takes the events of) its deals go through
        ``Market.execute_quiet``; otherwise it is ``put_limit``.  Why: a restart replays
        mostly such orders (see ``execute_quiet``)."""
        if not self.quiet:
            self.put_limit(now, market, user, side, amount, price, taker_fee, maker_fee, source)
            return
        if market.suspended:
            raise PutLimit.SUSPENDED()
        if side == ASK:
            account = self.balances.accounts.get((user, market.stock))
            if (ZERO if account is None else account[0]) < amount:
                raise PutLimit.BALANCE_NOT_ENOUGH()
            top = market.bid_top
            crosses = top is not None and top >= price
        else:
            account = self.balances.accounts.get((user, market.money))
            if (ZERO if account is None else account[0]) < amount * price:
                raise PutLimit.BALANCE_NOT_ENOUGH()
            top = market.ask_top
            crosses = top is not None and top <= price
        if amount < market.min_amount:
            raise PutLimit.AMOUNT_TOO_SMALL()
        self.order_id += 1
        order = fresh_order(self.order_id, market.name, source, LIMIT, side, user, now, price,
                            amount, taker_fee, maker_fee, 0, None)
        if crosses:  # execute's first test, without its call for an order that only rests
            before = market.last
            self.deal_id = market.execute_quiet(order, now, self.deal_id)
            if order.left:
                market.put(order)
            if market.stops and market.last != before:
                self._trigger(now, market, before)
        else:
            market.put(order)

    @engine_context
    def put_market(self, now: float, market: Market, user: int, side: Side, amount: Decimal,
                   taker_fee: Decimal, source: str, option: int = 0,
                   client_id: str | None = None) -> OrderSnapshot:
        """order.put_market after parameter validation (engine.md 8), then the stops the new
        last price reaches."""
        before = market.last
        snapshot = self._market(now, market, user, side, amount, taker_fee, source, option,
                                client_id)
        if market.stops and market.last != before:
            self._trigger(now, market, before)
        return snapshot

    def _market(self, now: float, market: Market, user: int, side: Side, amount: Decimal,
                taker_fee: Decimal, source: str, option: int, client_id: str | None,
                stop: Stop | None = None) -> OrderSnapshot:
        """A market order, without the stops it triggers; ``stop`` as for put_limit."""
        if market.suspended:
            raise PutMarket.SUSPENDED()
        balances = self.balances
        check_min = not option & OPTION_UNLIMITED_MIN_AMOUNT
        if side == ASK:
            if balances.get_available(user, market.stock) < amount:
                raise PutMarket.BALANCE_NOT_ENOUGH()
            if not market.bids:
                raise PutMarket.NO_ENOUGH_TRADER()
            if amount < market.min_amount and check_min:
                raise PutMarket.AMOUNT_TOO_SMALL()
        else:
            if balances.get_available(user, market.money) < amount:
                raise PutMarket.BALANCE_NOT_ENOUGH()
            best = market.best_ask()
            if best is None:
                raise PutMarket.NO_ENOUGH_TRADER()
            if amount < best.price * market.min_amount and check_min:
                raise PutMarket.AMOUNT_TOO_SMALL()
        if option & OPTION_FOK and not market.fillable(side, MARKET, ZERO, amount, user, option):
            raise PutMarket.FILL_OR_KILL()

        self.order_id += 1
        if stop is not None and not self.quiet:
            self.events.append(_activated(stop, self.order_id, market))
        order = Order.fresh(id=self.order_id, market=market.name, source=source, type=MARKET,
                            side=side, user=user, now=now, price=ZERO, amount=amount,
                            taker_fee=taker_fee, maker_fee=ZERO, option=option,
                            client_id=client_id)
        self.deal_id, stopped, stp_makers = market.execute(order, now, self.deal_id)
        order.stp_cancelled = stopped
        snapshot = order.snapshot()
        if stp_makers:  # the makers self-trade prevention cancelled for it
            snapshot = snapshot._replace(stp_cancelled_orders=stp_makers)
        if not self.quiet:
            self.events.append(_new(OrderFinished, (snapshot,)))
            if not self.history_only:
                self.events.append(_new(OrderChanged, (EVENT_FINISH, snapshot, market.stock,
                                                       market.money)))
        return snapshot

    @engine_context
    def cancel(self, now: float, market: Market, user: int, order_id: int) -> OrderSnapshot:
        """order.cancel: the order as it was, then off the book with its funds released."""
        order = market.orders.get(order_id)
        if order is None:
            raise Cancel.ORDER_NOT_FOUND()
        if order.user != user:
            raise Cancel.USER_NOT_MATCH()
        return self._cancel(market, order)

    def _cancel(self, market: Market, order: Order) -> OrderSnapshot:
        snapshot = order.snapshot()
        if not self.quiet and not self.history_only:
            self.events.append(OrderChanged(EVENT_FINISH, snapshot, market.stock, market.money))
        market.remove(order, snapshot)
        return snapshot

    @engine_context
    def cancel_all(self, now: float, market: Market, user: int, side: SideOrBoth) -> int:
        """order.cancel_all: every open order of the user in the market (one side, or both for
        side 0), oldest first.  Returns how many were cancelled."""
        user_orders = market.users.get(user)
        if not user_orders:
            return 0
        todo = [o for o in user_orders.values() if not side or o.side == side]
        for order in todo:
            self._cancel(market, order)
        return len(todo)

    @engine_context
    def cancel_batch(self, now: float, market: Market, user: int,
                     order_ids: list[int]) -> list[CancelResult]:
        """order.cancel_batch: each id in turn, with its own result."""
        results: list[CancelResult] = []
        for order_id in order_ids:
            order = market.orders.get(order_id)
            if order is None:
                results.append((Cancel.ORDER_NOT_FOUND.code, Cancel.ORDER_NOT_FOUND.message, None))
            elif order.user != user:
                results.append((Cancel.USER_NOT_MATCH.code, Cancel.USER_NOT_MATCH.message, None))
            else:
                results.append((0, "", self._cancel(market, order)))
        return results

    # -- stop orders ------------------------------------------------------------------------------

    @engine_context
    def put_stop(self, now: float, market: Market, user: int, type: OrderType, side: Side,
                 amount: Decimal, stop_price: Decimal, price: Decimal, taker_fee: Decimal,
                 maker_fee: Decimal, source: str, option: int, client_id: str) -> StopSnapshot:
        """order.put_stop_limit / order.put_stop_market: file a stop and freeze what the order
        it will spawn needs, so that order never fails for lack of funds (the fork froze
        nothing).  ``price`` and ``maker_fee`` are 0 for a stop-market order; a stop-market
        bid's amount is money."""
        errors = PutStopLimit if type == LIMIT else PutStopMarket  # the same codes
        if market.suspended:
            raise errors.SUSPENDED()
        last = market.last
        if not last or stop_price == last:
            raise errors.INVALID_STOP_PRICE()
        if not option & OPTION_UNLIMITED_MIN_AMOUNT:
            minimum = market.min_amount
            if type == MARKET and side == BID:
                minimum = stop_price * minimum
            if amount < minimum:
                raise errors.AMOUNT_TOO_SMALL()
        if side == ASK:
            asset, freeze = market.stock, amount
        else:
            asset, freeze = market.money, ((amount * price) if type == LIMIT else amount)
        if self.balances.get_available(user, asset) < freeze:
            raise errors.BALANCE_NOT_ENOUGH()
        self.order_id += 1
        stop = Stop(id=self.order_id, market=market.name, source=source, type=type, side=side,
                    user=user, ctime=now, mtime=now, stop_price=stop_price, price=price,
                    amount=amount, taker_fee=taker_fee, maker_fee=maker_fee,
                    option=option | OPTION_STOP | OPTION_UNLIMITED_MIN_AMOUNT,
                    client_id=client_id,
                    state=STOP_STATE_HIGH if stop_price > last else STOP_STATE_LOW, freeze=freeze)
        self.balances.freeze(user, asset, freeze)
        market.add_stop(stop)
        snapshot = stop.snapshot()
        if not self.quiet and not self.history_only:  # a PUT makes no history row
            self.events.append(StopChanged(STOP_EVENT_PUT, snapshot, 0, 0, market.stock,
                                           market.money))
        return snapshot

    @engine_context
    def cancel_stop(self, now: float, market: Market, user: int, stop_id: int) -> StopSnapshot:
        """order.cancel_stop: the stop as it was; its funds are released."""
        stop = market.stops.get(stop_id)
        if stop is None:
            raise CancelStop.ORDER_NOT_FOUND()
        if stop.user != user:
            raise CancelStop.USER_NOT_MATCH()
        return self._cancel_stop(now, market, stop)

    def _cancel_stop(self, now: float, market: Market, stop: Stop) -> StopSnapshot:
        stop.mtime = now
        snapshot = stop.snapshot()
        market.remove_stop(stop)
        if not self.quiet:
            self.events.append(StopChanged(STOP_EVENT_CANCEL, snapshot, 0, 0, market.stock,
                                           market.money))
        return snapshot

    @engine_context
    def cancel_stop_all(self, now: float, market: Market, user: int,
                        side: SideOrBoth) -> int:
        """order.cancel_stop_all: every stop of the user in the market (one side or both)."""
        user_stops = market.stop_users.get(user)
        if not user_stops:
            return 0
        todo = [s for s in user_stops.values() if not side or s.side == side]
        for stop in todo:
            self._cancel_stop(now, market, stop)
        return len(todo)

    def _trigger(self, now: float, market: Market, before: Decimal) -> None:
        """Fire the stops the last price has reached, one at a time, until none is due.

        The next one is the due stop of the list of the latest move (LOW when the price fell:
        highest stop price first; HIGH when it rose: lowest first; equal prices oldest first);
        each fired stop becomes a new order, which may move the price again (then its move
        decides the list looked at first).  Every stop fires at most once, so this ends.
        """
        falling = market.last < before
        while market.stops:
            stop = market.due_stop(falling)
            if stop is None:
                return
            previous = market.last
            market.remove_stop(stop)  # releases its frozen funds for the order it spawns
            stop.mtime = now
            self._fire(now, market, stop)
            if market.last != previous:
                falling = market.last < previous

    def _fire(self, now: float, market: Market, stop: Stop) -> None:
        """A triggered stop becomes an order: its ACTIVE event (with the order's id) comes
        before the order's own events, or, when the order is refused, a failed ACTIVE event
        alone."""
        try:
            if stop.type == LIMIT:
                self.put_limit(now, market, stop.user, stop.side, stop.amount, stop.price,
                               stop.taker_fee, stop.maker_fee, stop.source, stop.option,
                               stop.client_id, stop)
            else:
                self._market(now, market, stop.user, stop.side, stop.amount, stop.taker_fee,
                             stop.source, stop.option, stop.client_id, stop)
        except RpcError:
            if not self.quiet:
                self.events.append(StopChanged(STOP_EVENT_ACTIVE, stop.snapshot(),
                                               STOP_STATUS_FAIL, 0, market.stock, market.money))

    # -- runtime configuration (admin) ------------------------------------------------------------

    @engine_context
    def update_asset(self, asset: AssetSpec) -> None:
        """config.update_asset: add an asset, or change an existing one's ``prec_show``
        (``prec_save`` may only grow: stored balances keep their value)."""
        old = self.assets.get(asset.name)
        if old is not None and asset.prec_save < old.prec_save:
            raise admin_error(f"prec_save of {asset.name} cannot be lowered "
                              f"({old.prec_save} -> {asset.prec_save})")
        self.assets[asset.name] = asset
        self.balances.add_asset(asset)
        self.asset_overrides[asset.name] = asset
        if old is not None and asset.prec_save != old.prec_save:
            for market in self.markets.values():
                if market.money == asset.name:
                    market.apply_config(market.config)

    @engine_context
    def update_market(self, config: MarketSpec) -> None:
        """config.update_market: add a market, or change an existing one's ``fee_prec`` and
        ``min_amount`` (stock, money and their precisions cannot change).  ``check_market``
        first: whether its assets exist and its precisions keep trades exact."""
        self.check_market(config)
        market = self.markets.get(config.name)
        if market is None:
            market = self.markets[config.name] = Market(config, self.balances, self.events)
            market.quiet = self._market_quiet()
        else:
            old = market.config
            if (old.stock, old.money, old.stock_prec, old.money_prec) != (
                    config.stock, config.money, config.stock_prec, config.money_prec):
                raise admin_error(f"market {config.name} exists with other stock or money "
                                  "settings (only fee_prec and min_amount can change)")
            market.apply_config(config)
        self.market_overrides[config.name] = config

    @engine_context
    def check_market(self, config: MarketSpec) -> None:
        """Refuse a market the config file's rules refuse (admin_error).  Those rules live with
        the config file, outside the core: the service's engine (matchengine/configured.py)
        applies them; the bare core takes only markets of known assets."""
        if config.stock not in self.assets or config.money not in self.assets:
            raise admin_error(f"market {config.name}: unknown asset")

    @engine_context
    def suspend(self, market: Market, suspended: bool) -> None:
        """config.suspend_market / config.resume_market."""
        market.suspended = suspended

    @engine_context
    def apply_detail(self, kind: str, detail: Any) -> None:
        """Apply a slice's runtime config entry (``kind`` "asset" or "market", ``detail`` in the
        config file's shape).  Parsing that shape is not the core's job: the service's engine
        (matchengine/configured.py) does it; the bare core refuses (the entry is skipped with a
        warning)."""
        raise admin_error(f"{kind} details are read outside the core")

    # -- snapshots --------------------------------------------------------------------------------

    @engine_context
    def dump_state(self) -> EngineState:
        """The engine's state for a slice: open orders (per market, asks then bids), balances,
        the business-id dedup window, pending stops and the runtime configuration."""
        orders: list[Order] = []
        stops: list[Stop] = []
        config: list[tuple[str, str, dict[str, Any]]] = []
        for asset in self.asset_overrides.values():
            config.append(("asset", asset.name, asset_detail(asset)))
        for mc in self.market_overrides.values():
            config.append(("market", mc.name, market_detail(mc)))
        for market in self.markets.values():
            orders.extend(market.side_orders(ASK))
            orders.extend(market.side_orders(BID))
            stops.extend(market.stops.values())
            if market.last or market.suspended:
                config.append(("state", market.name,
                               {"last": str(market.last), "suspended": market.suspended}))
        return EngineState(
            order_id=self.order_id,
            deal_id=self.deal_id,
            orders=orders,
            balances=list(self.balances.items()),
            updates=[(k[0], k[1], k[2], k[3], t) for k, t in self.updates.items()],
            stops=stops,
            config=config,
        )

    def _books(self, state: EngineState,
               warnings: list[str]) -> dict[str, tuple[list[Order], BookKeys | None]]:
        """A slice's orders by market, each market's in id order with its book keys when the
        state has its columns; a warning for each order of an unknown market (skipped).  Why
        not a loop per order: a restart loads every open order, and most systems have a few
        markets (a C-level pass per market instead)."""
        columns = state.order_columns
        if columns is not None and (len(columns.id) != len(state.orders)
                                    or not _increasing(columns.id)):
            columns = None  # not the orders' columns: read the orders
        if columns is None:
            ordered = sorted(state.orders, key=_by_id)
            names = list(map(_market_of, ordered))
        else:
            ordered, names = state.orders, columns.market
        present = dict.fromkeys(names)
        unknown = present.keys() - self.markets.keys()
        for order in ordered if unknown else ():
            if order.market in unknown:
                warnings.append(f"order {order.id}: unknown market {order.market}, skipped")
        known = [name for name in present if name not in unknown]
        if len(present) == 1 and known:
            return {known[0]: (ordered, None if columns is None else columns.book_keys())}
        books: dict[str, tuple[list[Order], BookKeys | None]] = {}
        for name in known:
            mask = list(map(eq, names, repeat(name)))
            books[name] = (list(compress(ordered, mask)),
                           None if columns is None else columns.book_keys(mask))
        return books

    @engine_context
    def load_state(self, state: EngineState) -> list[str]:
        """Restore a slice into a fresh engine.  Returns warnings for skipped rows (orders of
        unknown markets, balances of unknown assets), which the original also skips.

        The runtime configuration goes first, applied over the config file exactly as the
        admin commands applied it (so a market added at run time is there for its orders)."""
        warnings: list[str] = []
        self.order_id = state.order_id
        self.deal_id = state.deal_id
        for what, name, detail in state.config:
            if what == "state":
                continue
            try:
                self.apply_detail(what, detail)
            except (RpcError, ValueError) as e:
                warnings.append(f"runtime {what} {name}: {e}, skipped")
        for what, name, detail in state.config:
            if what != "state":
                continue
            market = self.markets.get(name)
            if market is None:
                warnings.append(f"state of unknown market {name}, skipped")
                continue
            market.last = Decimal(detail["last"])
            market.suspended = bool(detail["suspended"])
        for name, (orders, keys) in self._books(state, warnings).items():
            self.markets[name].load_book(orders, keys)
        for stop in sorted(state.stops, key=_by_id):
            market = self.markets.get(stop.market)
            if market is None:
                warnings.append(f"stop {stop.id}: unknown market {stop.market}, skipped")
                continue
            market.add_stop(stop)
        balances = state.balances
        if not {asset for _, asset, _, _ in balances} <= self.assets.keys():
            known = []
            for row in balances:
                if row[1] in self.assets:
                    known.append(row)
                else:
                    warnings.append(f"balance of user {row[0]}: unknown asset {row[1]}, skipped")
            balances = known
        self.balances.load(balances)
        for user, asset, business, business_id, t in state.updates:
            self.updates[(user, asset, business, business_id)] = t
        return warnings


def _activated(stop: Stop, order_id: int, market: Market) -> StopChanged:
    """The ACTIVE event of a stop whose order was accepted (and gets ``order_id``)."""
    return StopChanged(STOP_EVENT_ACTIVE, stop.snapshot(), STOP_STATUS_ACTIVE, order_id,
                       market.stock, market.money)
