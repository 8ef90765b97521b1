"""Domain objects of the matching engine: orders and the events a command produces.

Events are the only output of the engine besides its reply.  Every downstream product (history
rows, bus messages, pushes) is derived from them, so they carry raw values (Decimals, ids) and
are formatted by whoever consumes them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

from exchange_server.common.decimals import fmt

ASK = 1
BID = 2
LIMIT = 1
MARKET = 2
MAKER = 1
TAKER = 2

EVENT_PUT = 1
EVENT_UPDATE = 2
EVENT_FINISH = 3


class Order:
    """One order.  ``freeze`` is what is still frozen for it (ask: stock, bid: money)."""

    __slots__ = (
        "id", "market", "source", "type", "side", "user", "ctime", "mtime", "price", "amount",
        "taker_fee", "maker_fee", "left", "freeze", "deal_stock", "deal_money", "deal_fee",
    )

    def __init__(
        self, id: int, market: str, source: str | None, type: int, side: int, user: int,
        ctime: float, mtime: float, price: Decimal, amount: Decimal, taker_fee: Decimal,
        maker_fee: Decimal, left: Decimal, freeze: Decimal, deal_stock: Decimal,
        deal_money: Decimal, deal_fee: Decimal,
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

    def snapshot(self) -> OrderSnapshot:
        return OrderSnapshot(
            self.id, self.market, self.source, self.type, self.side, self.user, self.ctime,
            self.mtime, self.price, self.amount, self.taker_fee, self.maker_fee, self.left,
            self.deal_stock, self.deal_money, self.deal_fee,
        )

    def info(self) -> dict[str, Any]:
        return order_info(self)


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


def order_info(o: Order | OrderSnapshot) -> dict[str, Any]:
    """The order object of rpc.md section 3.1, keys in the original's order."""
    info: dict[str, Any] = {"id": o.id, "market": o.market}
    if o.source is not None:
        info["source"] = o.source
    info["type"] = o.type
    info["side"] = o.side
    info["user"] = o.user
    info["ctime"] = o.ctime
    info["mtime"] = o.mtime
    info["price"] = fmt(o.price)
    info["amount"] = fmt(o.amount)
    info["taker_fee"] = fmt(o.taker_fee)
    info["maker_fee"] = fmt(o.maker_fee)
    info["left"] = fmt(o.left)
    info["deal_stock"] = fmt(o.deal_stock)
    info["deal_money"] = fmt(o.deal_money)
    info["deal_fee"] = fmt(o.deal_fee)
    return info


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


class Deal(NamedTuple):
    """One execution between a taker and a maker (deal history and the ``deals`` message)."""

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


Event = BalanceChanged | BalanceUpdated | OrderChanged | OrderFinished | Deal
