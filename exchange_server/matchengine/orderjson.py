"""Order objects and deal messages as JSON text written from templates, not dict then encoder.

Why: every order placed is answered with its order object, and the ``orders`` topic carries one
per order event (the taker's, and each maker a deal touches); building the dict
(``order_info``) and running the standard library's encoder over it was the bus publisher's
largest cost, about a tenth of the matching process's CPU per order (profiled 2026-12-01).

The text must be exactly ``jsonfmt.dumps(order_info(o))`` (and ``dumps`` of the deal list), so
each field is written the way that encoder writes it: integers with ``:d`` (plain ints here,
never bools), times with ``float.__repr__`` (an int time as an int; a non-finite one through
the encoder), decimals through ``fmt`` / ``fmt_raw`` (digits, point, sign and exponent only:
nothing to escape), and every other string through the encoder's own escaping
(``encode_basestring``, as with ``ensure_ascii=False``).  tests/unit/test_orderjson.py checks
the equality over generated orders and deals.
"""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import Any

from exchange_server.common import jsonfmt
from exchange_server.common.decimals import (
    LAST_FEE_TEXTS,
    PARAM_TEXTS,
    VALUE_TEXT_ENDS,
    ZERO,
    fee_texts,
    fmt,
    fmt_param,
    fmt_raw,
)
from exchange_server.common.floattext import float_text
from exchange_server.matchengine.core.model import (
    Deal,
    Order,
    OrderSnapshot,
    order_info,
    order_values,
)

#: the last time written and its text (the events of one operation share their time object)
_last_time: object = None
_last_text = ""


def _number(value: Any) -> str:
    """A time as the encoder writes it."""
    global _last_time, _last_text
    if value is _last_time:
        return _last_text
    if type(value) is float and value - value == 0.0:
        # by the float's identity (floattext): a maker's order object carries its creation
        # time, an older operation's clock reading, between texts of the current time; the
        # operation log's checksum reads the same table
        text = float_text(value)
        _last_time, _last_text = value, text
        return text
    if type(value) is int:
        return int.__repr__(value)
    return jsonfmt.dumps(value)


def order_json(o: Order | OrderSnapshot) -> str:
    """``jsonfmt.dumps(order_info(o))``: the order object of rpc.md section 3.1."""
    try:
        return _order_json(o)
    except (TypeError, ValueError):  # a field of a type the template does not write
        return jsonfmt.dumps(order_info(o))


#: Texts of order snapshots written for a reply, by the snapshot's identity, until the
#: ``orders`` message of the same snapshot takes them (``kept_order_json``).  An entry holds its
#: snapshot, so no other object can have that id while the entry is there.
_KEPT: dict[int, tuple[OrderSnapshot, str]] = {}
#: without a bus nothing takes the texts: past this many they are dropped (and written again)
_KEPT_MAX = 4096


#: whether ``kept_order_json`` keeps its texts: only while a publisher writes the ``orders``
#: messages as it publishes them (Kafka; ``keep_order_texts``).  The in-process bus writes a
#: message's text only if a consumer reads it (bus.messages.LazyMessage): nothing would take
#: them, and 4,096 snapshots held until the next clear were 4,096 more objects for the GC.
_KEEPING = [False]


def keep_order_texts(on: bool = True) -> None:
    """Make ``kept_order_json`` keep its texts (or not); called by bus/publisher.py."""
    _KEEPING[0] = on
    if not on:
        _KEPT.clear()


def kept_order_json(o: OrderSnapshot) -> str:
    """``order_json(o)``, kept for ``taken_order_json``.  Why: the reply to an order placed and
    the taker's ``orders`` message write the very same snapshot (the engine hands the one
    object to both), once each; the second write is a dictionary lookup instead."""
    text = order_json(o)
    if not _KEEPING[0]:
        return text
    if len(_KEPT) >= _KEPT_MAX:
        _KEPT.clear()
    _KEPT[id(o)] = (o, text)
    return text


def taken_order_json(o: OrderSnapshot) -> str:
    """``order_json(o)``: the text ``kept_order_json`` wrote for this very object if any (then
    forgotten: a snapshot has one ``orders`` message), else written now."""
    kept = _KEPT.pop(id(o), None)
    if kept is not None and kept[0] is o:
        return kept[1]
    return order_json(o)


#: the order object's text from ``, "market"`` to ``"type": `` by (market, source): the orders
#: of a market and source share it (two escapes and two joins less per order object)
_HEADS: dict[tuple[str, str | None], str] = {}
_HEADS_MAX = 4096


def _head(market: str, source: str | None) -> str:
    key = (market, source)
    head = _HEADS.get(key)
    if head is None:
        head = f', "market": {encode_basestring(market)}'
        if source is not None:
            head += f', "source": {encode_basestring(source)}'
        head += ', "type": '
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[key] = head
    return head


def _order_json(o: Order | OrderSnapshot) -> str:
    # unpacked: a snapshot's fields read by name are not specialized (see model.order_info)
    (id_, market, source, type_, side, user, ctime, mtime, price, amount, taker_fee, maker_fee,
     left, deal_stock, deal_money, deal_fee, option, client_id, stp_cancelled,
     stp_orders) = order_values(o)
    # the params' texts looked up in place, the same lines as model.order_info's: a shared
    # function measured +933 instructions per order placed (+0.95%, cachegrind), so they stay twins
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
    left_text = amount_text if left is amount else fmt(left)
    if deal_stock is ZERO:
        stock_text = "0"
    elif (not left and amount_text[-1] in VALUE_TEXT_ENDS and "e" not in amount_text
          and deal_stock == amount):  # all of it dealt: its amount's text (see VALUE_TEXT_ENDS)
        stock_text = amount_text
    else:
        stock_text = fmt(deal_stock)
    money_text = "0" if deal_money is ZERO else fmt(deal_money)
    fee_text = "0" if deal_fee is ZERO else fmt(deal_fee)
    tail = "" if client_id is None and not stp_cancelled and not stp_orders else _tail(
        option, client_id, stp_cancelled, stp_orders)
    if (type(id_) is not int or type(type_) is not int or type(side) is not int
            or type(user) is not int):
        raise TypeError("not a plain int")  # order_json writes it through the encoder
    # one f-string, plain ints as ``{n}`` (``{n:d}`` parses its format spec every time: twice
    # the cost); each ``+=`` of a partial text copied the text so far again
    return (f'{{"id": {id_}{_head(market, source)}{type_}, "side": {side}, '
            f'"user": {user}, "ctime": {_number(ctime)}, "mtime": {_number(mtime)}, '
            f'"price": "{price_text}", "amount": "{amount_text}", '
            f'"taker_fee": "{taker_text}", "maker_fee": "{maker_text}", '
            f'"left": "{left_text}", '
            f'"deal_stock": "{stock_text}", "deal_money": "{money_text}", '
            f'"deal_fee": "{fee_text}"{tail}}}')


def _tail(option: int, client_id: str | None, stp_cancelled: bool,
          stp_orders: tuple[int, ...]) -> str:
    """The fields after ``deal_fee`` that most orders lack."""
    text = ""
    if client_id is not None:
        text += f', "option": {option:d}, "client_id": {encode_basestring(client_id)}'
    if stp_cancelled:
        text += ', "stp_cancelled": true'
    if stp_orders:
        text += f', "stp_cancelled_orders": [{", ".join([f"{i:d}" for i in stp_orders])}]'
    return text


def deal_json(d: Deal) -> str:
    """The ``deals`` message: ``[time, market, ask_order_id, bid_order_id, ask_user_id,
    bid_user_id, price, amount, ask_fee, bid_fee, taker_side, deal_id, stock, money]``."""
    try:
        return _deal_json(d)
    except (TypeError, ValueError):  # as in order_json
        return jsonfmt.dumps(deal_list(d))


def deal_list(d: Deal) -> list[Any]:
    """The ``deals`` message as a value (what ``deal_json`` writes)."""
    return [d.time, d.market, d.ask_order_id, d.bid_order_id, d.ask_user, d.bid_user,
            fmt_raw(d.price), fmt_raw(d.amount), fmt_raw(d.ask_fee), fmt_raw(d.bid_fee),
            d.taker_side, d.deal_id, d.stock, d.money]


def _deal_json(d: Deal) -> str:
    # unpacked (named reads of a NamedTuple's fields are not specialized, see order_info), the
    # fields the message does not carry after ``money`` sliced off
    (t, market, deal_id, price, amount, _deal, ask_fee, bid_fee, taker_side, ask_order_id,
     ask_user, _ask_role, bid_order_id, bid_user, _bid_role, stock, money) = d[:17]
    if (type(deal_id) is not int or type(taker_side) is not int or type(ask_order_id) is not int
            or type(ask_user) is not int or type(bid_order_id) is not int
            or type(bid_user) is not int):
        raise TypeError("not a plain int")  # deal_json writes it through the encoder
    return (f"[{_number(t)}, {encode_basestring(market)}, {ask_order_id}, {bid_order_id}, "
            f'{ask_user}, {bid_user}, "{fmt_raw(price)}", "{fmt_raw(amount)}", '
            f'"{fmt_raw(ask_fee)}", "{fmt_raw(bid_fee)}", {taker_side}, {deal_id}, '
            f"{encode_basestring(stock)}, {encode_basestring(money)}]")
