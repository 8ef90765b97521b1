"""The rows of a slice's tables, shared by both stores and the takeover of the original.

Why a module of its own: the SQLite and MySQL stores lay out the same rows (orders with their
nine decimals as exact texts, balances, the balance.update dedup window, stops, runtime
configuration), and the slice document (:mod:`~exchange_server.matchengine.slicedoc`) builds
the same objects from columns; each conversion is written once here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, cast

from exchange_server.matchengine.core.model import Order, OrderType, Side, Stop, restored_order
from exchange_server.matchengine.store import (
    SliceInfo,
    StoreError,
    balance_row_crc,
    decimals_of_texts,
    order_row_crc,
)

#: The decimal fields of an order, in column order.
ORDER_DECIMALS = ("price", "amount", "taker_fee", "maker_fee", "left", "freeze", "deal_stock",
                  "deal_money", "deal_fee")


def slice_time(info: SliceInfo) -> int:
    """The table suffix of a slice (validated: it is pasted into table names)."""
    t = info.time
    if type(t) is not int or t < 0:
        raise StoreError(f"invalid slice time {t!r}")
    return t


def order_decimals(order: Order) -> list[Decimal]:
    """An order's decimals in ORDER_DECIMALS (column) order."""
    return [order.price, order.amount, order.taker_fee, order.maker_fee, order.left, order.freeze,
            order.deal_stock, order.deal_money, order.deal_fee]


def order_from_row(oid: Any, market: str, source: str | None, kind: Any, side: Any, user: Any,
                   ctime: Any, mtime: Any, decimals: Sequence[Decimal], option: Any,
                   client_id: str | None) -> Order:
    """An Order from slice columns and its decimals in ORDER_DECIMALS order."""
    price, amount, taker_fee, maker_fee, left, freeze, deal_stock, deal_money, deal_fee = decimals
    return Order(id=int(oid), market=market, source=source, type=cast(OrderType, int(kind)),
                 side=cast(Side, int(side)), user=int(user), ctime=float(ctime), mtime=float(mtime),
                 price=price, amount=amount, taker_fee=taker_fee, maker_fee=maker_fee, left=left,
                 freeze=freeze, deal_stock=deal_stock, deal_money=deal_money, deal_fee=deal_fee,
                 option=int(option), client_id=client_id)


def orders_from_rows(rows: Sequence[Sequence[Any]], where: str) -> tuple[list[Order], int]:
    """The orders of a slice's rows (id, t, side, create_time, update_time, user_id, market,
    source, the ORDER_DECIMALS texts, option, client_id) and the sum of their checksum terms
    (both stores read this layout).  Why not ``order_from_row`` per row: a restart loads up to
    millions of them; here each distinct decimal text is parsed once, the checksum is taken
    from the stored texts, and Order is built without another call layer."""
    try:
        parsed = decimals_of_texts(v for row in rows for v in row[8:17])
    except ArithmeticError as e:
        raise StoreError(f"{where}: a decimal column is not a number") from e
    dec = parsed.__getitem__
    # the checksum covers str(Decimal): the stored text itself when it is one (a str round-trips)
    texts_are_str = all(type(text) is str for text in parsed)
    crc = order_row_crc
    orders: list[Order] = []
    append = orders.append
    total = 0
    for (oid, kind, side, ctime, mtime, user, market, source, price, amount, taker_fee,
         maker_fee, left, freeze, deal_stock, deal_money, deal_fee, option, client_id) in rows:
        oid, kind, side, user = int(oid), int(kind), int(side), int(user)
        ctime, mtime, option = float(ctime), float(mtime), int(option)
        texts: tuple[str, ...] = (price, amount, taker_fee, maker_fee, left, freeze,
                                  deal_stock, deal_money, deal_fee)
        if not texts_are_str:
            texts = tuple(str(dec(text)) for text in texts)
        total += crc(oid, market, source, kind, side, user, ctime, mtime, texts, option,
                     client_id)
        append(restored_order(id=oid, market=market, source=source, type=cast(OrderType, kind),
                     side=cast(Side, side), user=user, ctime=ctime, mtime=mtime,
                     price=dec(price), amount=dec(amount), taker_fee=dec(taker_fee),
                     maker_fee=dec(maker_fee), left=dec(left), freeze=dec(freeze),
                     deal_stock=dec(deal_stock), deal_money=dec(deal_money),
                     deal_fee=dec(deal_fee), option=option, client_id=client_id))
    return orders, total


def balances_from_rows(rows: Sequence[Sequence[Any]],
                       where: str) -> tuple[list[tuple[int, str, int, Decimal]], int]:
    """A slice's balances from (user_id, asset, t, text) rows, and the sum of their checksum
    terms (both stores): each distinct text parsed once, the checksum from the stored text."""
    try:
        parsed = decimals_of_texts(row[3] for row in rows)
    except ArithmeticError as e:
        raise StoreError(f"{where}: a balance is not a number") from e
    balances = []
    total = 0
    for user, asset, kind, text in rows:
        user, kind = int(user), int(kind)
        value = parsed[text]
        balances.append((user, asset, kind, value))
        total += balance_row_crc(user, asset, kind, text if type(text) is str else str(value))
    return balances, total


#: The decimal fields of a stop order, in column order.
STOP_DECIMALS = ("stop_price", "price", "amount", "taker_fee", "maker_fee", "freeze")


def stop_decimals(stop: Stop) -> list[Decimal]:
    return [stop.stop_price, stop.price, stop.amount, stop.taker_fee, stop.maker_fee, stop.freeze]


def stop_from_row(row: Sequence[Any], decimals: Sequence[Decimal]) -> Stop:
    """A Stop from (id, t, side, create_time, update_time, user_id, market, source, option,
    client_id, state) and its decimals in STOP_DECIMALS order."""
    (sid, kind, side, ctime, mtime, user, market, source, option, client_id, state) = row
    stop_price, price, amount, taker_fee, maker_fee, freeze = decimals
    return Stop(id=int(sid), market=market, source=source, type=cast(OrderType, int(kind)),
                side=cast(Side, int(side)), user=int(user), ctime=float(ctime), mtime=float(mtime),
                stop_price=stop_price, price=price, amount=amount, taker_fee=taker_fee,
                maker_fee=maker_fee, option=int(option), client_id=client_id, state=int(state),
                freeze=freeze)


def encode_config_detail(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


def decode_config_detail(text: str, where: str) -> dict[str, Any]:
    try:
        detail = json.loads(text)
    except ValueError as e:
        raise StoreError(f"{where}: bad detail {text!r}") from e
    if not isinstance(detail, dict):
        raise StoreError(f"{where}: bad detail {text!r}")
    return detail


#: The tables of one slice: slice_<kind>_<time>.
SLICE_KINDS = ("order", "balance", "update", "stop", "config", "state")

_SLICE_TABLE = re.compile(rf"slice_(?:{'|'.join(SLICE_KINDS)})_(\d+)")


def unpublished_slice_times(tables: Iterable[str], published: Iterable[int],
                            before: int) -> list[int]:
    """The times before ``before`` of the slices whose tables are among ``tables`` but which
    are not ``published`` (no ``slice_history`` row), oldest first: what a slice writer killed
    before publishing left.  Templates (``slice_order_example``, the original's
    ``*_example_viabtc``) and other tables are not slices."""
    found = {int(m.group(1)) for name in tables if (m := _SLICE_TABLE.fullmatch(name))}
    return sorted(t for t in found - set(published) if t < before)
