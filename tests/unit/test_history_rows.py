"""Events -> trade_history rows (exchange_server.history.rows), checked against rows worked out by
hand for a scripted session run through the real engine."""

from __future__ import annotations

import decimal
import json
import math
import random
import re
import sqlite3
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D
from typing import Any

import pytest

from exchange_server.common.decimals import ZERO
from exchange_server.history import rows as R
from exchange_server.history import store_sqlite as S
from exchange_server.history.rows import (
    BALANCE,
    DEAL,
    DETAIL,
    ORDER,
    STOP,
    USER_DEAL,
    BalanceRow,
    DealRow,
    OrderRow,
    UserDealRow,
    decimal_converter,
    decimal_text,
    detail_json,
    rows_of,
    shard_of,
    strip_zeros,
    text_value,
    time_value,
)
from exchange_server.history.store import HistoryStoreError
from exchange_server.matchengine.core.model import (
    ASK,
    BID,
    MAKER,
    STOP_EVENT_ACTIVE,
    STOP_EVENT_CANCEL,
    STOP_EVENT_PUT,
    TAKER,
    BalanceChanged,
    Deal,
    OrderFinished,
    OrderSnapshot,
    StopChanged,
    StopSnapshot,
    TradeDetail,
)
from tests.support.history_support import T0, golden_ops, run_session, scripted_ops, small_methods


def _trade(order_id: int, price: str, amount: str, fee: str | None = None) -> str:
    detail: dict[str, Any] = {"a": amount}
    if fee is not None:
        detail["f"] = fee
    detail.update({"i": order_id, "m": "BTCBCH", "p": price})
    return json.dumps(detail)


def expected_rows() -> dict[int, list[tuple[str, Any]]]:
    """The scripted session's rows, per operation id, computed by hand (see
    tests/support/history_support.scripted_requests)."""
    t5, t10 = T0 + 5, T0 + 10
    return {
        1: [(BALANCE, BalanceRow(T0 + 1, 1, "BTC", "deposit", D("10"), D("10"),
                                 '{"k": "v", "id": 1}'))],
        2: [(BALANCE, BalanceRow(T0 + 2, 2, "BCH", "deposit", D("1000"), D("1000"), '{"id": 2}'))],
        3: [(BALANCE, BalanceRow(T0 + 3, 3, "BCH", "deposit", D("500"), D("500"), '{"id": 3}'))],
        4: [],
        # bid 2 (user 2, taker, 0.002) takes 1.5 @100 from ask 1 (user 1, maker, 0.001):
        # deal 150; ask fee 150 x 0.001 = 0.15 BCH; bid fee 1.5 x 0.002 = 0.003 BTC.
        5: [
            (DEAL, DealRow(t5, 1, 1, 1, 2, 1, D(100), D("1.5"), D(150), D("0.15"), D("0.003"))),
            (DEAL, DealRow(t5, 2, 1, 2, 1, 2, D(100), D("1.5"), D(150), D("0.003"), D("0.15"))),
            (USER_DEAL, UserDealRow(t5, 1, "BTCBCH", 1, 1, 2, 1, 1, D(100), D("1.5"), D(150),
                                    D("0.15"), D("0.003"))),
            (USER_DEAL, UserDealRow(t5, 2, "BTCBCH", 1, 2, 1, 2, 2, D(100), D("1.5"), D(150),
                                    D("0.003"), D("0.15"))),
            (BALANCE, BalanceRow(t5, 2, "BCH", "trade", D(-150), D(850), _trade(2, "100", "1.5"))),
            (BALANCE, BalanceRow(t5, 2, "BTC", "trade", D("1.5"), D("1.5"), _trade(2, "100", "1.5"))),
            (BALANCE, BalanceRow(t5, 2, "BTC", "trade", D("-0.003"), D("1.497"),
                                 _trade(2, "100", "1.5", "0.002"))),
            (BALANCE, BalanceRow(t5, 1, "BTC", "trade", D("-1.5"), D("8.5"), _trade(1, "100", "1.5"))),
            (BALANCE, BalanceRow(t5, 1, "BCH", "trade", D(150), D(150), _trade(1, "100", "1.5"))),
            (BALANCE, BalanceRow(t5, 1, "BCH", "trade", D("-0.15"), D("149.85"),
                                 _trade(1, "100", "1.5", "0.001"))),
            (ORDER, OrderRow(2, t5, t5, 2, "BTCBCH", "s2", 1, 2, D(101), D("1.5"), D("0.002"),
                             D("0.001"), D("1.5"), D(150), D("0.003"))),
            (DETAIL, OrderRow(2, t5, t5, 2, "BTCBCH", "s2", 1, 2, D(101), D("1.5"), D("0.002"),
                              D("0.001"), D("1.5"), D(150), D("0.003"))),
        ],
        # cancel of the partly filled ask 1: finish time = its last deal's time
        6: [
            (ORDER, OrderRow(1, T0 + 4, t5, 1, "BTCBCH", "s1", 1, 1, D(100), D(2), D("0.002"),
                             D("0.001"), D("1.5"), D(150), D("0.15"))),
            (DETAIL, OrderRow(1, T0 + 4, t5, 1, "BTCBCH", "s1", 1, 1, D(100), D(2), D("0.002"),
                              D("0.001"), D("1.5"), D(150), D("0.15"))),
        ],
        7: [],
        8: [],
        9: [],  # cancel of an unfilled order: no order history
        # market ask 5 (user 1, taker 0.002) sells 0.4 into bid 3 @90 (user 3, maker 0.001):
        # deal 36; ask fee 36 x 0.002 = 0.072 BCH; bid fee 0.4 x 0.001 = 0.0004 BTC.
        10: [
            (DEAL, DealRow(t10, 1, 2, 5, 3, 2, D(90), D("0.4"), D(36), D("0.072"), D("0.0004"))),
            (DEAL, DealRow(t10, 3, 2, 3, 5, 1, D(90), D("0.4"), D(36), D("0.0004"), D("0.072"))),
            (USER_DEAL, UserDealRow(t10, 1, "BTCBCH", 2, 5, 3, 1, 2, D(90), D("0.4"), D(36),
                                    D("0.072"), D("0.0004"))),
            (USER_DEAL, UserDealRow(t10, 3, "BTCBCH", 2, 3, 5, 2, 1, D(90), D("0.4"), D(36),
                                    D("0.0004"), D("0.072"))),
            (BALANCE, BalanceRow(t10, 1, "BTC", "trade", D("-0.4"), D("8.1"), _trade(5, "90", "0.4"))),
            (BALANCE, BalanceRow(t10, 1, "BCH", "trade", D(36), D("185.85"), _trade(5, "90", "0.4"))),
            (BALANCE, BalanceRow(t10, 1, "BCH", "trade", D("-0.072"), D("185.778"),
                                 _trade(5, "90", "0.4", "0.002"))),
            (BALANCE, BalanceRow(t10, 3, "BCH", "trade", D(-36), D(464), _trade(3, "90", "0.4"))),
            (BALANCE, BalanceRow(t10, 3, "BTC", "trade", D("0.4"), D("0.4"), _trade(3, "90", "0.4"))),
            (BALANCE, BalanceRow(t10, 3, "BTC", "trade", D("-0.0004"), D("0.3996"),
                                 _trade(3, "90", "0.4", "0.001"))),
            (ORDER, OrderRow(5, t10, t10, 1, "BTCBCH", "m1", 2, 1, D(0), D("0.4"), D("0.002"),
                             D(0), D("0.4"), D(36), D("0.072"))),
            (DETAIL, OrderRow(5, t10, t10, 1, "BTCBCH", "m1", 2, 1, D(0), D("0.4"), D("0.002"),
                              D(0), D("0.4"), D(36), D("0.072"))),
        ],
        # withdrawal: change truncated to prec_show 8
        11: [(BALANCE, BalanceRow(T0 + 11, 2, "BCH", "withdraw", D("-50.12345678"),
                                  D("799.87654322"), '{"id": 4}'))],
    }


def test_scripted_session_rows() -> None:
    ops = scripted_ops()
    expected = expected_rows()
    assert [oper_id for oper_id, _ in ops] == list(expected)
    for oper_id, events in ops:
        got = rows_of(events)
        want = expected[oper_id]
        assert [k for k, _ in got] == [k for k, _ in want], f"operation {oper_id}"
        for (kind, g), (_, w) in zip(got, want, strict=True):
            assert type(g) is type(w), f"operation {oper_id} {kind}"
            assert tuple(g) == tuple(w), f"operation {oper_id} {kind}: {g} != {w}"


def test_deal_balance_rows_follow_the_accounts() -> None:
    """A deal's balance rows (``Deal.balance_changes``, no events of their own) over a random
    session: every row's total is the account's running sum of the changes rows recorded, with
    takers on both sides, fees of zero and not, and users trading with themselves (then the
    totals of one account change between the taker's rows and the maker's), and the sums end
    at the engine's balances."""
    rng = random.Random(7)
    methods = small_methods()
    requests: list[tuple[float, str, list[Any]]] = []
    now = T0
    for user in (1, 2, 3):
        for n, asset in enumerate(("BTC", "BCH")):
            now += 1
            requests.append((now, "balance.update",
                             [user, asset, "deposit", user * 10 + n, "100000", {}]))
    for _ in range(400):
        now += 1
        side = rng.choice((ASK, BID))
        price = f"{rng.randint(95, 105)}.{rng.randint(0, 99):02d}"
        amount = f"{rng.randint(1, 300) / 100}"
        fees = rng.choice((("0", "0"), ("0.002", "0.001"), ("0.0015", "0"), ("0", "0.0007")))
        if rng.random() < 0.15:
            requests.append((now, "order.put_market", [rng.randint(1, 3), "BTCBCH", side,
                                                       amount, fees[0], "t"]))
        else:
            requests.append((now, "order.put_limit", [rng.randint(1, 3), "BTCBCH", side, amount,
                                                      price, fees[0], fees[1], "t"]))
    running: defaultdict[tuple[int, str], D] = defaultdict(D)
    deals = trade_rows = 0
    for _, events in run_session(methods, requests):
        deals += sum(type(e) is Deal for e in events)
        assert not any(type(e) is BalanceChanged and e.business == "trade" for e in events)
        for kind, row in rows_of(events):
            if kind == BALANCE:
                assert isinstance(row, BalanceRow)
                running[(row.user_id, row.asset)] += row.change
                assert running[(row.user_id, row.asset)] == row.balance, row
                trade_rows += row.business == "trade"
    assert deals > 100 and trade_rows >= 4 * deals
    balances = methods.engine.balances
    for (user, asset), total in running.items():
        assert balances.total(user, asset) == total, (user, asset)


def test_deal_balance_changes() -> None:
    """The rows of one deal, taker first, in the engine's own context whatever the caller's
    thread has (the changes are exact negations, exponents kept), fee rows only for a fee."""
    amount = D("1.234567890123456789012345678901234")  # more digits than a default context
    deal = Deal(9.5, "BTCBCH", 4, D("100.0"), amount, D("123.4567890123456789012345678901234"),
                D("0.00"), D("0.0012"), BID, 7, 1, MAKER, 8, 2, TAKER, "BTC", "BCH", D("0.001"),
                D("0.0010"), (D("4.99999999"), D("0.00000001"), D("6"), ZERO, D("6"), ZERO),
                (D("7"), ZERO, D("8"), D("0E-12"), D("9"), D("0E-12")))
    with ThreadPoolExecutor(1) as pool:
        def hostile() -> list[BalanceChanged]:
            decimal.setcontext(decimal.Context(prec=5, rounding=decimal.ROUND_UP))
            return deal.balance_changes()
        got = pool.submit(hostile).result()
    bid = TradeDetail("BTCBCH", 8, D("100.0"), amount, None)
    ask = TradeDetail("BTCBCH", 7, D("100.0"), amount, None)
    assert got == [
        BalanceChanged(9.5, 2, "BCH", "trade", D("-123.4567890123456789012345678901234"), D(7),
                       bid),
        BalanceChanged(9.5, 2, "BTC", "trade", amount, D(8), bid),
        BalanceChanged(9.5, 2, "BTC", "trade", D("-0.0012"), D(9),
                       TradeDetail("BTCBCH", 8, D("100.0"), amount, D("0.0010"))),
        BalanceChanged(9.5, 1, "BTC", "trade", -amount, D(5), ask),
        BalanceChanged(9.5, 1, "BCH", "trade", deal.deal, D(6), ask),
    ]
    assert [str(c.change) for c in got] == [
        "-123.4567890123456789012345678901234", str(amount), "-0.0012", "-" + str(amount),
        "123.4567890123456789012345678901234"]
    assert got[0].detail is got[1].detail
    # the totals are the accounts' parts added up in the engine's context (exponents kept: the
    # ZERO object adds nothing, any other zero its exponent)
    assert [str(c.balance) for c in got] == [
        "7", "8.000000000000", "9.000000000000", "5.00000000", "6"]
    assert Deal(*deal[:17]).balance_changes() == []


def test_shards() -> None:
    ops = dict(scripted_ops())
    got = rows_of(ops[10])
    # deal_history by order id, user_deal_history by user id
    assert [shard_of(k, r) for k, r in got[:4]] == [5, 3, 1, 3]
    order = [r for k, r in got if k == ORDER][0]
    assert shard_of(ORDER, order) == 1 and shard_of(DETAIL, order) == 5
    big = BalanceRow(0.0, 4_294_967_295, "BTC", "x", D(1), D(1), "{}")
    assert shard_of(BALANCE, big) == 95


def test_trade_detail_json() -> None:
    assert R.trade_detail_json(TradeDetail("BTCBCH", 6, D("90.00000000"), D("0.10000000"), None)) \
        == '{"a": "0.1", "i": 6, "m": "BTCBCH", "p": "90"}'
    assert R.trade_detail_json(TradeDetail("BTCBCH", 6, D("90"), D("0.1"), D("0.0010"))) \
        == '{"a": "0.1", "f": "0.001", "i": 6, "m": "BTCBCH", "p": "90"}'
    # tiny values keep the engine's exponent form
    assert R.trade_detail_json(TradeDetail("A\"B", 1, D("1E-8"), D("5E-7"), None)) \
        == '{"a": "5e-7", "i": 1, "m": "A\\"B", "p": "1e-8"}'


def test_balance_update_detail_json() -> None:
    assert detail_json({"z": 1, "a": [1, "x"], "id": 7}) == '{"z": 1, "a": [1, "x"], "id": 7}'
    assert detail_json({"é": "ü", "id": 1}) == '{"é": "ü", "id": 1}'
    assert detail_json({"x": float("nan"), "id": 1}) == "{}"
    assert detail_json({"x": object(), "id": 1}) == "{}"
    assert detail_json({"x": "\ud800", "id": 1}) == "{}"


def test_orders_without_source() -> None:
    snap = OrderSnapshot(9, "BTCBCH", None, 1, 1, 5, 1.0, 2.0, D(1), D(1), D(0), D(0), D(0), D(1),
                         D(1), D(0))

    rows = rows_of([OrderFinished(snap)])
    assert [k for k, _ in rows] == [ORDER, DETAIL]
    assert rows[0][1].source == "(null)"  # type: ignore[union-attr]


def test_balance_row_of_event() -> None:
    e = BalanceChanged(1.5, 3, "BTC", "deposit", D("1.5"), D("2.5"), {"id": 1})
    assert rows_of([e]) == [(BALANCE, BalanceRow(1.5, 3, "BTC", "deposit", D("1.5"), D("2.5"),
                                                 '{"id": 1}'))]


# -- column values --------------------------------------------------------------------------------


@pytest.mark.parametrize("value,precision,scale,stored", [
    ("10", 30, 8, "10.00000000"),
    ("-0.15", 30, 8, "-0.15000000"),
    ("149.85", 30, 16, "149.8500000000000000"),
    ("0.123456785", 30, 8, "0.12345679"),       # half away from zero, as MySQL
    ("-0.123456785", 30, 8, "-0.12345679"),
    ("0.123456784999", 30, 8, "0.12345678"),
    ("-0.000000001", 30, 8, "0.00000000"),      # no negative zero
    ("1E-8", 30, 8, "0.00000001"),
    ("0E-20", 30, 16, "0.0000000000000000"),
    ("0.00005", 30, 4, "0.0001"),
    ("1E+30", 30, 8, "9999999999999999999999.99999999"),   # clamped to the column's range
    ("1E+20", 30, 16, "99999999999999.9999999999999999"),
    ("-1E+30", 30, 16, "-99999999999999.9999999999999999"),
    ("99999999999999.99999999999999999", 30, 16, "99999999999999.9999999999999999"),
])
def test_decimal_column(value: str, precision: int, scale: int, stored: str) -> None:
    """What the column ends up answering: the writer's text, rounded to the scale as MySQL
    stores it (SQLite: as the reader rounds it)."""
    written = decimal_converter(precision, scale)(D(value))
    assert decimal_text(written, scale) == strip_zeros(stored)
    assert abs(D(written)) < 10 ** (precision - scale)  # what MySQL's strict mode accepts
    # the history writer runs in its own thread, whose decimal context is the default 28 digits
    # (this test's thread has the services' wider one): the converter must not depend on it
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(decimal_converter(precision, scale), D(value)).result() == written
    if abs(D(value)) < 10 ** (precision - scale - 1):
        assert D(written) == D(value)  # in range: handed over exactly, the database rounds


def test_other_columns() -> None:
    assert time_value(1795617814.0425899) == 1795617814.04259
    assert time_value(1.0) == 1.0
    assert text_value('{"a": 1}') == '{"a": 1}'
    long = json.dumps({"x": "é" * 40_000})
    assert text_value(long) == "{}"
    fits = json.dumps({"x": "e" * 65_000})
    assert text_value(fits) == fits
    assert R.varchar_converter(30)("x" * 31) == "x" * 30
    row = R.ROW_CONVERTERS[BALANCE](BalanceRow(T0 + 0.1234567, 1, "BTC", "trade", D("-0.15"),
                                               D("149.85"), "{}"))
    assert row == (1700000000.123457, 1, "BTC", "trade", "-0.15", "149.85", "{}")


def test_time_value_stays_right_past_its_size() -> None:
    """Remembered by identity: every value, asked again in any order and past the number it
    keeps, gives its own microsecond value."""
    values = [T0 + n / 7 for n in range(10_000)]
    for value in values + values[::-1] + values[::3]:
        assert time_value(value) == float(f"{value:.6f}")


def test_microseconds_is_the_printed_microsecond_value() -> None:
    """``microseconds`` gives exactly ``float(f"{value:.6f}")``, sign of a zero included: on
    random times, on values whose product by 10**6 lies near a half or a quarter (both of its
    paths), on exact ties (to even), and on every value its fast path leaves."""
    rng = random.Random(15)
    values = [0.0, -0.0, 1e-7, -1e-7, 5e-7, 1.5e-6, 2.5e-6, 0.5, 1.0, T0, 2.0 ** 51 / 1e6,
              2.0 ** 53, 1e300, -1e300, 5e-324, float("inf"), float("-inf")]
    for _ in range(20_000):
        values.append(rng.uniform(0, 5e9))
        values.append(rng.random() * 10.0 ** rng.randint(-9, 12))
        n = rng.randrange(0, 5 * 10 ** 15)
        for near in (n / 1e6, (n + 0.5) / 1e6, (n + 0.25) / 1e6, (n + 0.75) / 1e6):
            values += [near, math.nextafter(near, 0.0), math.nextafter(near, math.inf), -near]
        # exact ties: an odd number of 128ths is a whole number of microseconds and a half
        values.append(rng.randrange(0, 2 ** 31) + rng.randrange(1, 128, 2) / 128)
    for value in values:
        want = float(f"{value:.6f}")
        got = R.microseconds(value)
        assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want), value
    assert math.isnan(R.microseconds(float("nan")))


@pytest.mark.parametrize("asset,business,detail", [
    ("BTC", "trade", "{}"),
    ("A" * 30, "b" * 30, "x" * (R.TEXT_MAX_BYTES // 4)),  # at the limits: as they are
    ("A" * 31, "b" * 99, "é" * 40_000),  # over: truncated, and "{}"
    ("é" * 30, "", "e" * 65_000),  # fits in bytes though longer than the quick check
])
def test_generated_row_converter_equals_the_column_converters(asset: str, business: str,
                                                              detail: str) -> None:
    """Strings are checked inline in the generated converter: the same values as calling
    each column's converter."""
    values = (T0 + 0.5, 7, asset, business, D("-1.5"), D("12345678901234.5"), detail)
    expected = tuple(value if conv is None else conv(value)
                     for value, conv in zip(values, R.column_converters(BALANCE), strict=True))
    assert R.ROW_CONVERTERS[BALANCE](BalanceRow(*values)) == expected


@pytest.mark.parametrize("text,reply", [
    ("100.00000000", "100"),
    ("0.00000000", "0"),
    ("-0.00010000", "-0.0001"),
    ("1000", "1000"),
    ("7.0999000000000000", "7.0999"),
    ("-0.00000000", "0"),
    ("10.5", "10.5"),
])
def test_strip_zeros(text: str, reply: str) -> None:
    assert strip_zeros(text) == reply
    assert decimal_text(text, 16) == reply
    assert decimal_text(D(text), 16) == reply


def test_decimal_text_of_mysql_values() -> None:
    assert decimal_text(D("0E-8"), 8) == "0"
    assert decimal_text(D("1.00000000E-8"), 8) == "0.00000001"
    assert decimal_text("0.123456785", 8) == "0.12345679"
    assert decimal_text("-0.000000001", 8) == "0"


def _converted(events: list[Any]) -> list[tuple[str, tuple[Any, ...]]]:
    return [(kind, R.ROW_CONVERTERS[kind](row)) for kind, row in rows_of(events)]


def _edge_events() -> list[Any]:
    """Events whose values take the converters' slow paths: decimals near and beyond their
    columns' range, strings longer than their columns, a detail too big for TEXT, an order
    without a source, a stop that fired and one that was cancelled."""
    big, huge = D("123456789012345678901.123456789"), D("9" * 40)
    order = OrderSnapshot(9, "M" * 31, None, 1, 2, 4, T0 + 0.1234567, T0 + 2.5, huge, big,
                          D("12345678901234567890123456.5"), D("0.001"), D(0), big,
                          D("-" + "9" * 20),
                          D("12345678901234.00000000000000005"))
    stop = StopSnapshot(3, "BTCBCH", "s" * 40, 1, 1, 4, T0, T0 + 1, big, D(100), D("0.5"),
                        D("0.002"), D("0.001"), 0, "c" * 33, 2)
    return [
        BalanceChanged(T0 + 0.5, 1, "A" * 31, "b" * 40, D("-1.5"), D("12345678901234.5"),
                       {"x": "é" * 40_000}),
        BalanceChanged(T0 + 0.5, 1, "BTC", "trade", huge, D("-" + "9" * 16),
                       TradeDetail("BTCBCH", 5, D("100.5"), D("0.25"), None)),
        Deal(T0 + 1.0000005, "X" * 35, 7, big, D("0.00000001"), huge, D(0), D("-0"), 1, 5, 1,
             1, 6, 2, 2, "BTC", "BCH"),
        OrderFinished(order),
        OrderFinished(order._replace(source="src", market="BTCBCH", price=D(0))),
        OrderFinished(order._replace(id=10, source="s" * 31, taker_fee=D("-1E+26"))),
        StopChanged(STOP_EVENT_ACTIVE, stop, 1, 12, "BTC", "BCH"),
        StopChanged(STOP_EVENT_CANCEL, stop, 0, 0, "BTC", "BCH"),
        StopChanged(STOP_EVENT_PUT, stop, 0, 0, "BTC", "BCH"),
        # deals with their balance changes: long asset names, totals of zero and beyond
        # their column, a fee on one side only (bid taker), then on both (ask taker, amounts
        # beyond the change column)
        Deal(T0 + 1.5, "BTCBCH", 8, D("100.5"), D("0.25"), D("25.125"), D("0.05025"), D(0), 2,
             5, 1, 1, 6, 2, 2, "S" * 31, "BCH", D("0.002"), D("0.001"),
             (D(0), ZERO, huge, ZERO, D("-" + "9" * 16), ZERO),
             (D("12345678901234"), D("0.5"), D("0.25"), ZERO, D("0.20"), D("0.05"))),
        Deal(T0 + 2, "M" * 31, 9, D("1E-8"), huge, big, D("0.1"), D("1E-20"), 1, 5, 1, 2, 6,
             2, 1, "BTC", "B" * 33, D("0.002"), D("0"), (D(1), ZERO, D(2), ZERO, D(3), ZERO),
             (D(4), ZERO, D(2), D(3), D("0E-16"), ZERO)),
    ]


def _per_table(rows: list[tuple[str, tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for table, values in rows:
        tables[table].append(values)
    return dict(tables)


def _sessions() -> list[list[Any]]:
    return [events for _, events in scripted_ops() + golden_ops()] + [_edge_events()]


def test_stored_rows_equal_the_converted_rows() -> None:
    """stored_rows_of builds the stored values straight from the events: table by table, the
    same values in the same order as converting every row of rows_of, for a scripted and a
    golden session and for values on every converter's slow path."""
    for events in _sessions():
        got = R.stored_table_rows(R.stored_rows_of(events))
        assert _per_table(got) == _per_table(_converted(events))
        assert all(type(values) is tuple for _, values in got)
    assert sum(len(R.stored_table_rows(R.stored_rows_of(events)))
               for events in _sessions()) > 50


def test_stored_rows_of_a_finished_order_give_its_values_once() -> None:
    """order_history and order_detail get one list of values (the store inserts it in both
    tables, or only in order_history when order_detail is its view)."""
    balances, orders, deals, user_deals, stops = R.stored_rows_of([_edge_events()[3]])
    assert (balances, deals, user_deals, stops) == ([], [], [], []) and len(orders) == 15
    rows = R.stored_table_rows((balances, orders, deals, user_deals, stops))
    assert [table for table, _ in rows] == [ORDER, DETAIL] and rows[0][1] == rows[1][1]
    assert orders[4] == "M" * 30 and orders[5] == R.NULL_SOURCE
    assert orders[8] == "9" * 22 + "." + "9" * 8


def _deals() -> list[Deal]:
    deals = [e for events in _sessions() for e in events if type(e) is Deal]
    assert len(deals) > 3
    return deals


def test_shared_decimal_texts_stay_right_past_their_size() -> None:
    """An order row's price, amount and fee rates are remembered by identity: every value,
    asked again in any order, past the number kept, as another order's price or fee rate (a
    column of another scale: 123456789012345678901234567 fits DECIMAL(30, 4) but not (30, 8)),
    gives its own column's text."""
    order = _edge_events()[4].order
    values = [D(n) / 7 for n in range(5_000)] + [D("123456789012345678901234567"), D("-0E-9")]
    orders = [order._replace(price=v, amount=values[-1 - i], taker_fee=v, maker_fee=values[i // 2])
              for i, v in enumerate(values)]
    for snapshot in orders + orders[::-1] + orders[::3]:
        assert R.stored_rows_of([OrderFinished(snapshot)])[1] == list(
            R.ROW_CONVERTERS[ORDER](R.order_row(OrderFinished(snapshot))))


def test_every_balance_group_kind_is_made() -> None:
    """The deals of the sessions (and edge deals with a fee on one side or none) make every
    kind of balance group, each binding its shared values once: 15 to 21 values for four to
    six rows instead of 28 to 42."""
    zero = {"ask_fee": D(0), "bid_fee": D(0)}
    deals = _deals() + [d._replace(**{side: D(0)}) for d in _deals() if d.ask_totals
                        for side in ("ask_fee", "bid_fee")] + [
        d._replace(**zero) for d in _deals() if d.ask_totals]
    kinds = {kind for d in deals for kind, _ in R.stored_rows_of([d])[0]}
    assert kinds == set(R.BALANCE_GROUPS.values())
    widths = {R.BALANCE_GROUPS[fees]: R.group_width(R.BALANCE_GROUPS[fees])
              for fees in R.BALANCE_GROUPS}
    assert widths == {R.BALANCE_GROUPS[False, False]: 15, R.BALANCE_GROUPS[True, False]: 18,
                      R.BALANCE_GROUPS[False, True]: 18, R.BALANCE_GROUPS[True, True]: 21}
    for d in deals:
        assert _per_table(R.stored_table_rows(R.stored_rows_of([d]))) == (
            _per_table(_converted([d])))


@pytest.mark.parametrize("kind", [R.DEAL_PAIR, R.USER_DEAL_PAIR, *R.BALANCE_GROUPS.values()])
def test_a_group_inserts_its_rows_binding_shared_values_once(kind: str) -> None:
    """The SQLite store inserts a deal's groups (rows.GROUPS) with numbered parameters: the
    table gets exactly the rows ``ungrouped`` gives, in order, one group per statement or many
    (full statements then the rest), each value of a group bound once."""
    zero = {"ask_fee": D(0), "bid_fee": D(0)}
    deals = _deals() + [d._replace(**{side: D(0)}) for d in _deals() if d.ask_totals
                        for side in ("ask_fee", "bid_fee")] + [
        d._replace(**zero) for d in _deals() if d.ask_totals]
    groups: list[tuple[Any, ...]] = []
    for d in deals:
        balances, _, deal_values, user_deal_values, _ = R.stored_rows_of([d])
        groups += [values for k, values in balances if k == kind]
        if kind == R.DEAL_PAIR and deal_values:
            groups.append(tuple(deal_values))
        if kind == R.USER_DEAL_PAIR and user_deal_values:
            groups.append(tuple(user_deal_values))
    assert groups and {len(values) for values in groups} == {R.group_width(kind)}
    table, layouts = R.GROUPS[kind]
    assert len(set(re.findall(r"\?(\d+)", S.group_insert_sql(kind)))) == R.group_width(kind)
    per_statement = S.ROWS_PER_INSERT // len(layouts)
    groups = (groups * (2 * per_statement // len(groups) + 2))[:2 * per_statement + 3]
    for count in (1, per_statement + 1, len(groups)):
        conn = sqlite3.connect(":memory:")
        for statement in S.schema():
            conn.execute(statement)
        written = S.insert_rows(conn, kind, [v for values in groups[:count] for v in values])
        names = ", ".join(f'"{name}"' for name, _ in R.TABLES[table])
        got = conn.execute(f'SELECT {names} FROM "{table}" ORDER BY "id"').fetchall()
        want = [row for values in groups[:count] for _, row in R.ungrouped(kind, values)]
        assert written == len(want) == len(layouts) * count and got == want
        conn.close()


def test_the_sqlite_store_writes_the_converted_rows_in_order(tmp_path: Any) -> None:
    """The SQLite store's tables, read in id order, hold table by table exactly the converted
    rows of ``rows_of`` in operation order, whatever the mix in one batch: deposits between
    deals, deals whose balance groups differ (a fee on both sides, one, none), orders, stops;
    written in one flush, and one operation per flush."""
    # a stop's id is its row's: each stop row once (the edge session's cancel is dropped)
    ops: list[list[Any]] = [[e for e in events if type(e) is not StopChanged
                             or e.event != STOP_EVENT_CANCEL] for events in _sessions()]
    no_stops = [[e for e in events if type(e) is not StopChanged] for events in ops]
    no_fee = [[d._replace(ask_fee=D(0), bid_fee=D(0))] for d in _deals() if d.ask_totals]
    one_fee = [[d._replace(bid_fee=D(0))] for d in _deals() if d.ask_totals]
    mixed = [x for trio in zip(no_fee, one_fee, no_stops, strict=False) for x in trio]
    ops = ops + mixed + no_stops
    want: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for events in ops:
        for table, values in _converted(events):
            want[table].append(values)
    for per_flush in (len(ops), 1):
        store = S.SqliteHistoryStore(tmp_path / f"flush{per_flush}")
        store.open()
        stored = [(i + 1, store.rows_of(events)) for i, events in enumerate(ops)]
        written = sum(store.write(stored[at:at + per_flush])
                      for at in range(0, len(stored), per_flush))
        assert written == sum(len(rows) for rows in want.values())
        store.close()
        conn = sqlite3.connect(store.path)
        for table in R.ALL_KINDS:
            names = ", ".join(f'"{name}"' for name, _ in R.TABLES[table])
            got = conn.execute(f'SELECT {names} FROM "{table}" ORDER BY "id"').fetchall()
            expected = want.get(table, [])
            if table in (ORDER, DETAIL, STOP):  # ids are the orders' and stops' own: the
                # sessions' orders share ids, the first write of one is kept
                first: dict[int, tuple[Any, ...]] = {}
                for values in expected:
                    first.setdefault(values[0], values)
                expected = [first[order_id] for order_id in sorted(first)]
            assert got == expected, table
        conn.close()


@pytest.mark.parametrize("duplicate_at", [0, 40, 70])
def test_a_failing_row_leaves_nothing_of_its_batch(tmp_path: Any, duplicate_at: int) -> None:
    """A row the database refuses (here a stop written twice: its id is the stop's) fails the
    whole batch, whatever the row's place in its statement (INSERT OR FAIL keeps the rows its
    statement wrote before it, the store's ROLLBACK drops them): no row of any table and no
    mark, and the batch can be written once the cause is gone."""
    stop = StopSnapshot(1, "BTCBCH", "api", 1, 1, 4, T0, T0 + 1, D(90), D(100), D("0.5"),
                        D("0.002"), D("0.001"), 0, "c", 2)
    deals = [[d] for d in _deals() if d.ask_totals]
    ops: list[list[Any]] = [deals[i % len(deals)] + [StopChanged(
        STOP_EVENT_ACTIVE, stop._replace(id=100 + i), 1, 0, "BTC", "BCH")] for i in range(80)]
    ops[duplicate_at + 1] = [StopChanged(STOP_EVENT_CANCEL, stop._replace(id=100 + duplicate_at),
                                         0, 0, "BTC", "BCH")]
    store = S.SqliteHistoryStore(tmp_path)
    store.open()
    batch = [(i + 1, store.rows_of(events)) for i, events in enumerate(ops)]
    with pytest.raises(HistoryStoreError, match="UNIQUE constraint failed: stop_history.id"):
        store.write(batch)
    assert store.read_mark() == 0
    conn = sqlite3.connect(store.path)
    for table in (BALANCE, ORDER, DEAL, USER_DEAL, STOP):
        assert conn.execute(f'SELECT count(*) FROM "{table}"').fetchone() == (0,), table
    conn.close()
    del batch[duplicate_at + 1]
    assert store.write(batch) > 0 and store.read_mark() == 80
    store.close()


def test_an_operation_without_rows_in_any_form_only_moves_the_mark(tmp_path: Any) -> None:
    """An operation given with no rows at all (an empty list, as a mark raised past rows
    written by others is stored) or with ``rows_of([])``'s empty tables stores no row and
    moves the mark."""
    store = S.SqliteHistoryStore(tmp_path)
    store.open()
    assert store.write([(7, []), (9, store.rows_of([]))]) == 0
    assert store.read_mark() == 9
    store.close()
