"""One market: its order book and the matching of limit and market orders.

The book keeps, per side, a sorted map price -> FIFO of orders (an OrderedDict keyed by order
id), so the best price is one lookup away and time priority inside a price is insertion order.
Asks iterate from the lowest price, bids from the highest.  Arithmetic follows the original
operation by operation (engine.md sections 7 and 8), so amounts, fees and their decimal
exponents come out the same.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from itertools import compress, repeat
from operator import attrgetter, eq, not_
from typing import Any, TypeVar

from sortedcontainers import SortedDict

from exchange_server.common.decimals import ZERO, fmt, quantum
from exchange_server.matchengine.core.arith import CONTEXT, engine_context
from exchange_server.matchengine.core.balance import Balances
from exchange_server.matchengine.core.config import MarketSpec
from exchange_server.matchengine.core.model import (
    ASK,
    BID,
    EVENT_FINISH,
    EVENT_UPDATE,
    LIMIT,
    MAKER,
    MARKET,
    OPTION_STP_MASK,
    STOP_STATE_LOW,
    STP_CANCEL_BOTH,
    STP_CANCEL_MAKER,
    TAKER,
    BookKeys,
    Deal,
    Event,
    Order,
    OrderChanged,
    OrderFinished,
    OrderSnapshot,
    OrderType,
    Side,
    Stop,
)

Level = OrderedDict[int, Order]


#: What matching a new order did besides its deals (which are events): the last deal id used;
#: whether self-trade prevention stopped the taker (its remainder is to be cancelled); the ids
#: of the taker's user's makers self-trade prevention cancelled.  A plain tuple: the caller
#: unpacks it at once, and a NamedTuple instance costs a second allocation on every order.
Execution = tuple[int, bool, tuple[int, ...]]

_new = tuple.__new__

Grouped = TypeVar("Grouped", bound=dict[Any, Any])

_id = attrgetter("id")
_user = attrgetter("user")
_side = attrgetter("side")
_price = attrgetter("price")
_left = attrgetter("left")


def _grouped(orders: list[Order], keys: list[Any], kind: type[Grouped],
             ids: list[int]) -> dict[Any, Grouped]:
    """{key: a new ``kind`` (dict or OrderedDict) of {id: order}} for the distinct keys of
    ``keys`` (one per order), keys in the order they first appear (equal keys merge onto the
    first object, as a dict keeps them), the orders of a key in their order in ``orders``.
    Why: every step is a C-level pass (``map`` of C methods), no Python step per order."""
    groups = {key: kind() for key in dict.fromkeys(keys)}
    # kind's own __setitem__: dict's would skip an OrderedDict's order bookkeeping
    deque(map(kind.__setitem__, map(groups.__getitem__, keys), ids, orders), 0)
    return groups


def _levels(orders: list[Order], keys: BookKeys) -> dict[Decimal, Level]:
    """One side's price levels {price: FIFO of its orders in id order}, each keyed by the
    price object of its first order, as ``put`` files them."""
    return _grouped(orders, keys.price, OrderedDict, keys.id)


def _book_keys(orders: list[Order]) -> BookKeys:
    """The book keys of ``orders`` read from the orders."""
    return BookKeys(list(map(_id, orders)), list(map(_user, orders)), list(map(_side, orders)),
                    list(map(_price, orders)), list(map(_left, orders)))


class Market:
    def __init__(self, config: MarketSpec, balances: Balances, events: list[Event]) -> None:
        self.name = config.name
        self.stock = config.stock
        self.money = config.money
        self.stock_prec = config.stock_prec
        self.money_prec = config.money_prec
        self.balances = balances
        self.events = events
        #: which events matching appends (set by the engine's ``set_quiet`` and
        #: ``set_history_only``): False every event (the matching process); None those that
        #: make history rows, no bus-only ``OrderChanged`` (the history follower); True none
        #: (a replay no one takes the events of).  One attribute, not two flags: a 30th
        #: attribute unshares the instance dict's keys (CPython's limit) and every attribute
        #: read of a market then costs more (+1.8% instructions per order in the engine)
        self.quiet: bool | None = False
        #: price of the market's last deal (0 before the first): what stop orders watch.
        self.last = ZERO
        #: trading suspended by an admin command: new orders and stops are refused.
        self.suspended = False
        #: stop orders: by id, by user (placement order), and the two trigger lists keyed by
        #: ``Stop.sort_key()`` (first = next to fire).
        self.stops: dict[int, Stop] = {}
        self.stop_users: dict[int, dict[int, Stop]] = {}
        self.stops_low: SortedDict = SortedDict()
        self.stops_high: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.bids: SortedDict = SortedDict()
        #: the best price of each side (the lowest ask, the highest bid; None: the side is
        #: empty), the very key object of its level in the book: kept by ``insert``, ``remove``
        #: and ``load_book`` so that matching reads it instead of asking the sorted map (two
        #: Python calls for every order placed)
        self.ask_top: Decimal | None = None
        self.bid_top: Decimal | None = None
        self.orders: dict[int, Order] = {}
        self.users: dict[int, dict[int, Order]] = {}
        self.ask_count = 0
        self.bid_count = 0
        self.ask_amount = ZERO
        self.bid_amount = ZERO
        self._stock_step = quantum(config.stock_prec)
        self.apply_config(config)

    def apply_config(self, config: MarketSpec) -> None:
        """Take a (new) config: fee precision and minimum amount may change at run time."""
        self.config = config
        self.fee_prec = config.fee_prec
        self.min_amount = config.min_amount
        # price x amount x fee rate can have more decimals than the money asset stores (the
        # original's config checks do not cover it).  Then the fee is truncated to what the
        # balance can hold, so the recorded fee is exactly what left the user's balance.
        money_save = self.balances.assets[config.money].prec_save
        exact = config.money_prec + config.stock_prec + config.fee_prec <= money_save
        self._ask_fee_quant = None if exact else quantum(money_save)

    # -- the book ---------------------------------------------------------------------------------

    def best_ask(self) -> Order | None:
        if self.ask_top is None:
            return None
        level: Level = self.asks[self.ask_top]
        return next(iter(level.values()))

    def best_bid(self) -> Order | None:
        if self.bid_top is None:
            return None
        level: Level = self.bids[self.bid_top]
        return next(iter(level.values()))

    def _tops(self) -> None:
        """``ask_top`` and ``bid_top`` read from the book."""
        self.ask_top = self.asks.peekitem(0)[0] if self.asks else None
        self.bid_top = self.bids.peekitem(-1)[0] if self.bids else None

    def insert(self, order: Order) -> None:
        """Put a resting limit order on the book without touching balances (slice load: the
        slice's balances hold its funds frozen already)."""
        self.put(order, False)

    def put(self, order: Order, freeze: bool = True) -> None:
        """Rest a limit order: freeze its funds (ask: stock = left, bid: money = price x left;
        not when ``freeze`` is False, see ``insert``), then file it in the book.  (One method:
        this runs for every order that rests.)"""
        price = order.price
        if order.side == ASK:
            if freeze:
                order.freeze = order.left
                self.balances.freeze(order.user, self.stock, order.left)
            level = self.asks.get(price)
            if level is None:
                level = self.asks[price] = OrderedDict()
                if self.ask_top is None or price < self.ask_top:
                    self.ask_top = price
            self.ask_count += 1
            self.ask_amount = self.ask_amount + order.left
        else:
            if freeze:
                order.freeze = price * order.left
                self.balances.freeze(order.user, self.money, order.freeze)
            level = self.bids.get(price)
            if level is None:
                level = self.bids[price] = OrderedDict()
                if self.bid_top is None or price > self.bid_top:
                    self.bid_top = price
            self.bid_count += 1
            self.bid_amount = self.bid_amount + order.left
        level[order.id] = order
        self.orders[order.id] = order
        user_orders = self.users.get(order.user)
        if user_orders is None:
            user_orders = self.users[order.user] = {}
        user_orders[order.id] = order

    def load_book(self, orders: list[Order], keys: BookKeys | None = None) -> None:
        """Slice load: rest ``orders`` (in id order) at once, exactly as ``insert`` one by one
        would (same levels and level keys, time priority, user index, counts and amounts).
        ``keys``: the orders' ids, users, sides, prices and amounts left, position for
        position (a slice's columns), or None to read them from the orders.

        Why in bulk: a restart rests every open order (up to millions), and a Python loop
        filing each one cost about 2.5 us per order.  Here every step is a C-level pass over
        all orders (a column of one field, a stable sort by a small integer key, a dict built
        from pairs); Python code runs once per price level and once per user only."""
        if self.orders:  # not a fresh book: keep the one-by-one path
            for order in orders:
                self.insert(order)
            return
        if keys is None:
            keys = _book_keys(orders)
        if len(keys.id) != len(orders):
            raise ValueError("book keys of other orders")
        self.orders.update(zip(keys.id, orders, strict=True))
        self.users.update(_grouped(orders, keys.user, dict, keys.id))
        is_ask = list(map(eq, keys.side, repeat(ASK)))
        is_bid = list(map(not_, is_ask))
        asks = list(compress(orders, is_ask))
        bids = list(compress(orders, is_bid))
        ask_keys = keys.selected(is_ask)
        bid_keys = keys.selected(is_bid)
        self.asks.update(_levels(asks, ask_keys))
        self.bids.update(_levels(bids, bid_keys))
        self._tops()
        self.ask_count += len(asks)
        self.bid_count += len(bids)
        # summed in id order from the current totals, as ``put`` adds them
        self.ask_amount = sum(ask_keys.left, self.ask_amount)
        self.bid_amount = sum(bid_keys.left, self.bid_amount)

    def remove(self, order: Order, snapshot: OrderSnapshot | None = None) -> None:
        """Take an order off the book, release what is still frozen for it, record history
        (an order with deals, or one that self-trade prevention cancelled).  ``snapshot``: the
        order's, taken by the caller for its finish event (the history then shares it rather
        than taking the same values again), or None."""
        book = self.asks if order.side == ASK else self.bids
        level: Level = book[order.price]
        del level[order.id]
        if not level:
            # the emptied level is mostly the top one (a maker's last order dealt): it is the
            # book's first (asks) or last (bids) key, popped without searching the sorted keys
            if order.side == ASK:
                if order.price == self.ask_top:
                    book.popitem(0)
                    self.ask_top = book.peekitem(0)[0] if book else None
                else:
                    del book[order.price]
            elif order.price == self.bid_top:
                book.popitem(-1)
                self.bid_top = book.peekitem(-1)[0] if book else None
            else:
                del book[order.price]
        del self.orders[order.id]
        user_orders = self.users[order.user]
        del user_orders[order.id]
        if not user_orders:
            del self.users[order.user]
        if order.side == ASK:
            self.ask_count -= 1
            self.ask_amount = self.ask_amount - order.left
            if order.freeze and not order.freeze.is_signed():  # > ZERO, as in Balances.trade
                self.balances.unfreeze(order.user, self.stock, order.freeze)
        else:
            self.bid_count -= 1
            self.bid_amount = self.bid_amount - order.left
            if order.freeze and not order.freeze.is_signed():  # > ZERO, as in Balances.trade
                self.balances.unfreeze(order.user, self.money, order.freeze)
        # quiet first: a Decimal comparison for every maker a replay removes costs more
        if not self.quiet and (order.deal_stock > ZERO or order.stp_cancelled):
            self.events.append(_new(OrderFinished, (
                order.snapshot() if snapshot is None else snapshot,)))

    def side_orders(self, side: Side) -> Iterator[Order]:
        """Orders of one side in matching priority."""
        if side == ASK:
            for level in self.asks.values():
                yield from level.values()
        else:
            for level in reversed(self.bids.values()):
                yield from level.values()

    def side_levels(self, side: Side) -> Iterator[tuple[Decimal, Level]]:
        if side == ASK:
            yield from self.asks.items()
        else:
            bids = self.bids
            for price in reversed(bids.keys()):
                yield price, bids[price]

    @engine_context
    def depth(self, side: Side, limit: int, interval: Decimal) -> list[list[str]]:
        """Price levels of one side, best first, optionally merged to multiples of interval."""
        rows: list[list[str]] = []
        if limit == 0:
            return rows
        if not interval:
            for price, level in self.side_levels(side):
                total = ZERO
                for o in level.values():
                    total = total + o.left
                rows.append([fmt(price), fmt(total)])
                if len(rows) >= limit:
                    break
            return rows
        bucket: Decimal | None = None
        amount = ZERO
        for price, level in self.side_levels(side):
            if bucket is not None and (price <= bucket if side == ASK else price >= bucket):
                for o in level.values():
                    amount = amount + o.left
                continue
            if bucket is not None:
                rows.append([fmt(bucket), fmt(amount)])
                if len(rows) >= limit:
                    return rows
            rounding = ROUND_CEILING if side == ASK else ROUND_FLOOR
            bucket = ((price / interval).to_integral_value(rounding, CONTEXT) * interval)
            amount = ZERO
            for o in level.values():
                amount = amount + o.left
        if bucket is not None:
            rows.append([fmt(bucket), fmt(amount)])
        return rows

    # -- matching ---------------------------------------------------------------------------------

    def execute(self, taker: Order, now: float, next_deal_id: int) -> Execution:
        """Match a new order against the book: the last deal id used, and what self-trade
        prevention did.

        With a self-trade prevention mode in the taker's option (bits 0x300), a maker of the
        taker's own user is never dealt with: by the mode the maker is cancelled and matching
        goes on, or matching stops and the result's ``stp_stopped`` tells the caller to cancel
        the taker's remainder (or both).  Without one (the original's behaviour) they trade as
        any two orders do."""
        selling = taker.side == ASK
        book = self.bids if selling else self.asks
        limit_price = taker.price if taker.type == LIMIT else None
        market_bid = taker.type == MARKET and taker.side == BID
        user = taker.user if taker.option & OPTION_STP_MASK else None
        deal_id = next_deal_id
        stp_makers: list[int] | None = None
        while taker.left:
            price = self.bid_top if selling else self.ask_top
            if price is None or limit_price is not None and (
                limit_price > price if selling else limit_price < price
            ):
                break
            level: Level = book[price]
            while level and taker.left:
                # the level's first order: a loop's first step (next(iter(...)) is two calls
                # more, 220 instructions of every deal)
                for maker in level.values():  # noqa: B007 - used after the break
                    break
                if maker.user == user:
                    if stp_makers is None:
                        stp_makers = []
                    if self._self_trade(taker, maker, stp_makers):
                        return deal_id, True, tuple(stp_makers)
                    continue
                # the maker's own price (engine.md 7): the level's key is equal in value but
                # is the price object of the order that opened the level, which may be gone
                # and written with another exponent ("100.810" for "100.81"), and the deal's
                # amounts, the last price and the messages keep the exponent
                price = maker.price
                if market_bid:
                    amount = (taker.left / price).quantize(self._stock_step, ROUND_DOWN, CONTEXT)
                    while amount * price > taker.left:
                        amount = amount - self._stock_step
                    if amount > maker.left:
                        amount = maker.left
                    if not amount:
                        return deal_id, False, tuple(stp_makers or ())
                else:
                    amount = taker.left if taker.left < maker.left else maker.left
                deal_id += 1
                self._deal(taker, maker, price, amount, now, deal_id)
                self.last = price
                if not maker.left:
                    if self.quiet is not False:  # no OrderChanged (quiet, history only)
                        self.remove(maker)
                    else:
                        snapshot = maker.snapshot()
                        self.events.append(_new(OrderChanged, (EVENT_FINISH, snapshot,
                                                               self.stock, self.money)))
                        self.remove(maker, snapshot)
                elif self.quiet is False:
                    self.events.append(_new(OrderChanged, (EVENT_UPDATE, maker.snapshot(),
                                                           self.stock, self.money)))
            # ``remove`` drops an emptied level from the book and moves the top to the next.
        return deal_id, False, tuple(stp_makers) if stp_makers else ()

    def execute_quiet(self, taker: Order, now: float, deal_id: int) -> int:
        """``execute`` for a limit order without a self-trade prevention mode while the market
        is quiet (``quiet is True``: a replay no one takes the events of): the same deals,
        balances, book and last price; the last deal id used.

        Why a second loop: a restart replays mostly such orders, and what this one leaves out
        is what no one reads after a quiet deal: the totals (``deal_stock``, ``deal_money``,
        ``deal_fee``) and ``mtime`` of an order the deal fills (a filled maker leaves the book
        and a filled taker does not rest: both are dropped unseen), the taker's ``mtime``
        (``now`` already, as ``fresh_order`` made it), the ``Deal`` event and ``_deal``'s call.
        Three Decimal additions fewer for each order a deal fills, the arithmetic otherwise
        ``_deal``'s, operation by operation (amounts, fees and exponents come out the same)."""
        selling = taker.side == ASK
        book = self.bids if selling else self.asks
        limit_price = taker.price
        taker_rate = taker.taker_fee
        taker_user = taker.user
        stock = self.stock
        money = self.money
        trade = self.balances.trade
        fee_quant = self._ask_fee_quant
        left = taker.left
        while left:
            price = self.bid_top if selling else self.ask_top
            if price is None or (limit_price > price if selling else limit_price < price):
                break
            level: Level = book[price]
            while level and left:
                for maker in level.values():  # noqa: B007 - the first one (see execute)
                    break
                price = maker.price  # the maker's own price object (see execute)
                maker_left = maker.left
                amount = left if left < maker_left else maker_left
                deal_id += 1
                deal = price * amount
                left = left - amount
                maker_left = maker_left - amount
                maker.left = maker_left
                if selling:  # the taker asks, the maker bids
                    ask_fee = deal * taker_rate
                    if fee_quant is not None:
                        ask_fee = ask_fee.quantize(fee_quant, ROUND_DOWN, CONTEXT)
                    bid_fee = amount * maker.maker_fee
                    taker_fee, maker_fee = ask_fee, bid_fee
                    maker.freeze = maker.freeze - deal
                    self.bid_amount = self.bid_amount - amount
                else:
                    ask_fee = deal * maker.maker_fee
                    if fee_quant is not None:
                        ask_fee = ask_fee.quantize(fee_quant, ROUND_DOWN, CONTEXT)
                    bid_fee = amount * taker_rate
                    taker_fee, maker_fee = bid_fee, ask_fee
                    maker.freeze = maker.freeze - amount
                    self.ask_amount = self.ask_amount - amount
                if left:  # the taker goes on (and may rest): its totals
                    taker.deal_stock = taker.deal_stock + amount
                    taker.deal_money = taker.deal_money + deal
                    taker.deal_fee = taker.deal_fee + taker_fee
                if maker_left:  # the maker stays on the book: its totals
                    maker.mtime = now
                    maker.deal_stock = maker.deal_stock + amount
                    maker.deal_money = maker.deal_money + deal
                    maker.deal_fee = maker.deal_fee + maker_fee
                # the taker first, then the maker, each: give, receive, pay the fee (engine.md 7)
                if selling:
                    trade(taker_user, stock, amount, False, money, deal, ask_fee)
                    trade(maker.user, money, deal, True, stock, amount, bid_fee)
                else:
                    trade(taker_user, money, deal, False, stock, amount, bid_fee)
                    trade(maker.user, stock, amount, True, money, deal, ask_fee)
                self.last = price
                if not maker_left:
                    self._remove_filled(maker, level, selling)
        taker.left = left
        return deal_id

    def _remove_filled(self, maker: Order, level: Level, selling: bool) -> None:
        """``remove`` of a maker a quiet deal filled: the first order of the top level
        ``level`` of the side the taker takes from (``selling``: the bids)."""
        del level[maker.id]
        if not level:  # the emptied top level: the book's last (bids) or first (asks) key
            if selling:
                book = self.bids
                book.popitem(-1)
                self.bid_top = book.peekitem(-1)[0] if book else None
            else:
                book = self.asks
                book.popitem(0)
                self.ask_top = book.peekitem(0)[0] if book else None
        del self.orders[maker.id]
        user_orders = self.users[maker.user]
        del user_orders[maker.id]
        if not user_orders:
            del self.users[maker.user]
        freeze = maker.freeze
        if selling:
            self.bid_count -= 1
            self.bid_amount = self.bid_amount - maker.left
            if freeze and not freeze.is_signed():  # > ZERO, as in Balances.trade
                self.balances.unfreeze(maker.user, self.money, freeze)
        else:
            self.ask_count -= 1
            self.ask_amount = self.ask_amount - maker.left
            if freeze and not freeze.is_signed():
                self.balances.unfreeze(maker.user, self.stock, freeze)

    def _self_trade(self, taker: Order, maker: Order, cancelled: list[int]) -> bool:
        """The taker (with a prevention mode) meets an order of its own user.  Cancel the maker
        (STP_CANCEL_MAKER, STP_CANCEL_BOTH; its id goes to ``cancelled``); stop the taker
        (STP_CANCEL_TAKER, STP_CANCEL_BOTH).  True when matching must stop.  A cancelled
        order's object says so (``stp_cancelled``)."""
        mode = taker.option & OPTION_STP_MASK
        if mode in (STP_CANCEL_MAKER, STP_CANCEL_BOTH):
            maker.stp_cancelled = True
            cancelled.append(maker.id)
            if self.quiet is not False:
                self.remove(maker)
            else:
                snapshot = maker.snapshot()
                self.events.append(OrderChanged(EVENT_FINISH, snapshot, self.stock, self.money))
                self.remove(maker, snapshot)
            if mode == STP_CANCEL_MAKER:
                return False
        return True

    def fillable(self, side: Side, type: OrderType, price: Decimal, amount: Decimal, user: int,
                 option: int) -> bool:
        """Whether an order would fill completely at once (the fill-or-kill check): a dry run
        of ``execute`` over the book, self-trade prevention (if the order has a mode) included.
        A market bid counts as filled when what is left of its money cannot buy one more stock
        unit."""
        book = self.bids if side == ASK else self.asks
        prices = reversed(book.keys()) if side == ASK else iter(book.keys())
        limited = type == LIMIT
        market_bid = type == MARKET and side == BID
        prevent = bool(option & OPTION_STP_MASK)
        cancel_maker = option & OPTION_STP_MASK == STP_CANCEL_MAKER
        left = amount
        for level_price in prices:
            if limited and (price > level_price if side == ASK else price < level_price):
                return False
            for maker in book[level_price].values():
                if prevent and maker.user == user:
                    if cancel_maker:
                        continue
                    return False
                if market_bid:
                    take = (left / level_price).quantize(self._stock_step, ROUND_DOWN, CONTEXT)
                    while take * level_price > left:
                        take = take - self._stock_step
                    if not take or take < maker.left:
                        # what is left cannot buy one more unit here: the real loop stops
                        return True
                    left = left - maker.left * level_price
                else:
                    left = left - maker.left
                if left <= 0:
                    return True
        return False

    def crosses(self, side: Side, price: Decimal) -> bool:
        """Whether a limit order at ``price`` would take (the post-only check)."""
        if side == ASK:
            return self.bid_top is not None and self.bid_top >= price
        return self.ask_top is not None and self.ask_top <= price

    # -- stop orders ------------------------------------------------------------------------------

    def add_stop(self, stop: Stop) -> None:
        """File a stop in its trigger list (funds are frozen by the caller, or not at all when
        loading a slice)."""
        self.stops[stop.id] = stop
        user_stops = self.stop_users.get(stop.user)
        if user_stops is None:
            user_stops = self.stop_users[stop.user] = {}
        user_stops[stop.id] = stop
        (self.stops_low if stop.state == STOP_STATE_LOW else self.stops_high)[stop.sort_key()] = stop

    def remove_stop(self, stop: Stop) -> None:
        """Take a stop out of its list and release what is frozen for it."""
        del self.stops[stop.id]
        user_stops = self.stop_users[stop.user]
        del user_stops[stop.id]
        if not user_stops:
            del self.stop_users[stop.user]
        del (self.stops_low if stop.state == STOP_STATE_LOW else self.stops_high)[stop.sort_key()]
        if stop.freeze > 0:
            self.balances.unfreeze(stop.user, self.stock if stop.side == ASK else self.money,
                                   stop.freeze)

    def due_stop(self, falling: bool) -> Stop | None:
        """The next stop the last price has reached: a LOW stop at or above it, or a HIGH stop
        at or below it, the list of the latest move (``falling``) first."""
        last = self.last
        low = self.stops_low
        high = self.stops_high
        for lst in ((low, high) if falling else (high, low)):
            if lst:
                stop: Stop = lst.peekitem(0)[1]
                if (stop.stop_price >= last) if lst is low else (stop.stop_price <= last):
                    return stop
        return None

    def _deal(self, taker: Order, maker: Order, price: Decimal, amount: Decimal, now: float,
              deal_id: int) -> None:
        deal = price * amount
        taker.mtime = maker.mtime = now
        if taker.side == ASK:
            ask, bid = taker, maker
            ask_rate, bid_rate = taker.taker_fee, maker.maker_fee
        else:
            ask, bid = maker, taker
            ask_rate, bid_rate = maker.maker_fee, taker.taker_fee
        ask_fee = deal * ask_rate
        if self._ask_fee_quant is not None:
            ask_fee = ask_fee.quantize(self._ask_fee_quant, ROUND_DOWN, CONTEXT)
        bid_fee = amount * bid_rate
        ask.left = ask.left - amount
        ask.deal_stock = ask.deal_stock + amount
        ask.deal_money = ask.deal_money + deal
        ask.deal_fee = ask.deal_fee + ask_fee
        bid.left = bid.left - (deal if bid is taker and bid.type == MARKET else amount)
        bid.deal_stock = bid.deal_stock + amount
        bid.deal_money = bid.deal_money + deal
        bid.deal_fee = bid.deal_fee + bid_fee
        if maker is ask:
            maker.freeze = maker.freeze - amount
            self.ask_amount = self.ask_amount - amount
        else:
            maker.freeze = maker.freeze - deal
            self.bid_amount = self.bid_amount - amount

        # The taker first, then the maker, each: give, receive, pay the fee (engine.md 7).
        stock = self.stock
        money = self.money
        trade = self.balances.trade
        if taker is ask:
            ask_totals = trade(taker.user, stock, amount, False, money, deal, ask_fee)
            bid_totals = trade(maker.user, money, deal, True, stock, amount, bid_fee)
        else:
            bid_totals = trade(taker.user, money, deal, False, stock, amount, bid_fee)
            ask_totals = trade(maker.user, stock, amount, True, money, deal, ask_fee)
        if self.quiet:  # nobody takes the events (replay)
            return
        # One event with the balance totals (Deal.balance_changes makes the balance history of
        # it), built with tuple.__new__: a NamedTuple's own __new__ is a Python function and
        # this is the hottest loop of the engine.
        self.events.append(_new(Deal, (
            now, self.name, deal_id, price, amount, deal, ask_fee, bid_fee, taker.side,
            ask.id, ask.user, TAKER if ask is taker else MAKER,
            bid.id, bid.user, TAKER if bid is taker else MAKER, stock, money,
            ask_rate, bid_rate, ask_totals, bid_totals,
        )))
