"""The order and deal templates (matchengine/orderjson.py, marketprice's deal item) write exactly
what the standard library's encoder writes for ``order_info`` and the deal list, whatever the
values."""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_server.bus.messages import deal_message, order_message
from exchange_server.common import jsonfmt
from exchange_server.common.decimals import VALUE_TEXT_ENDS, ZERO, fmt, fmt_param, fmt_raw
from exchange_server.marketprice.state import deal_text
from exchange_server.matchengine import orderjson
from exchange_server.matchengine.core.model import (
    Deal,
    Order,
    OrderChanged,
    OrderSnapshot,
    order_info,
)
from exchange_server.matchengine.orderjson import (
    deal_json,
    keep_order_texts,
    kept_order_json,
    order_json,
    taken_order_json,
)

decimals = st.one_of(
    st.just(ZERO),
    st.decimals(allow_nan=False, allow_infinity=False, places=None,
                min_value=Decimal("-1e30"), max_value=Decimal("1e30")),
    st.sampled_from([Decimal("1E-8"), Decimal("0E-16"), Decimal("-0"), Decimal("1.2300"),
                     Decimal("100.5"), Decimal("1E+3")]),
)
times = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 2**40),
                  st.sampled_from([1764572400.123456, 0.1 + 0.2, 1e-7, 1e22]))
texts = st.text()  # quotes, backslashes, control characters, non-ASCII, surrogates
ints = st.integers(0, 2**63)


@pytest.mark.parametrize("value,text", [
    ("12.500", "12.5"), ("12.000", "12"), ("0.000", "0"), ("-0.50", "-0.5"), ("100", "100"),
    ("100.0", "100"), ("1E-8", "1e-8"), ("0E-16", "0e-16"), ("1E+3", "1e+3"), ("-0", "-0"),
    ("0.10200", "0.102"), ("1234567.89012345678900", "1234567.890123456789"),
])
def test_fmt(value: str, text: str) -> None:
    """The original's to-sci-string with trailing zeros (and then the point) stripped, only
    when there is no exponent."""
    assert fmt(Decimal(value)) == text


def _stripped_text(value: Decimal) -> str:
    """``fmt`` as the C server's format is defined: the to-sci-string text, lowercased if it
    has an exponent, else its trailing zeros (and then the point) stripped."""
    text = str(value)
    if "E" in text:
        return text.lower()
    return text.rstrip("0").rstrip(".") if "." in text else text


@settings(max_examples=2000)
@given(st.one_of(
    st.decimals(places=None),  # NaNs, signalling ones, infinities, any exponent
    st.decimals(allow_nan=False, allow_infinity=False, places=None,
                min_value=Decimal("-1e30"), max_value=Decimal("1e30")),
    st.builds(Decimal, st.from_regex(r"-?[0-9]{1,90}(\.[0-9]{0,90})?(E[+-]?[0-9]{1,6})?",
                                     fullmatch=True)),
))
def test_fmt_is_the_stripped_text(value: Decimal) -> None:
    """fmt goes through ``normalize`` for speed: its text is still the stripped one for every
    value (zeros of any exponent, integers with zeros, tiny and huge exponents, more digits
    than any context's precision, NaNs and infinities)."""
    assert fmt(value) == _stripped_text(value)


@pytest.mark.parametrize("value", [
    "57.0570000000000000", "100.00", "100", "1E+2", "0.000001000", "0.0000001000", "-0.0500",
    "5.000", "0E-16", "-0E+3", "1" + "0" * 70 + ".000", "0." + "0" * 6 + "1" + "0" * 80,
    "sNaN", "-sNaN12", "NaN", "Infinity", "-Infinity", "1E+999999999999999999",
    "1.000E-999999999999999999", "9" * 100 + "E-999999999999999999",
])
def test_fmt_edges(value: str) -> None:
    assert fmt(Decimal(value)) == _stripped_text(Decimal(value))


@settings(max_examples=200)
@given(st.lists(decimals, min_size=1, max_size=50))
def test_fmt_param_is_fmt(values: list[Decimal]) -> None:
    """Remembered by identity: equal values of other exponents (1.0, 1.00) keep their own
    texts, and a value asked again gets the same text."""
    values += [Decimal("1.0"), Decimal("1.00"), Decimal("1E+1"), Decimal("10")]
    for value in values + values:
        assert fmt_param(value) == fmt(value)


def test_fmt_param_stays_right_past_its_size() -> None:
    values = [Decimal(n).scaleb(-8) for n in range(10_000)]  # more than it keeps
    for value in values + values[::-1]:
        assert fmt_param(value) == fmt(value)


def test_times_stay_right_past_what_is_remembered() -> None:
    """Time texts are remembered by the float's identity: asked again in any order and past
    the number kept, every order object still has its own times."""
    snapshots = [Order.fresh(id=n, market="BTCBCH", source="api", type=1, side=1, user=n,
                             now=1764572400.0 + n / 7, price=Decimal(n + 1), amount=Decimal(2),
                             taker_fee=ZERO, maker_fee=ZERO, option=0, client_id=None).snapshot()
                 for n in range(10_000)]
    for snapshot in snapshots + snapshots[::-1] + snapshots[::3]:
        assert order_json(snapshot) == jsonfmt.dumps(order_info(snapshot))


@st.composite
def orders(draw: st.DrawFn) -> Order:
    order = Order.fresh(
        id=draw(ints), market=draw(texts), source=draw(st.one_of(st.none(), texts)),
        type=draw(st.sampled_from([1, 2])), side=draw(st.sampled_from([1, 2])),
        user=draw(ints), now=draw(times), price=draw(decimals), amount=draw(decimals),
        taker_fee=draw(decimals), maker_fee=draw(decimals), option=draw(ints),
        client_id=draw(st.one_of(st.none(), texts)))
    order.mtime = draw(times)
    if draw(st.booleans()):
        order.left = draw(decimals)
    order.deal_stock, order.deal_money, order.deal_fee = (draw(decimals) for _ in range(3))
    order.stp_cancelled = draw(st.booleans())
    return order


def _plain_order_object(o: Order | OrderSnapshot) -> dict[str, Any]:
    """rpc.md's order object written out plainly, every decimal through ``fmt``: what
    ``order_info`` builds (as an instance's attribute dict, with texts looked up)."""
    info: dict[str, Any] = {"id": o.id, "market": o.market}
    if o.source is not None:
        info["source"] = o.source
    info.update({"type": o.type, "side": o.side, "user": o.user, "ctime": o.ctime,
                 "mtime": o.mtime, "price": fmt(o.price), "amount": fmt(o.amount),
                 "taker_fee": fmt(o.taker_fee), "maker_fee": fmt(o.maker_fee),
                 "left": fmt(o.left), "deal_stock": fmt(o.deal_stock),
                 "deal_money": fmt(o.deal_money), "deal_fee": fmt(o.deal_fee)})
    if o.client_id is not None:
        info["option"] = o.option
        info["client_id"] = o.client_id
    if o.stp_cancelled:
        info["stp_cancelled"] = True
    stp_orders = getattr(o, "stp_cancelled_orders", ())
    if stp_orders:
        info["stp_cancelled_orders"] = list(stp_orders)
    return info


@settings(max_examples=400)
@given(st.lists(st.tuples(orders(), st.lists(ints, max_size=3)), min_size=1, max_size=4))
def test_order_info_is_the_plain_order_object(drawn: list[tuple[Order, list[int]]]) -> None:
    """Keys, their order, values and their types, for orders and snapshots with and without
    a source, a client id and cancelled makers, built one after another (the attribute dicts
    share one class's keys); the dict is a plain one, free to change."""
    for order, stp in drawn:
        snapshot = order.snapshot()._replace(stp_cancelled_orders=tuple(stp))
        for o in (order, snapshot):
            info = order_info(o)
            expected = _plain_order_object(o)
            assert type(info) is dict
            assert list(info.items()) == list(expected.items())
            assert [type(v) for v in info.values()] == [type(v) for v in expected.values()]
            assert jsonfmt.dumps(info) == jsonfmt.dumps(expected)
            info["extra"] = 1
            del info["id"]
            assert list(info) == [*list(expected)[1:], "extra"]


def test_fee_texts_follow_their_objects() -> None:
    """The last fee rates' texts are kept by identity (decimals.LAST_FEE_TEXTS): orders taking
    turns with equal rates of other exponents (``10`` and ``1E+1``), the same pair and ZERO each
    get their own texts."""
    rates = [Decimal("10"), Decimal("1E+1"), Decimal("0.0020"), Decimal("0.002"), ZERO]
    pairs = [(a, b) for a in rates for b in rates]
    for n, (taker, maker) in enumerate(pairs + pairs[::-1] + pairs[::3] * 2):
        order = Order.fresh(id=n, market="BTCBCH", source=None, type=1, side=1, user=1,
                            now=1.5, price=Decimal("1.5"), amount=Decimal("2"),
                            taker_fee=taker, maker_fee=maker, option=0, client_id=None)
        for o in (order, order.snapshot()):
            expected = _plain_order_object(o)
            assert list(order_info(o).items()) == list(expected.items())
            assert order_json(o) == jsonfmt.dumps(expected)


@settings(max_examples=1000)
@given(decimals, st.integers(0, 30))
def test_a_value_text_is_every_equal_value_s(value: Decimal, zeros: int) -> None:
    """VALUE_TEXT_ENDS: a ``fmt`` text without ``e`` ending in one of them is the text of every
    value equal to it (more trailing zeros, or none); the texts left out are not."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    padded = Decimal((sign, (*digits, *(0,) * zeros), exponent - zeros))
    stripped = padded.normalize(Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN))
    text = fmt(value)
    if text[-1] in VALUE_TEXT_ENDS and "e" not in text:
        assert fmt(padded) == fmt(stripped) == text
    assert fmt(Decimal("100")) != fmt(Decimal("1E+2"))  # why texts ending in 0 are left out


@settings(max_examples=300)
@given(orders(), st.integers(0, 12), st.integers(0, 12), st.booleans())
def test_an_order_all_dealt_writes_its_amount_s_text(order: Order, zeros: int,
                                                     left_zeros: int, strip: bool) -> None:
    """The order object of an order whose amount is all dealt (left zero, deal_stock equal to
    the amount, exponents of their own: more zeros, or none at all): each field as ``fmt``
    writes it."""
    sign, digits, exponent = order.amount.as_tuple()
    assert isinstance(exponent, int)
    order.deal_stock = Decimal((sign, (*digits, *(0,) * zeros), exponent - zeros))
    if strip:
        order.deal_stock = order.deal_stock.normalize(Context(prec=MAX_PREC, Emax=MAX_EMAX,
                                                              Emin=MIN_EMIN))
    order.left = Decimal((0, (0,), -left_zeros))
    snapshot = order.snapshot()
    assert list(order_info(snapshot).items()) == list(_plain_order_object(snapshot).items())
    assert order_json(snapshot) == jsonfmt.dumps(_plain_order_object(snapshot))


@settings(max_examples=400)
@given(orders(), st.lists(ints, max_size=3), st.integers(1, 3), texts, texts)
def test_order_object_and_message_equal_the_encoders(
        order: Order, stp: list[int], event: int, stock: str, money: str) -> None:
    assert order_json(order) == jsonfmt.dumps(order_info(order))
    snapshot = order.snapshot()._replace(stp_cancelled_orders=tuple(stp))
    assert order_json(snapshot) == jsonfmt.dumps(order_info(snapshot))
    message = {"event": event, "order": order_info(snapshot), "stock": stock, "money": money}
    expected = jsonfmt.dumps(message).encode("utf-8", "surrogatepass")
    try:
        got = order_message(OrderChanged(event, snapshot, stock, money))
    except UnicodeEncodeError:  # a lone surrogate: neither can be sent
        assert any("\ud800" <= c <= "\udfff" for c in jsonfmt.dumps(message))
        return
    assert got == expected


@settings(max_examples=400)
@given(times, texts, st.lists(ints, min_size=6, max_size=6), st.lists(decimals, min_size=5,
                                                                       max_size=5),
       st.sampled_from([1, 2]), texts, texts)
def test_deal_message_equals_the_encoders(t: float, market: str, ids: list[int],
                                          values: list[Decimal], side: int, stock: str,
                                          money: str) -> None:
    deal = Deal(t, market, ids[0], values[0], values[1], values[2], values[3], values[4], side,
                ids[1], ids[2], 1, ids[3], ids[4], 2, stock, money)
    expected = jsonfmt.dumps([
        deal.time, deal.market, deal.ask_order_id, deal.bid_order_id, deal.ask_user,
        deal.bid_user, fmt_raw(deal.price), fmt_raw(deal.amount), fmt_raw(deal.ask_fee),
        fmt_raw(deal.bid_fee), deal.taker_side, deal.deal_id, deal.stock, deal.money])
    assert deal_json(deal) == expected
    try:
        assert deal_message(deal) == expected.encode()
    except UnicodeEncodeError:
        assert any("\ud800" <= c <= "\udfff" for c in expected)


def test_a_field_the_template_cannot_write_goes_through_the_encoder() -> None:
    order = Order.fresh(id=1, market="BTCBCH", source="x", type=1, side=1, user=2, now=1.5,
                        price=Decimal("1"), amount=Decimal("2"), taker_fee=ZERO,
                        maker_fee=ZERO, option=0, client_id="c")
    order.option = None  # type: ignore[assignment]
    assert order_json(order) == jsonfmt.dumps(order_info(order))


@settings(max_examples=100)
@given(orders(), orders())
def test_an_order_text_kept_for_the_reply_is_taken_by_its_message(a: Order, b: Order) -> None:
    """The message of the snapshot the reply wrote gets the reply's text, once; any other
    snapshot (an equal one included) is written anew."""
    keep_order_texts()
    first, other = a.snapshot(), b.snapshot()
    twin = first._replace()  # equal, another object
    assert kept_order_json(first) == order_json(first)
    assert orderjson._KEPT[id(first)] == (first, order_json(first))
    assert taken_order_json(other) == order_json(other)
    assert taken_order_json(twin) == order_json(twin)
    assert taken_order_json(first) == order_json(first)
    assert taken_order_json(first) == order_json(first)  # taken already: written again


def test_kept_order_texts_stay_right_past_their_size() -> None:
    snapshots = [Order.fresh(id=n, market="BTCBCH", source="api", type=1, side=1, user=n,
                             now=1.5, price=Decimal(n), amount=Decimal("2"), taker_fee=ZERO,
                             maker_fee=ZERO, option=0, client_id=None).snapshot()
                 for n in range(10_000)]  # more than it keeps, never taken
    keep_order_texts()
    for snapshot in snapshots:
        kept_order_json(snapshot)
    for snapshot in snapshots[::-1]:
        assert taken_order_json(snapshot) == order_json(snapshot)


def test_order_texts_are_kept_only_for_a_publisher_writing_messages_at_once() -> None:
    """The in-process bus writes a message's text when read, if ever: nothing is kept for it."""
    from exchange_server.bus import BusPublisher, InProcessBus
    from tests.unit.test_bus_lazy import EagerTransport

    keep_order_texts(False)
    BusPublisher(InProcessBus())
    snapshot = Order.fresh(id=7, market="BTCBCH", source="api", type=1, side=1, user=7, now=1.5,
                           price=Decimal(3), amount=Decimal("2"), taker_fee=ZERO, maker_fee=ZERO,
                           option=0, client_id=None).snapshot()
    assert kept_order_json(snapshot) == order_json(snapshot)
    assert id(snapshot) not in orderjson._KEPT
    BusPublisher(EagerTransport())
    kept_order_json(snapshot)
    assert orderjson._KEPT[id(snapshot)] == (snapshot, order_json(snapshot))


@settings(max_examples=200)
@given(orders(), st.one_of(st.none(), st.integers(-2**63, 2**64 - 1)))
def test_reply_of_an_order_equals_the_encoders(order: Order, req_id: int | None) -> None:
    try:
        expected = jsonfmt.reply_body(order_info(order), req_id)
    except UnicodeEncodeError:  # a lone surrogate: no reply can carry it, either way
        return
    assert jsonfmt.reply_text(order_json(order), req_id) == expected


@settings(max_examples=300)
@given(st.integers(1, 2**63), st.one_of(times, st.just(float("nan"))), decimals, decimals,
       st.sampled_from(["sell", "buy"]))
def test_marketprice_deal_item_equals_the_encoders(deal_id: int, t: float, price: Decimal,
                                                   amount: Decimal, kind: str) -> None:
    item = {"id": deal_id, "time": t, "price": fmt(price), "amount": fmt(amount), "type": kind}
    assert deal_text(deal_id, t, item["price"], item["amount"], kind) == jsonfmt.dumps(item)
