"""Domain objects of the matching engine: orders and the events a command produces.

Events are the only output of the engine besides its reply.  Every downstream product (history
rows, bus messages, pushes) is derived from them, so they carry raw values (Decimals, ids) and
are formatted by whoever consumes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from itertools import compress
from operator import attrgetter
from typing import Any, Final, Literal, NamedTuple

from exchange_server.common.decimals import (
    CONTEXT,
    LAST_FEE_TEXTS,
    PARAM_TEXTS,
    VALUE_TEXT_ENDS,
    ZERO,
    fee_texts,
    fmt,
    fmt_param,
)

# Sides, types and roles are plain ints at run time (they are ints on the wire, in the log and in
# every table); the Literal types name them in signatures, and mypy checks every value passed.
Side = Literal[1, 2]
#: a side, or 0 for "both" (the cancel-all methods, order lists)
SideOrBoth = Literal[0, 1, 2]
OrderType = Literal[1, 2]
Role = Literal[1, 2]

ASK: Final = 1
BID: Final = 2
LIMIT: Final = 1
MARKET: Final = 2
MAKER: Final = 1
TAKER: Final = 2

EVENT_PUT = 1
EVENT_UPDATE = 2
EVENT_FINISH = 3

_new = tuple.__new__
_object_new = object.__new__
#: ``-x`` as the engine computes it (in its own context, whatever the caller's thread has)
_minus = CONTEXT.minus
#: ``a + b`` as the engine computes it (``total_of``)
_add = CONTEXT.add

# -- order options (the CoinEx fork's ``option`` bits, extensions.md 2.1, plus ours) ----------------

#: Skip the minimum amount check (set on stops so the order they spawn is never refused for it).
OPTION_UNLIMITED_MIN_AMOUNT = 0x04
#: Immediate-or-cancel: whatever does not fill at once is cancelled, never rests.
OPTION_IOC = 0x08
#: Fill-or-kill: filled completely at once, or refused with nothing changed.
OPTION_FOK = 0x10
#: Set on stop orders and inherited by the order a stop spawns.
OPTION_STOP = 0x40
#: Post-only (maker-only): refused if it would take.
OPTION_MAKER_ONLY = 0x80
#: Ours: self-trade prevention mode, bits 8-9 (0 = none: a user's orders trade with each other,
#: the original's behaviour).  Bit 10 asks for "none" explicitly, whatever the matchengine's
#: ``self_trade_prevention`` config says; an order with none of bits 8-10 gets the config's mode.
OPTION_STP_MASK = 0x300
STP_CANCEL_TAKER = 0x100
STP_CANCEL_MAKER = 0x200
STP_CANCEL_BOTH = 0x300
OPTION_STP_NONE = 0x400
#: every self-trade prevention bit: an order that sets one of them chose its mode
OPTION_STP_BITS = OPTION_STP_MASK | OPTION_STP_NONE
#: the config key's values and the option bits they stand for
STP_MODES: dict[str, int] = {
    "none": 0,
    "cancel_taker": STP_CANCEL_TAKER,
    "cancel_maker": STP_CANCEL_MAKER,
    "cancel_both": STP_CANCEL_BOTH,
}
#: Every bit a client may set.  The fork's fee bits 0x01/0x02 (fee paid in another asset) and
#: 0x20 (hidden) are not supported and refused with code 1.
OPTION_SUPPORTED = (OPTION_UNLIMITED_MIN_AMOUNT | OPTION_IOC | OPTION_FOK | OPTION_STOP
                    | OPTION_MAKER_ONLY | OPTION_STP_BITS)

# -- stop orders (extensions.md 1.1) ---------------------------------------------------------------

STOP_EVENT_PUT = 1
STOP_EVENT_ACTIVE = 2
STOP_EVENT_CANCEL = 3
#: ``status`` of an ACTIVE stop event / a stop history row.
STOP_STATUS_ACTIVE = 1
STOP_STATUS_FAIL = 2
STOP_STATUS_CANCEL = 3
#: Which trigger list a stop waits in: LOW fires when the last price falls to its stop price,
#: HIGH when it rises to it.
STOP_STATE_LOW = 1
STOP_STATE_HIGH = 2


def fresh_order(id: int, market: str, source: str | None, type: OrderType, side: Side,
                user: int, now: float, price: Decimal, amount: Decimal, taker_fee: Decimal,
                maker_fee: Decimal, option: int, client_id: str | None) -> Order:
    """A new order as it is placed: created and modified ``now``, all of it left, nothing
    frozen or dealt yet (``Order.fresh``).  Why a plain function, called by position: this
    runs for every order placed, and a class called with keywords packs them into a dict;
    a classmethod's call is not specialised either (400 instructions an order more than
    this one's), and matching thirteen keywords cost about 1,000."""
    order: Order = _object_new(Order)
    order.id = id
    order.market = market
    order.source = source
    order.type = type
    order.side = side
    order.user = user
    order.ctime = order.mtime = now
    order.price = price
    order.amount = order.left = amount
    order.taker_fee = taker_fee
    order.maker_fee = maker_fee
    order.freeze = order.deal_stock = order.deal_money = order.deal_fee = ZERO
    order.option = option
    order.client_id = client_id
    order.stp_cancelled = False
    return order


class Order:
    """One order.  ``freeze`` is what is still frozen for it (ask: stock, bid: money)."""

    __slots__ = (
        "id", "market", "source", "type", "side", "user", "ctime", "mtime", "price", "amount",
        "taker_fee", "maker_fee", "left", "freeze", "deal_stock", "deal_money", "deal_fee",
        "option", "client_id", "stp_cancelled",
    )

    def __init__(
        self, *, id: int, market: str, source: str | None, type: OrderType, side: Side,
        user: int, ctime: float, mtime: float, price: Decimal, amount: Decimal,
        taker_fee: Decimal, maker_fee: Decimal, left: Decimal, freeze: Decimal = ZERO,
        deal_stock: Decimal = ZERO, deal_money: Decimal = ZERO, deal_fee: Decimal = ZERO,
        option: int = 0, client_id: str | None = None,
    ) -> None:
        self.id = id
        self.market = market
        self.source = source
        self.type = type
        self.side = side
        self.user = user
        self.ctime = ctime
        self.mtime = mtime
        self.price = price
        self.amount = amount
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.left = left
        self.freeze = freeze
        self.deal_stock = deal_stock
        self.deal_money = deal_money
        self.deal_fee = deal_fee
        #: option bits (0 for orders placed with the original's parameters)
        self.option = option
        #: None: placed with the original's parameters (its order object has no ``option`` /
        #: ``client_id`` keys); a string ("" = none): placed with the fork's extended layout.
        self.client_id = client_id
        #: self-trade prevention cancelled this order (its object then says so)
        self.stp_cancelled = False

    #: :func:`fresh_order`, called by position or by keywords
    fresh = staticmethod(fresh_order)

    def snapshot(self) -> OrderSnapshot:
        # tuple.__new__ directly: a NamedTuple's own __new__ is a Python function, and a
        # snapshot is taken for every order placed and every maker a deal touches
        return _new(OrderSnapshot, (
            self.id, self.market, self.source, self.type, self.side, self.user, self.ctime,
            self.mtime, self.price, self.amount, self.taker_fee, self.maker_fee, self.left,
            self.deal_stock, self.deal_money, self.deal_fee, self.option, self.client_id,
            self.stp_cancelled, (),
        ))

    def info(self) -> dict[str, Any]:
        return order_info(self)


def restored_order(id: int, market: str, source: str | None, type: OrderType, side: Side,
                   user: int, ctime: float, mtime: float, price: Decimal, amount: Decimal,
                   taker_fee: Decimal, maker_fee: Decimal, left: Decimal, freeze: Decimal,
                   deal_stock: Decimal, deal_money: Decimal, deal_fee: Decimal, option: int,
                   client_id: str | None) -> Order:
    """An order as a slice stored it, every field given (positionally by ``map`` over a
    slice document's columns, by keywords from a slice's rows).  Why not the constructor: a
    restart builds every open order this way.  Why a plain function: called from C with
    positional arguments it is the cheapest Python call, and its attribute stores are
    specialised to slot writes (about half the cost of one C-level ``setattr`` pass per field,
    which looks each name up for every order)."""
    order: Order = _object_new(Order)
    order.id = id
    order.market = market
    order.source = source
    order.type = type
    order.side = side
    order.user = user
    order.ctime = ctime
    order.mtime = mtime
    order.price = price
    order.amount = amount
    order.taker_fee = taker_fee
    order.maker_fee = maker_fee
    order.left = left
    order.freeze = freeze
    order.deal_stock = deal_stock
    order.deal_money = deal_money
    order.deal_fee = deal_fee
    order.option = option
    order.client_id = client_id
    order.stp_cancelled = False
    return order


class OrderColumns(NamedTuple):
    """Open orders as columns, one list per field of :func:`restored_order` (in its order),
    position ``i`` of every list being order ``i``: how a slice document stores them.

    Why: a restart builds every open order (up to millions) and files it in its book.  Decoded
    in bulk (a C-level pass per column) and built in one call per order, they load at about a
    third of the cost of an order at a time from a row; ``Market.load_book`` reads its keys
    (ids, users, sides, prices, amounts left) from the columns instead of from the orders."""

    id: list[int]
    market: list[str]
    source: list[str | None]
    type: list[OrderType]
    side: list[Side]
    user: list[int]
    ctime: list[float]
    mtime: list[float]
    price: list[Decimal]
    amount: list[Decimal]
    taker_fee: list[Decimal]
    maker_fee: list[Decimal]
    left: list[Decimal]
    freeze: list[Decimal]
    deal_stock: list[Decimal]
    deal_money: list[Decimal]
    deal_fee: list[Decimal]
    option: list[int]
    client_id: list[str | None]

    def check(self) -> None:
        """ValueError unless every column has one length."""
        if len({len(column) for column in self}) > 1:
            raise ValueError("order columns of different lengths")

    def orders(self) -> list[Order]:
        """The orders, in column order (ValueError if the columns differ in length)."""
        self.check()
        return list(map(restored_order, *self))

    def book_keys(self, selected: Sequence[bool] | None = None) -> BookKeys:
        """The columns a book is filed by, of every order or of the ``selected`` ones."""
        keys = BookKeys(self.id, self.user, self.side, self.price, self.left)
        return keys if selected is None else keys.selected(selected)


class BookKeys(NamedTuple):
    """What ``Market.load_book`` files orders by, a list per field, parallel to its orders.
    Why: read from a slice's columns, they spare a pass over the order objects per field."""

    id: list[int]
    user: list[int]
    side: list[Side]
    price: list[Decimal]
    left: list[Decimal]

    def selected(self, mask: Sequence[bool]) -> BookKeys:
        """The keys of the orders whose ``mask`` is true."""
        return BookKeys(list(compress(self.id, mask)), list(compress(self.user, mask)),
                        list(compress(self.side, mask)), list(compress(self.price, mask)),
                        list(compress(self.left, mask)))


class OrderSnapshot(NamedTuple):
    """An order's public fields frozen at one moment (for events and replies)."""

    id: int
    market: str
    source: str | None
    type: int
    side: int
    user: int
    ctime: float
    mtime: float
    price: Decimal
    amount: Decimal
    taker_fee: Decimal
    maker_fee: Decimal
    left: Decimal
    deal_stock: Decimal
    deal_money: Decimal
    deal_fee: Decimal
    option: int = 0
    client_id: str | None = None
    stp_cancelled: bool = False
    #: on the reply and messages of the order being placed: the ids of its user's resting
    #: orders that self-trade prevention cancelled while it matched (not kept on the order)
    stp_cancelled_orders: tuple[int, ...] = ()


#: an order's snapshot fields but the last (``stp_cancelled_orders``, which an Order lacks), read
#: in one C call
_order_fields = attrgetter(*OrderSnapshot._fields[:-1])


def order_values(o: Order | OrderSnapshot) -> tuple[Any, ...]:
    """An order's values in ``OrderSnapshot``'s field order, to unpack: a snapshot is its own
    values (reading its fields by name costs what ``order_info`` says)."""
    if type(o) is OrderSnapshot:
        return o
    return (*_order_fields(o), getattr(o, "stp_cancelled_orders", ()))


class _OrderObject:
    """An order object (``order_info``) written as an instance's attributes: its ``__dict__``
    is the object, a plain dict with the keys in the order they were set.

    Why not a dict display: the instances of a class share one table of keys, so the dict of
    an instance's attributes holds only its values; a sixteen-key display builds and fills a
    table of its own (and frees it again) for every reply: 4,600 instructions against 2,700
    for the attributes and their dict (cachegrind, the bench's reply snapshots)."""

    id: int
    market: str
    source: str
    type: int
    side: int
    user: int
    ctime: float
    mtime: float
    price: str
    amount: str
    taker_fee: str
    maker_fee: str
    left: str
    deal_stock: str
    deal_money: str
    deal_fee: str
    option: int
    client_id: str
    stp_cancelled: bool
    stp_cancelled_orders: list[int]


def order_info(o: Order | OrderSnapshot) -> dict[str, Any]:
    """The order object of rpc.md section 3.1, keys in the original's order.

    Why the fields are unpacked rather than read by name: a snapshot's named fields are
    descriptors the interpreter does not specialize (about 150 instructions per read), and
    this runs for the reply of every order placed."""
    if type(o) is OrderSnapshot:
        (id_, market, source, type_, side, user, ctime, mtime, price, amount, taker_fee,
         maker_fee, left, deal_stock, deal_money, deal_fee, option, client_id, stp_cancelled,
         stp_orders) = o
    else:
        (id_, market, source, type_, side, user, ctime, mtime, price, amount, taker_fee,
         maker_fee, left, deal_stock, deal_money, deal_fee, option, client_id,
         stp_cancelled) = _order_fields(o)
        stp_orders = getattr(o, "stp_cancelled_orders", ())
    # fmt is skipped where the text is known: ZERO (the very object) is "0", and an order
    # nothing has dealt yet has its amount object left (one reply per order placed).  The
    # params' texts are fmt_param's, looked up here (four calls less per order object; the
    # same lines as orderjson._order_json's, inlined in both: see there)
    texts = PARAM_TEXTS
    hit = texts.get(id(price))
    price_text = hit[1] if hit is not None and hit[0] is price else fmt_param(price)
    hit = texts.get(id(amount))
    amount_text = hit[1] if hit is not None and hit[0] is amount else fmt_param(amount)
    fees = LAST_FEE_TEXTS[0]  # one read: the four entries are of one order, in any thread
    if taker_fee is not fees[0] or maker_fee is not fees[1]:
        fees = fee_texts(taker_fee, maker_fee)
    taker_text = fees[2]
    maker_text = fees[3]
    # the keys in their order (see _OrderObject), source's in its place when there is one
    info = _OrderObject()
    info.id = id_
    info.market = market
    if source is not None:
        info.source = source
    info.type = type_
    info.side = side
    info.user = user
    info.ctime = ctime
    info.mtime = mtime
    info.price = price_text
    info.amount = amount_text
    info.taker_fee = taker_text
    info.maker_fee = maker_text
    info.left = amount_text if left is amount else fmt(left)
    if deal_stock is ZERO:
        info.deal_stock = "0"
    elif (not left and amount_text[-1] in VALUE_TEXT_ENDS and "e" not in amount_text
          and deal_stock == amount):  # all of it dealt: its amount's text (see VALUE_TEXT_ENDS)
        info.deal_stock = amount_text
    else:
        info.deal_stock = fmt(deal_stock)
    info.deal_money = "0" if deal_money is ZERO else fmt(deal_money)
    info.deal_fee = "0" if deal_fee is ZERO else fmt(deal_fee)
    if client_id is not None:
        info.option = option
        info.client_id = client_id
    if stp_cancelled:
        info.stp_cancelled = True
    if stp_orders:
        info.stp_cancelled_orders = list(stp_orders)
    return info.__dict__


class Stop:
    """A stop order waiting for the market's last price to reach ``stop_price``.  ``freeze`` is
    what is frozen for it (ask: stock = amount; limit bid: money = amount x price; market bid:
    money = amount)."""

    __slots__ = (
        "id", "market", "source", "type", "side", "user", "ctime", "mtime", "stop_price",
        "price", "amount", "taker_fee", "maker_fee", "option", "client_id", "state", "freeze",
    )

    def __init__(
        self, *, id: int, market: str, source: str, type: OrderType, side: Side, user: int,
        ctime: float, mtime: float, stop_price: Decimal, price: Decimal, amount: Decimal,
        taker_fee: Decimal, maker_fee: Decimal, option: int, client_id: str, state: int,
        freeze: Decimal,
    ) -> None:
        self.id = id
        self.market = market
        self.source = source
        self.type = type
        self.side = side
        self.user = user
        self.ctime = ctime
        self.mtime = mtime
        self.stop_price = stop_price
        self.price = price
        self.amount = amount
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.option = option
        self.client_id = client_id
        self.state = state
        self.freeze = freeze

    def snapshot(self) -> StopSnapshot:
        return StopSnapshot(
            self.id, self.market, self.source, self.type, self.side, self.user, self.ctime,
            self.mtime, self.stop_price, self.price, self.amount, self.taker_fee, self.maker_fee,
            self.option, self.client_id, self.state,
        )

    def sort_key(self) -> tuple[Decimal, int]:
        """Key in its trigger list: LOW fires highest stop price first, HIGH lowest first,
        equal prices oldest first."""
        return (-self.stop_price if self.state == STOP_STATE_LOW else self.stop_price, self.id)


class StopSnapshot(NamedTuple):
    id: int
    market: str
    source: str
    type: int
    side: int
    user: int
    ctime: float
    mtime: float
    stop_price: Decimal
    price: Decimal
    amount: Decimal
    taker_fee: Decimal
    maker_fee: Decimal
    option: int
    client_id: str
    state: int


def stop_info(s: Stop | StopSnapshot) -> dict[str, Any]:
    """The fork's stop object (extensions.md 1.5, without ``account``).  We do not support fee
    payment in another asset: ``fee_discount`` is always "1" and ``fee_asset`` null."""
    return {
        "id": s.id,
        "type": s.type,
        "side": s.side,
        "user": s.user,
        "option": s.option,
        "state": s.state,
        "ctime": s.ctime,
        "mtime": s.mtime,
        "market": s.market,
        "source": s.source,
        "client_id": s.client_id,
        "stop_price": fmt(s.stop_price),
        "price": fmt(s.price),
        "amount": fmt(s.amount),
        "taker_fee": fmt(s.taker_fee),
        "maker_fee": fmt(s.maker_fee),
        "fee_discount": "1",
        "fee_asset": None,
    }


# -- events --------------------------------------------------------------------------------------


class TradeDetail(NamedTuple):
    """Detail of a "trade" balance-history row: ``{"a", "f"?, "i", "m", "p"}``."""

    market: str
    order_id: int
    price: Decimal
    amount: Decimal
    fee_rate: Decimal | None


class BalanceChanged(NamedTuple):
    """One balance_history row: a change of a user's balance and the total after it."""

    time: float
    user: int
    asset: str
    business: str
    change: Decimal
    balance: Decimal
    detail: dict[str, Any] | TradeDetail


class BalanceUpdated(NamedTuple):
    """A successful balance.update (the Kafka ``balances`` message)."""

    time: float
    user: int
    asset: str
    business: str
    change: Decimal


class OrderChanged(NamedTuple):
    """An order put on the book, updated by a deal, or finished (the ``orders`` message)."""

    event: int
    order: OrderSnapshot
    stock: str
    money: str


class OrderFinished(NamedTuple):
    """A finished order that goes into order history (order_history and order_detail)."""

    order: OrderSnapshot


#: One side of a deal's balances as ``Balances.trade`` returns them: the account's (available,
#: frozen) after what its user gives, after what it receives, after the fee it pays in the
#: received asset (the same as the second without a fee); a removed account's are ZERO.  The
#: totals the balance history records are the sums (``total_of``), made only there.
Totals = tuple[Decimal, Decimal, Decimal, Decimal, Decimal, Decimal]


def total_of(available: Decimal, frozen: Decimal) -> Decimal:
    """An account's total from its two parts, exactly as ``Balances.total`` makes it: the
    ZERO object adds nothing (not even its exponent), any other frozen part is added in the
    engine's context (whatever the calling thread's is)."""
    return available if frozen is ZERO else _add(available, frozen)


class Deal(NamedTuple):
    """One execution between a taker and a maker (deal history, the ``deals`` message, and the
    deal's balance history rows: :meth:`balance_changes`).

    Why the balance changes ride on the deal instead of being events of their own: a deal
    changes four to six balances, and building an event (and a detail) for each was a fifth
    of an order's cost in the engine; the history follower, their only consumer, builds them
    from the deal."""

    time: float
    market: str
    deal_id: int
    price: Decimal
    amount: Decimal
    deal: Decimal
    ask_fee: Decimal
    bid_fee: Decimal
    taker_side: int
    ask_order_id: int
    ask_user: int
    ask_side_role: int
    bid_order_id: int
    bid_user: int
    bid_side_role: int
    stock: str
    money: str
    #: the ask and bid orders' fee rates (the fee rows' detail "f")
    ask_fee_rate: Decimal = ZERO
    bid_fee_rate: Decimal = ZERO
    #: the ask user's account parts after each of its balance changes (stock given, money
    #: received, the money fee paid), as ``Balances.trade`` returns them (:data:`Totals`); the
    #: bid user's likewise (money given, stock received, the stock fee paid).  None: a deal
    #: without balance changes recorded (no balance rows)
    ask_totals: Totals | None = None
    bid_totals: Totals | None = None

    def balance_changes(self) -> list[BalanceChanged]:
        """The deal's "trade" balance changes in the order the engine made them: the taker's
        user's, then the maker's, each what it gives, what it receives, then the fee it pays
        (when not zero).  The two changes of one side without a fee share one detail."""
        # unpacked: named reads of a NamedTuple's fields are not specialized (see order_info)
        (time, market, _, price, amount, deal, ask_fee, bid_fee, taker_side, ask_id, ask_user, _,
         bid_id, bid_user, _, stock, money, ask_rate, bid_rate, ask_totals, bid_totals) = self
        if ask_totals is None or bid_totals is None:
            return []
        ask = _side_changes(time, market, price, amount, ask_user, ask_id, stock, amount, money,
                            deal, ask_fee, ask_rate, ask_totals)
        bid = _side_changes(time, market, price, amount, bid_user, bid_id, money, deal, stock,
                            amount, bid_fee, bid_rate, bid_totals)
        return ask + bid if taker_side == ASK else bid + ask


def _side_changes(time: float, market: str, price: Decimal, amount: Decimal, user: int,
                  order_id: int, gives: str, given: Decimal, gets: str, got: Decimal,
                  fee: Decimal, rate: Decimal,
                  totals: Totals) -> list[BalanceChanged]:
    """One side of a deal (Deal.balance_changes): what its user gives, what it receives, then
    the fee it pays in the received asset when not zero; the first two share one detail."""
    out, out_frozen, received, received_frozen, after_fee, after_fee_frozen = totals
    detail = TradeDetail(market, order_id, price, amount, None)
    changes = [
        BalanceChanged(time, user, gives, "trade", _minus(given), total_of(out, out_frozen),
                       detail),
        BalanceChanged(time, user, gets, "trade", got, total_of(received, received_frozen),
                       detail)]
    if fee:
        changes.append(BalanceChanged(time, user, gets, "trade", _minus(fee),
                                      total_of(after_fee, after_fee_frozen),
                                      TradeDetail(market, order_id, price, amount, rate)))
    return changes


class StopChanged(NamedTuple):
    """A stop order placed (PUT), triggered (ACTIVE) or cancelled (CANCEL): the ``stops``
    message; ACTIVE and CANCEL also make a stop_history row.  ``status`` is 0 for PUT and
    CANCEL, STOP_STATUS_ACTIVE / STOP_STATUS_FAIL for ACTIVE; ``order_id`` is the id of the
    order an ACTIVE stop spawned (0 if it was refused)."""

    event: int
    stop: StopSnapshot
    status: int
    order_id: int
    stock: str
    money: str


Event = BalanceChanged | BalanceUpdated | OrderChanged | OrderFinished | Deal | StopChanged
