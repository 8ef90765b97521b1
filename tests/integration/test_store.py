"""EngineStore backends: every test runs on SQLite and on the real MariaDB (see conftest.py)."""

from __future__ import annotations

import os
import random
import sqlite3
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql.cursors
import pytest

from exchange_server.matchengine import store_sqlite
from exchange_server.matchengine.core.engine import EngineState
from exchange_server.matchengine.core.model import ASK, BID, LIMIT, Order, Side
from exchange_server.matchengine.logcodec import decode_detail, encode_detail
from exchange_server.matchengine.slicerows import SLICE_KINDS
from exchange_server.matchengine.store import (
    EngineStore,
    OperRecord,
    SliceInfo,
    StoreError,
    record_checksum,
)
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.storage import mysql as mysql_db

MakeStore = Callable[[], EngineStore]


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Opens a new store object on the same location each time it is called (to test
    reopening); all are closed at teardown."""
    factory: Callable[[], EngineStore]
    if request.param == "sqlite":
        directory = tmp_path / "data"

        def factory() -> EngineStore:
            return SqliteEngineStore(directory)
    else:
        cfg = request.getfixturevalue("mysql_config")("test_trade_log")

        def factory() -> EngineStore:
            return MysqlEngineStore(cfg)

    opened: list[EngineStore] = []

    def make() -> EngineStore:
        store = factory()
        store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> EngineStore:
    return make_store()


# -- helpers ------------------------------------------------------------------------------------

T0 = 1_700_000_000.0


def rec(oper_id: int, t: float | None = None, method: str = "update_balance",
        params: list[Any] | None = None) -> OperRecord:
    if params is None:
        params = [oper_id, "BTC", "deposit", oper_id, "1.5", {"n": oper_id}]
    return OperRecord(oper_id, T0 + oper_id * 0.001 if t is None else t, method, params)


def operlog_tables(store: EngineStore) -> dict[str, list[int]]:
    """MySQL only: operlog day table -> its ids."""
    assert isinstance(store, MysqlEngineStore)
    conn = mysql_db.connect(store.cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES LIKE 'operlog\\_%'")
            names = sorted(r[0] for r in cur.fetchall() if r[0] != "operlog_example")
            result = {}
            for name in names:
                cur.execute(f"SELECT id FROM `{name}` ORDER BY id")
                result[name] = [r[0] for r in cur.fetchall()]
        return result
    finally:
        conn.close()


def random_decimal(rng: random.Random) -> Decimal:
    choice = rng.random()
    if choice < 0.1:
        return Decimal(rng.choice(["0", "0E-8", "0E-16", "-0.00", "1E+3", "1.0E+5", "1E-30"]))
    digits = rng.randrange(1, 40)
    coefficient = rng.randrange(10**digits)
    exponent = rng.randrange(-32, 3)
    return Decimal(f"{coefficient}E{exponent}")


def random_time(rng: random.Random) -> float:
    return rng.choice([T0 + rng.random() * 1e6, rng.random(), float(rng.randrange(2**31)),
                       1700000000.123456789])


ODD_DECIMALS = [
    Decimal("25000.12"), Decimal("1.50000000"), Decimal("0.0020"), Decimal("0.0010"),
    Decimal("0.50000000"), Decimal("123456789012345678901234.123456789012345678901234567890"),
    Decimal("1E+3"), Decimal("1E-30"), Decimal("9" * 30), Decimal("0E-12"),
]


def order(oid: int, market: str, source: str | None, side: Side, user: int, ctime: float,
          mtime: float, decimals: list[Decimal]) -> Order:
    """A resting limit order with its nine decimals in slice column order."""
    price, amount, taker_fee, maker_fee, left, freeze, deal_stock, deal_money, deal_fee = decimals
    return Order(id=oid, market=market, source=source, type=LIMIT, side=side, user=user,
                 ctime=ctime, mtime=mtime, price=price, amount=amount, taker_fee=taker_fee,
                 maker_fee=maker_fee, left=left, freeze=freeze, deal_stock=deal_stock,
                 deal_money=deal_money, deal_fee=deal_fee)


def make_state(seed: int = 1, orders: int = 2500, balances: int = 3000,
               updates: int = 1200) -> EngineState:
    rng = random.Random(seed)
    state = EngineState(order_id=10**12 + seed, deal_id=2**63 - 1)
    sources: list[str | None] = [None, "", "web", "app-端末", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "x" * 30]
    state.orders.append(order(1, "BTCUSDT", "web", ASK, 7, 1700000000.123456, 1700000001.654321,
                              ODD_DECIMALS[:9]))
    state.orders.append(order(2**63 - 1, "m" * 30, None, BID, 2**32 - 1, 0.1, 5e-324,
                              ODD_DECIMALS[1:]))
    used = {1, 2**63 - 1}
    while len(state.orders) < orders:
        oid = rng.randrange(3, 2**40)
        if oid in used:
            continue
        used.add(oid)
        state.orders.append(order(
            oid, rng.choice(["BTCUSDT", "ETHBTC", "市场"]), rng.choice(sources),
            rng.choice([ASK, BID]), rng.randrange(1, 2**32), random_time(rng), random_time(rng),
            [random_decimal(rng) for _ in range(9)]))
    state.balances.extend((7, "BTC", kind, value) for kind, value in
                          [(1, Decimal("0.50000000")), (2, Decimal("1E-30"))])
    for _ in range(balances - 2):
        state.balances.append((rng.randrange(1, 2**32), rng.choice(["BTC", "USDT", "ETH"]),
                               rng.choice([1, 2]), random_decimal(rng)))
    state.updates.append((2**32 - 1, "BTC", "b" * 30, 2**64 - 1, 1700000000.987654321))
    state.updates.append((1, "USDT", "депозит", 0, 0.0))
    for _ in range(updates - 2):
        state.updates.append((rng.randrange(1, 2**32), rng.choice(["BTC", "USDT"]),
                              rng.choice(["deposit", "withdraw", "trade"]),
                              rng.randrange(2**64), random_time(rng)))
    return state


def assert_same_value(a: Any, b: Any, where: str) -> None:
    assert type(a) is type(b), f"{where}: {a!r} vs {b!r}"
    assert a == b, f"{where}: {a!r} vs {b!r}"
    assert repr(a) == repr(b), f"{where}: {a!r} vs {b!r}"  # Decimal exponent, float -0.0


def assert_same_state(got: EngineState, want: EngineState) -> None:
    assert (got.order_id, got.deal_id) == (want.order_id, want.deal_id)
    assert len(got.orders) == len(want.orders)
    for go, wo in zip(sorted(got.orders, key=lambda o: o.id),
                      sorted(want.orders, key=lambda o: o.id), strict=True):
        for field in Order.__slots__:
            assert_same_value(getattr(go, field), getattr(wo, field), f"order {wo.id}.{field}")
    assert len(got.balances) == len(want.balances)
    for i, (g, w) in enumerate(zip(got.balances, want.balances, strict=True)):
        for j, (gv, wv) in enumerate(zip(g, w, strict=True)):
            assert_same_value(gv, wv, f"balance {i}[{j}]")
    assert len(got.updates) == len(want.updates)
    for i, (gu, wu) in enumerate(zip(got.updates, want.updates, strict=True)):
        for j, (gv, wv) in enumerate(zip(gu, wu, strict=True)):
            assert_same_value(gv, wv, f"update {i}[{j}]")


def info_at(t: int, seed: int = 0) -> SliceInfo:
    return SliceInfo(time=t, end_oper_id=1000 + seed, end_order_id=2000 + seed,
                     end_deals_id=3000 + seed)


# -- operation log ------------------------------------------------------------------------------


def test_detail_is_compact_json_in_the_clients_key_order() -> None:
    # history is rebuilt from the log: a balance.update detail keeps the client's key order
    assert encode_detail("limit_order", [{"b": 1, "a": {"d": 2, "c": 3}}, "é"]) == (
        '{"method":"limit_order","params":[{"b":1,"a":{"d":2,"c":3}},"é"]}')
    assert encode_detail("x", [2**70]) == '{"method":"x","params":[1180591620717411303424]}'


@pytest.mark.parametrize("params", [
    [{"z": 2**64, "a": -2**63 - 1, "m": [2**64 - 1, -2**63, 10**30]}],
    [1, "BTC", "deposit", 2**64 - 1, "1", {"b": {"y": 1, "x": 2}, "a": "é\u0000"}],
    [{"n": 1.5, "s": "12345678901234567890", "f": 1e300}],
])
def test_detail_round_trips_exactly(params: list[Any]) -> None:
    method, back = decode_detail(encode_detail("update_balance", params), 7)
    assert method == "update_balance"
    assert back == params
    assert [type(v) for v in _leaves(back)] == [type(v) for v in _leaves(params)]
    assert encode_detail(method, back) == encode_detail("update_balance", params)


def _leaves(value: Any) -> list[Any]:
    stack: list[Any] = [value]
    out: list[Any] = []
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            out.extend(item)  # keys, in order
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            out.append(item)
    return out


@pytest.mark.parametrize("text", [
    '{"method":"x","params":[' + "[" * 1000 + "]" * 1000 + "]}",
    '{"method":"x","params":[18446744073709551615,' + "[" * 980 + "]" * 980 + "]}",
    '{"method":"x","params":[1,',
    '{"method":"x"}',
])
def test_undecodable_detail_is_a_store_error_naming_the_id(text: str) -> None:
    with pytest.raises(StoreError, match="operlog id 42"):
        decode_detail(text, 42)


def test_append_read_round_trip(store: EngineStore) -> None:
    records = [
        rec(1),
        rec(2, 1700000000.123456789, "limit_order",
            [7, "BTCUSDT", 1, "0.50000000", "25000.1", "0.002", "0.001", "web ✓ 中文 🚀"]),
        rec(3, 1700000000.5, "update_balance",
            [7, "BTC", "deposit", 2**64 - 1, "-1E-8",
             {"z": [1, 2.5, None, True, False, {"y": "ü", "x": -2**63}], "a": {"b": {"c": []}}}]),
        rec(4, 1700000001.0, "market_order", [2**32 - 1, "ETHBTC", 2, "1e+3", "0", ""]),
        rec(5, 1700000002.25, "cancel_order", [1, "BTCUSDT", 2**70]),
        rec(6, 1700000003.1, "weird", [0.1, 1e300, -0.0, 123456789.987654321, "\\\"'%s\x00\n"]),
        # plain params (what replay reads with orjson alone) around orjson's integer range
        rec(7, 1700000004.0, "cancel_order", [2**64 - 1, -2**63, "123456789012345678901234",
                                              True, None, 10**18]),
        rec(8, 1700000005.0, "cancel_order", [2**64, "x"]),
        rec(9, 1700000006.0, "cancel_order", [-2**63 - 1, 1]),
    ]
    store.append(records[:1])
    store.append(records[1:])
    got = list(store.read_operlog(0))
    assert got == records
    for g, w in zip(got, records, strict=True):
        assert repr(g.time) == repr(w.time)
        assert_same_json(g.params, w.params)  # ints stay ints, exactly


def assert_same_json(a: Any, b: Any) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for key in a:
            assert_same_json(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_json(x, y)
    else:
        assert repr(a) == repr(b)


def test_read_operlog_boundaries(store: EngineStore) -> None:
    assert list(store.read_operlog(0)) == []
    records = [rec(i) for i in range(1, 11)]
    store.append(records)
    assert list(store.read_operlog(0)) == records
    assert list(store.read_operlog(1)) == records[1:]
    assert list(store.read_operlog(5)) == records[5:]
    assert list(store.read_operlog(9)) == records[9:]
    assert list(store.read_operlog(10)) == []
    assert list(store.read_operlog(1000)) == []


def test_last_oper_id(store: EngineStore) -> None:
    assert store.last_oper_id() == 0
    store.append([rec(1), rec(2)])
    assert store.last_oper_id() == 2
    store.append([rec(3)])
    assert store.last_oper_id() == 3
    store.append([])
    assert store.last_oper_id() == 3


def test_append_many_records(store: EngineStore) -> None:
    rng = random.Random(5)
    next_id = 1
    while next_id <= 10_000:
        size = min(rng.choice([1, 7, 100, 999, 1000, 1001, 2500]), 10_001 - next_id)
        store.append([rec(i) for i in range(next_id, next_id + size)])
        next_id += size
    assert store.last_oper_id() == 10_000
    ids = [r.id for r in store.read_operlog(0)]
    assert ids == list(range(1, 10_001))
    tail = list(store.read_operlog(8_999))
    assert tail == [rec(i) for i in range(9_000, 10_001)]


def test_append_retry_is_idempotent(store: EngineStore) -> None:
    store.append([rec(1), rec(2), rec(3)])
    store.append([rec(2), rec(3)])  # a retried batch that had committed
    store.append([rec(3), rec(4), rec(5)])  # ... with new records added to it
    assert list(store.read_operlog(0)) == [rec(i) for i in range(1, 6)]
    with pytest.raises(StoreError, match="different"):
        store.append([rec(5, params=["other"]), rec(6)])
    assert store.last_oper_id() == 5
    store.append([rec(6)])
    assert [r.id for r in store.read_operlog(0)] == list(range(1, 7))


class _Recorder:
    """Stands for the store's log connection, noting each statement it runs (an INSERT as
    ``INSERT <rows>``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.seen: list[str] = []

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if sql.startswith("INSERT INTO operlog"):
            assert sql == store_sqlite.insert_sql(len(params) // 4)
            self.seen.append(f"INSERT {len(params) // 4}")
        else:
            self.seen.append(sql)
        return self.conn.execute(sql, params)

    def close(self) -> None:
        self.conn.close()


def _sqlite_statements(store: SqliteEngineStore) -> list[str]:
    """Every statement the store's log connection runs from now on."""
    recorder = _Recorder(store._log_conn())
    store._log = recorder  # type: ignore[assignment]
    return recorder.seen


def test_sqlite_append_is_one_transaction_of_multi_row_inserts(tmp_path: Path) -> None:
    """A batch is one BEGIN IMMEDIATE ... COMMIT of INSERTs of at most INSERT_ROWS rows each
    (not a statement per row: see SqliteEngineStore._insert), and the rows are stored exactly
    as before: id, time, the detail text and its checksum."""
    store = SqliteEngineStore(tmp_path / "data")
    store.open()
    try:
        seen = _sqlite_statements(store)
        size = 2 * store_sqlite.INSERT_ROWS + 5
        records = [rec(i) for i in range(1, size + 1)]
        store.append(records)
        rows = [64, 64, 5] if store_sqlite.INSERT_ROWS == 64 else None
        assert seen == ["BEGIN IMMEDIATE", *(f"INSERT {n}" for n in rows or []), "COMMIT"]
        store.append(records[:1] + [rec(size + 1)])  # a retry with one new record
        assert seen[-1] == "COMMIT" and seen[-2] == "INSERT 1"
        stored = store._log_conn().execute(
            "SELECT id, time, detail, checksum FROM operlog ORDER BY id").fetchall()
        expected = [rec(i) for i in range(1, size + 2)]
        assert stored == [
            (r.id, r.time, encode_detail(r.method, r.params),
             record_checksum(r.id, r.time, encode_detail(r.method, r.params)))
            for r in expected]
        assert list(store.read_operlog(0)) == expected
    finally:
        store.close()


def test_sqlite_append_of_several_inserts_is_all_or_nothing(tmp_path: Path) -> None:
    """A batch over several INSERTs that fails in its last one leaves none of its rows: the
    first INSERT's rows roll back with it."""
    store = SqliteEngineStore(tmp_path / "data")
    store.open()
    try:
        store.append([rec(1), rec(2)])
        batch = [rec(i) for i in range(3, 3 + store_sqlite.INSERT_ROWS + 10)]
        with pytest.raises(StoreError, match="different"):
            store.append([*batch, rec(2, params=["other"])])
        assert store.last_oper_id() == 2
        store.append(batch)  # retried without the bad record, across two INSERTs again
        assert list(store.read_operlog(0)) == [rec(1), rec(2), *batch]
    finally:
        store.close()


def test_sqlite_multi_row_insert_stores_what_a_row_insert_stored(tmp_path: Path) -> None:
    """The multi-row INSERTs store each value as the one-row INSERT they replaced did (same
    types after the columns' affinities, same text): an integer time as REAL, NUL and
    non-ASCII in the detail, 64-bit checksums.  A retry of a batch over several INSERTs whose
    first rows had committed stores just the rest."""
    store = SqliteEngineStore(tmp_path / "data")
    store.open()
    try:
        size = 2 * store_sqlite.INSERT_ROWS + 5
        records = [rec(i, t=1_700_000_000 + i if i % 3 == 0 else None,
                       params=[i, "é\u0000\U0001f600", 2**64 - 1, -0.0, 1e300])
                   for i in range(1, size + 1)]
        head = store_sqlite.INSERT_ROWS + 6
        store.append(records[:head])
        seen = _sqlite_statements(store)
        store.append(records)  # retried: the first ``head`` records had committed
        rest = size - head
        assert seen[-3:] == ["BEGIN IMMEDIATE", f"INSERT {rest}", "COMMIT"]
        query = ("SELECT id, typeof(time), time, typeof(detail), hex(detail), typeof(checksum),"
                 " checksum FROM operlog ORDER BY id")
        stored = store._log_conn().execute(query).fetchall()
    finally:
        store.close()
    reference = sqlite3.connect(":memory:")
    reference.execute("CREATE TABLE operlog (id INTEGER PRIMARY KEY, time REAL NOT NULL,"
                      " detail TEXT NOT NULL, checksum INTEGER)")
    details = [encode_detail(r.method, r.params) for r in records]
    reference.executemany(
        "INSERT INTO operlog (id, time, detail, checksum) VALUES (?, ?, ?, ?)",
        [(r.id, r.time, d, record_checksum(r.id, r.time, d)) for r, d in zip(records, details,
                                                                             strict=True)])
    assert stored == reference.execute(query).fetchall()
    reference.close()


def test_sqlite_append_failing_in_its_retry_leaves_nothing(tmp_path: Path) -> None:
    """A batch refused by a constraint (a NaN time binds as NULL) fails in its first INSERTs
    and again in the retry's: StoreError, and none of its rows, in any INSERT, is stored."""
    store = SqliteEngineStore(tmp_path / "data")
    store.open()
    try:
        store.append([rec(1)])
        batch = [rec(i) for i in range(2, 2 + store_sqlite.INSERT_ROWS + 10)]
        with pytest.raises(StoreError, match="append failed"):
            store.append([*batch, rec(len(batch) + 2, t=float("nan"))])
        assert store.last_oper_id() == 1
        store.append(batch)
        assert list(store.read_operlog(0)) == [rec(1), *batch]
    finally:
        store.close()


def test_sqlite_insert_sql() -> None:
    assert store_sqlite.insert_sql(1) == (
        "INSERT INTO operlog (id, time, detail, checksum) VALUES (?, ?, ?, ?)")
    assert store_sqlite.insert_sql(3).endswith(" VALUES (?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?)")
    assert store_sqlite.insert_sql(3) is store_sqlite.insert_sql(3)  # made once per size
    # a full INSERT binds far fewer parameters than SQLite allows (32,766 since 3.32)
    assert store_sqlite.INSERT_ROWS * 4 <= 32_766


def _next_local_midnight() -> float:
    return datetime.combine(date.today() + timedelta(days=1), datetime.min.time()).timestamp()


@pytest.fixture
def utc_plus_0530(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local time zone whose dates differ from UTC's for part of the day."""
    monkeypatch.setenv("TZ", "XST-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("utc_plus_0530")
def test_records_spanning_two_local_days(store: EngineStore) -> None:
    midnight = _next_local_midnight()
    day1 = time.strftime("%Y%m%d", time.localtime(midnight - 1))
    day2 = time.strftime("%Y%m%d", time.localtime(midnight + 1))
    assert day1 != day2
    records = [rec(1, midnight - 7200.5), rec(2, midnight - 0.25), rec(3, midnight),
               rec(4, midnight + 0.5)]
    store.append(records[:1])
    store.append(records[1:])  # one batch across midnight
    # the clock steps back across midnight: a newer id lands in the older day's table
    more = [rec(5, midnight + 1.0), rec(6, midnight - 0.1), rec(7, midnight + 2.0)]
    store.append(more)
    records += more
    assert list(store.read_operlog(0)) == records
    assert list(store.read_operlog(2)) == records[2:]
    assert list(store.read_operlog(5)) == records[5:]
    assert store.last_oper_id() == 7
    if isinstance(store, MysqlEngineStore):
        assert operlog_tables(store) == {f"operlog_{day1}": [1, 2, 6],
                                         f"operlog_{day2}": [3, 4, 5, 7]}


# -- slices -------------------------------------------------------------------------------------


def test_slice_round_trip(store: EngineStore) -> None:
    state = make_state()
    info = info_at(1_700_000_000)
    assert store.latest_slice() is None
    store.write_slice_data(info, state)
    assert store.latest_slice() is None  # not published yet
    store.publish_slice(info)
    assert store.latest_slice() == info
    assert store.list_slices() == [info]
    assert_same_state(store.read_slice(info), _with_counters(make_state(), info))


def test_empty_slice(store: EngineStore) -> None:
    info = SliceInfo(time=5, end_oper_id=0, end_order_id=0, end_deals_id=0)
    store.write_slice_data(info, EngineState())
    store.publish_slice(info)
    assert_same_state(store.read_slice(info), EngineState())


def test_unpublished_slice_is_not_visible(store: EngineStore) -> None:
    old = info_at(1000)
    store.write_slice_data(old, make_state(1, 10, 10, 10))
    store.publish_slice(old)
    store.write_slice_data(info_at(2000), make_state(2, 10, 10, 10))
    assert store.latest_slice() == old
    assert store.list_slices() == [old]
    # rewriting a published slice's time withdraws it until it is published again
    store.write_slice_data(old, make_state(3, 10, 10, 10))
    assert store.latest_slice() is None
    store.publish_slice(old)
    assert_same_state(store.read_slice(old), _with_counters(make_state(3, 10, 10, 10), old))


def test_latest_slice_is_the_newest(store: EngineStore) -> None:
    infos = [info_at(t, seed=i) for i, t in enumerate([100, 200, 300])]
    for i, info in enumerate(infos):
        store.write_slice_data(info, make_state(i, 5, 5, 5))
        store.publish_slice(info)
        assert store.latest_slice() == info
    assert store.list_slices() == infos
    for i, info in enumerate(infos):
        assert_same_state(store.read_slice(info), _with_counters(make_state(i, 5, 5, 5), info))
    # publishing the same time again replaces its history row
    again = SliceInfo(200, 9, 9, 9)
    store.publish_slice(again)
    assert store.latest_slice() == again
    assert store.list_slices() == [infos[0], infos[2], again]


def _with_counters(state: EngineState, info: SliceInfo) -> EngineState:
    state.order_id = info.end_order_id
    state.deal_id = info.end_deals_id
    return state


def test_delete_old_slices(store: EngineStore) -> None:
    infos = [info_at(t) for t in (1000, 2000, 3000)]
    for info in infos:
        store.write_slice_data(info, make_state(1, 3, 3, 3))
        store.publish_slice(info)
    store.delete_old_slices(now=10_000, keeptime=1000)  # nothing recent enough: keep all
    assert store.list_slices() == infos
    store.delete_old_slices(now=3500, keeptime=1000)
    assert store.list_slices() == infos[2:]
    assert store.latest_slice() == infos[2]
    for gone in infos[:2]:
        with pytest.raises(StoreError):
            store.read_slice(gone)
    store.read_slice(infos[2])
    store.delete_slice(infos[2])
    assert store.list_slices() == []
    assert store.latest_slice() is None
    store.delete_slice(infos[2])  # deleting twice is harmless


def slice_db(store: EngineStore, sql: str) -> list[tuple[Any, ...]]:
    """One statement on the store's slice tables through a connection of the test's own."""
    if isinstance(store, MysqlEngineStore):
        conn = mysql_db.connect(store.cfg)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()
    assert isinstance(store, SqliteEngineStore)
    db = sqlite3.connect(str(store.slice_path), isolation_level=None)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def slice_tables(store: EngineStore) -> set[str]:
    """The slice tables as the database lists them (templates and slice_history left out)."""
    sql = ("SHOW TABLES LIKE 'slice\\_%'" if isinstance(store, MysqlEngineStore) else
           "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'slice_%'")
    return {r[0] for r in slice_db(store, sql)
            if r[0] != "slice_history" and "example" not in r[0]}


def test_drop_unpublished_slices(store: EngineStore) -> None:
    """What a slice writer killed before publishing leaves (tables, no history row) goes once
    older than ``before``; published slices and younger unpublished ones stay."""
    published = [info_at(t) for t in (1000, 3000)]
    for info in published:
        store.write_slice_data(info, make_state(1, 3, 3, 3))
        store.publish_slice(info)
    store.write_slice_data(info_at(2000), make_state(2, 3, 3, 3))  # killed before publishing
    store.write_slice_data(info_at(4000), make_state(3, 3, 3, 3))  # still being written
    store.write_slice_data(info_at(2500), make_state(4, 3, 3, 3))
    for kind in ("state", "config", "stop"):  # killed while writing its tables: some are made
        slice_db(store, f"DROP TABLE slice_{kind}_2500")
    assert store.drop_unpublished_slices(before=1000) == []
    assert store.drop_unpublished_slices(before=4000) == [2000, 2500]
    assert {int(n.rsplit("_", 1)[1]) for n in slice_tables(store)} == {1000, 3000, 4000}
    assert len(slice_tables(store)) == 3 * len(SLICE_KINDS)
    assert store.list_slices() == published
    for info in published:
        assert_same_state(store.read_slice(info), _with_counters(make_state(1, 3, 3, 3), info))
    assert store.drop_unpublished_slices(before=4000) == []
    store.publish_slice(info_at(4000))  # the younger one was left whole
    assert_same_state(store.read_slice(info_at(4000)),
                      _with_counters(make_state(3, 3, 3, 3), info_at(4000)))


def test_read_missing_slice_fails(store: EngineStore) -> None:
    with pytest.raises(StoreError):
        store.read_slice(info_at(42))


def test_clone_writes_a_slice_in_a_forked_child(store: EngineStore) -> None:
    store.append([rec(1), rec(2)])
    assert store.latest_slice() is None  # the parent has used its connection
    info = SliceInfo(time=1_700_000_123, end_oper_id=2, end_order_id=10**12 + 7,
                     end_deals_id=2**63 - 1)
    state = _with_counters(make_state(7), info)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            child = store.clone()
            child.open()
            child.write_slice_data(info, state)
            child.publish_slice(info)
            child.close()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.latest_slice() == info
    assert_same_state(store.read_slice(info), _with_counters(make_state(7), info))
    store.append([rec(3)])  # the parent's connection still works
    assert [r.id for r in store.read_operlog(0)] == [1, 2, 3]


def test_reopen_keeps_data(make_store: MakeStore) -> None:
    first = make_store()
    first.open()  # opening again is harmless
    records = [rec(i) for i in range(1, 1501)]
    first.append(records)
    info = info_at(1_700_000_000)
    state = _with_counters(make_state(3, 50, 50, 50), info)
    first.write_slice_data(info, state)
    first.publish_slice(info)
    first.close()
    second = make_store()
    assert second.last_oper_id() == 1500
    assert list(second.read_operlog(1400)) == records[1400:]
    assert second.latest_slice() == info
    assert_same_state(second.read_slice(info), _with_counters(make_state(3, 50, 50, 50), info))
    second.append([rec(1501)])
    assert second.last_oper_id() == 1501


# -- MySQL only ---------------------------------------------------------------------------------


@pytest.mark.mysql
def test_mysql_reconnects_after_a_lost_connection(mysql_config: Callable[..., Any]) -> None:
    cfg = mysql_config("test_trade_log")
    store = MysqlEngineStore(cfg)
    store.open()
    try:
        store.append([rec(1)])
        admin = mysql_db.connect(cfg)
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT id FROM information_schema.processlist"
                            " WHERE db = %s AND id <> CONNECTION_ID()", (cfg.name,))
                for (thread_id,) in cur.fetchall():
                    cur.execute(f"KILL {int(thread_id)}")
        finally:
            admin.close()
        with pytest.raises(StoreError):
            store.append([rec(2)])
        store.append([rec(2)])  # the next call reconnects
        assert [r.id for r in store.read_operlog(0)] == [1, 2]
    finally:
        store.close()


@pytest.mark.mysql
def test_mysql_takes_over_the_original_layout(mysql_config: Callable[..., Any]) -> None:
    """An original ViaBTC's trade_log (templates without ``exact``) is taken over, not refused:
    the takeover point is its last logged operation, its slice templates are kept aside and
    ours made, its newest operlog table holds our records; a second open changes nothing."""
    cfg = mysql_config("test_trade_log")
    mysql_db.ensure_database(cfg)
    conn = mysql_db.connect(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE slice_order_example (id BIGINT UNSIGNED PRIMARY KEY,"
                        " price DECIMAL(30,8) NOT NULL) DEFAULT CHARSET=utf8mb3")
            cur.execute("CREATE TABLE operlog_20261130 (id BIGINT UNSIGNED PRIMARY KEY,"
                        " time DOUBLE NOT NULL, detail TEXT) DEFAULT CHARSET=utf8mb3")
            cur.execute("INSERT INTO operlog_20261130 VALUES (1, 1796000000.5, %s),"
                        " (2, 1796000001.5, %s)",
                        (encode_detail("cancel_order", [1, "BTCBCH", 1]),
                         encode_detail("cancel_order", [1, "BTCBCH", 2])))
        conn.commit()
    finally:
        conn.close()
    for _ in range(2):
        store = MysqlEngineStore(cfg)
        store.open()
        try:
            assert store.takeover_point() == 2
            store.append([OperRecord(3, 1796000002.5, "update_balance",
                                     [1, "BTC", "deposit", 1, "1", {"note": "\U0001f600" * 30000}])])
            assert [r.id for r in store.read_operlog(0)] == [1, 2, 3]
        finally:
            store.close()
    conn = mysql_db.connect(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW COLUMNS FROM slice_order_example_viabtc")
            assert [r[0] for r in cur.fetchall()] == ["id", "price"]
            cur.execute("SHOW COLUMNS FROM slice_order_example")
            assert "exact" in {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def _count_queries(monkeypatch: pytest.MonkeyPatch, store: MysqlEngineStore) -> list[bytes]:
    """The commands the store's connection sends from now on (as bytes): every query, BEGIN,
    COMMIT and ROLLBACK goes through ``_execute_command``."""
    conn = store._connection()
    sent: list[bytes] = []
    real = conn._execute_command

    def execute_command(command: int, sql: str | bytes) -> None:
        sent.append(sql if isinstance(sql, bytes) else sql.encode())
        real(command, sql)

    monkeypatch.setattr(conn, "_execute_command", execute_command)
    return sent


def _stored_ids(cfg: Any) -> list[int]:
    """The operlog ids another connection sees committed."""
    other = MysqlEngineStore(cfg)
    try:
        return [r.id for r in other.read_operlog(0)]
    finally:
        other.close()


@pytest.mark.mysql
def test_mysql_append_is_one_round_trip(mysql_config: Callable[..., Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of up to 1,000 records is one query, its INSERT and the COMMIT (no BEGIN): each
    round trip waited milliseconds on the loaded topology.  Committed when append returns."""
    cfg = mysql_config("test_trade_log")
    store = MysqlEngineStore(cfg)
    store.open()
    try:
        store.append([rec(1)])  # creates the day's table
        sent = _count_queries(monkeypatch, store)
        store.append([rec(i) for i in range(2, 1002)])
        assert len(sent) == 1 and sent[0].endswith(b"; COMMIT")
        assert _stored_ids(cfg) == list(range(1, 1002))
        sent.clear()
        store.append([rec(i) for i in range(1002, 2503)])  # 1,501 rows: two statements
        assert len(sent) == 2 and sent[-1].endswith(b"; COMMIT")
        assert not sent[0].endswith(b"COMMIT")
        assert _stored_ids(cfg) == list(range(1, 2503))
    finally:
        store.close()


@pytest.mark.mysql
def test_mysql_append_splits_statements_at_max_stmt_length(
        mysql_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Statements stay within the cursor's ``max_stmt_length`` as ``executemany``'s did."""
    cfg = mysql_config("test_trade_log")
    store = MysqlEngineStore(cfg)
    store.open()
    try:
        store.append([rec(1)])
        sent = _count_queries(monkeypatch, store)
        monkeypatch.setattr(pymysql.cursors.Cursor, "max_stmt_length", 2000)
        store.append([rec(i) for i in range(2, 52)])
        assert len(sent) > 2
        assert all(len(sql) <= 2000 for sql in sent[:-1])
        assert len(sent[-1]) <= 2000 + len(b"; COMMIT")
        assert list(store.read_operlog(0)) == [rec(i) for i in range(1, 52)]
    finally:
        store.close()


@pytest.mark.mysql
def test_mysql_failed_last_statement_commits_nothing(mysql_config: Callable[..., Any]) -> None:
    """The COMMIT rides on the last INSERT: when that INSERT fails, the batch's earlier
    statements (1,000 new rows) are rolled back with it, and the connection stays usable."""
    cfg = mysql_config("test_trade_log")
    store = MysqlEngineStore(cfg)
    store.open()
    try:
        store.append([rec(2000)])
        with pytest.raises(StoreError, match="different"):
            store.append([rec(i) for i in range(1, 1001)] + [rec(2000, params=["other"])])
        assert _stored_ids(cfg) == [2000]
        store.append([rec(1)])
        assert _stored_ids(cfg) == [1, 2000]
    finally:
        store.close()


@pytest.mark.mysql
def test_mysql_append_without_multi_statements(mysql_config: Callable[..., Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection made without the multi-statement flag commits with a second query."""
    cfg = mysql_config("test_trade_log")
    real = mysql_db.connect

    def single(*args: Any, **kwargs: Any) -> Any:
        kwargs["multi_statements"] = False
        return real(*args, **kwargs)

    monkeypatch.setattr(mysql_db, "connect", single)
    store = MysqlEngineStore(cfg)
    store.open()
    try:
        store.append([rec(1)])
        sent = _count_queries(monkeypatch, store)
        store.append([rec(2), rec(3)])
        assert len(sent) == 2 and sent[0].startswith(b"INSERT") and sent[1] == b"COMMIT"
        assert _stored_ids(cfg) == [1, 2, 3]
    finally:
        store.close()
