"""readhistory (rpc.md section 5) on SQLite and on the real MariaDB: result shapes and key order,
filters, paging, parameter reading and errors."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import MysqlConfig
from exchange_server.history.store import HistoryStoreError
from exchange_server.history.writer import HistoryWriter
from exchange_server.readhistory.reader import MysqlHistoryReader, SqliteHistoryReader
from exchange_server.readhistory.service import ReadHistoryService
from tests.support.history_support import T0, HistoryBackend, mysql_drop, scripted_ops
from tests.support.waiting import wait_until_async


def body(raw: bytes) -> Any:
    return json.loads(raw)


async def call(service: ReadHistoryService, method: str, params: list[Any]) -> Any:
    reply = body(await service.call(method, params, 7))
    assert list(reply) == ["error", "result", "id"] and reply["id"] == 7
    if reply["error"] is not None:
        return ("error", reply["error"]["code"], reply["error"]["message"])
    return reply["result"]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def stored(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HistoryBackend, Any]]:
    """The scripted session's history, stored once per backend for the whole module (the
    service only reads)."""
    made: list[MysqlConfig] = []

    def make_mysql_config(prefix: str) -> MysqlConfig:
        server: MysqlConfig = request.getfixturevalue("mysql_server")
        cfg = MysqlConfig(host=server.host, port=server.port, user=server.user,
                          password=server.password, name=f"{prefix}_{uuid.uuid4().hex[:12]}")
        made.append(cfg)
        return cfg

    backend = HistoryBackend(request.param, tmp_path_factory.mktemp("readhistory"),
                             make_mysql_config)
    location = backend.new_location()
    writer = HistoryWriter(backend.store(location))
    writer.durable_mark()
    for oper_id, events in scripted_ops():
        writer.on_events(oper_id, events)
    writer.flush_now()
    yield backend, location
    backend.close()
    for cfg in made:
        mysql_drop(cfg)


@pytest.fixture
def service(stored: tuple[HistoryBackend, Any]) -> Iterator[ReadHistoryService]:
    backend, location = stored
    svc = ReadHistoryService(backend.reader(location), worker_num=3)
    yield svc
    svc.close()


def _trade(order_id: int, price: str, amount: str, fee: str | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"a": amount}
    if fee is not None:
        detail["f"] = fee
    detail.update({"i": order_id, "m": "BTCBCH", "p": price})
    return detail


def bal(t: float, asset: str, business: str, change: str, balance: str,
        detail: dict[str, Any]) -> dict[str, Any]:
    return {"time": t, "asset": asset, "business": business, "change": change,
            "balance": balance, "detail": detail}


#: user 1's balance history, newest first
USER1 = [
    bal(T0 + 10, "BCH", "trade", "-0.072", "185.778", _trade(5, "90", "0.4", "0.002")),
    bal(T0 + 10, "BCH", "trade", "36", "185.85", _trade(5, "90", "0.4")),
    bal(T0 + 10, "BTC", "trade", "-0.4", "8.1", _trade(5, "90", "0.4")),
    bal(T0 + 5, "BCH", "trade", "-0.15", "149.85", _trade(1, "100", "1.5", "0.001")),
    bal(T0 + 5, "BCH", "trade", "150", "150", _trade(1, "100", "1.5")),
    bal(T0 + 5, "BTC", "trade", "-1.5", "8.5", _trade(1, "100", "1.5")),
    bal(T0 + 1, "BTC", "deposit", "10", "10", {"k": "v", "id": 1}),
]

ORDER5 = {"id": 5, "ctime": T0 + 10, "ftime": T0 + 10, "user": 1, "market": "BTCBCH",
          "source": "m1", "type": 2, "side": 1, "price": "0", "amount": "0.4", "taker_fee": "0.002",
          "maker_fee": "0", "deal_stock": "0.4", "deal_money": "36", "deal_fee": "0.072"}
ORDER1 = {"id": 1, "ctime": T0 + 4, "ftime": T0 + 5, "user": 1, "market": "BTCBCH",
          "source": "s1", "type": 1, "side": 1, "price": "100", "amount": "2", "taker_fee": "0.002",
          "maker_fee": "0.001", "deal_stock": "1.5", "deal_money": "150", "deal_fee": "0.15"}
ORDER2 = {"id": 2, "ctime": T0 + 5, "ftime": T0 + 5, "user": 2, "market": "BTCBCH",
          "source": "s2", "type": 1, "side": 2, "price": "101", "amount": "1.5",
          "taker_fee": "0.002", "maker_fee": "0.001", "deal_stock": "1.5", "deal_money": "150",
          "deal_fee": "0.003"}


def keys(value: Any) -> Any:
    """The key order of every object inside ``value``."""
    if isinstance(value, dict):
        return [(k, keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [keys(v) for v in value]
    return None


def same(got: Any, want: Any) -> None:
    assert got == want
    assert keys(got) == keys(want)


# -- balance.history ------------------------------------------------------------------------------


async def test_balance_history(service: ReadHistoryService) -> None:
    got = await call(service, "balance.history", [1, "", "", 0, 0, 0, 100])
    same(got, {"offset": 0, "limit": 100, "records": USER1})


@pytest.mark.parametrize("asset,business,start,end,expect", [
    ("BCH", "", 0, 0, [0, 1, 3, 4]),
    ("BTC", "", 0, 0, [2, 5, 6]),
    ("", "deposit", 0, 0, [6]),
    ("", "trade", 0, 0, [0, 1, 2, 3, 4, 5]),
    ("BTC", "trade", 0, 0, [2, 5]),
    ("BTC", "withdraw", 0, 0, []),
    ("btc", "", 0, 0, []),                       # case-sensitive (binary collation)
    ("", "", int(T0) + 5, int(T0) + 10, [3, 4, 5]),  # time >= start, time < end
    ("", "", int(T0) + 5, 0, [0, 1, 2, 3, 4, 5]),
    ("", "", 0, int(T0) + 5, [6]),
    ("", "", int(T0) + 6, int(T0) + 6, []),
    ("BCH", "trade", int(T0) + 5, int(T0) + 11, [0, 1, 3, 4]),
])
async def test_balance_history_filters(service: ReadHistoryService, asset: str, business: str,
                                       start: int, end: int, expect: list[int]) -> None:
    got = await call(service, "balance.history", [1, asset, business, start, end, 0, 101])
    assert got["records"] == [USER1[i] for i in expect]


@pytest.mark.parametrize("offset,limit", [(0, 1), (0, 3), (3, 3), (6, 3), (7, 3), (100, 101),
                                          (2, 101)])
async def test_balance_history_paging(service: ReadHistoryService, offset: int, limit: int) -> None:
    got = await call(service, "balance.history", [1, "", "", 0, 0, offset, limit])
    same(got, {"offset": offset, "limit": limit, "records": USER1[offset:offset + limit]})


async def test_balance_history_other_users(service: ReadHistoryService) -> None:
    got = await call(service, "balance.history", [2, "BCH", "", 0, 0, 0, 10])
    assert [(r["change"], r["balance"], r["business"]) for r in got["records"]] == [
        ("-50.12345678", "799.87654322", "withdraw"), ("-150", "850", "trade"),
        ("1000", "1000", "deposit")]
    assert (await call(service, "balance.history", [4, "", "", 0, 0, 0, 10]))["records"] == []
    huge = await call(service, "balance.history", [2**32 - 1, "", "", 0, 0, 0, 10])
    assert huge["records"] == []


# -- order.finished / order.finished_detail -------------------------------------------------------


async def test_order_finished(service: ReadHistoryService) -> None:
    got = await call(service, "order.finished", [1, "BTCBCH", 0, 0, 0, 10])
    same(got, {"offset": 0, "limit": 10, "records": [ORDER5, ORDER1]})
    same(await call(service, "order.finished", [2, "BTCBCH", 0, 0, 0, 10]),
         {"offset": 0, "limit": 10, "records": [ORDER2]})


@pytest.mark.parametrize("params,expect", [
    ([1, "BTCBCH", 0, 0, 0, 10, 0], [5, 1]),
    ([1, "BTCBCH", 0, 0, 0, 10, 1], [5, 1]),
    ([1, "BTCBCH", 0, 0, 0, 10, 2], []),
    ([2, "BTCBCH", 0, 0, 0, 10, 2], [2]),
    ([1, "BTCBCH", 0, 0, 0, 10, "x"], [5, 1]),             # non-integer side reads as 0: both
    ([1, "BTCBCH", 0, 0, 0, 10, 0, "extra"], [5, 1]),
    ([1, "BTCBCH", int(T0) + 5, 0, 0, 10], [5]),           # create_time, not finish time
    ([1, "BTCBCH", 0, int(T0) + 5, 0, 10], [1]),
    ([1, "BTCBCH", int(T0) + 4, int(T0) + 10, 0, 10], [1]),
    ([1, "BTCBCH", 0, 0, 1, 10], [1]),
    ([1, "BTCBCH", 0, 0, 0, 1], [5]),
    ([1, "ETHBCH", 0, 0, 0, 10], []),
    ([3, "BTCBCH", 0, 0, 0, 10], []),                      # order 4: cancelled unfilled
])
async def test_order_finished_filters(service: ReadHistoryService, params: list[Any],
                                      expect: list[int]) -> None:
    got = await call(service, "order.finished", params)
    assert [r["id"] for r in got["records"]] == expect
    assert got["offset"] == params[4] and got["limit"] == params[5]


async def test_order_finished_detail(service: ReadHistoryService) -> None:
    same(await call(service, "order.finished_detail", [2]), ORDER2)
    same(await call(service, "order.finished_detail", [5]), ORDER5)
    assert await call(service, "order.finished_detail", [4]) is None
    assert await call(service, "order.finished_detail", [999]) is None
    assert await call(service, "order.finished_detail", [2**64 - 1]) is None


# -- deals ----------------------------------------------------------------------------------------


async def test_order_deals(service: ReadHistoryService) -> None:
    got = await call(service, "order.deals", [1, 0, 10])
    same(got, {"offset": 0, "limit": 10, "records": [
        {"time": T0 + 5, "user": 1, "id": 1, "role": 1, "price": "100", "amount": "1.5",
         "deal": "150", "fee": "0.15", "deal_order_id": 2}]})
    got = await call(service, "order.deals", [3, 0, 10])
    same(got["records"], [{"time": T0 + 10, "user": 3, "id": 2, "role": 1, "price": "90",
                           "amount": "0.4", "deal": "36", "fee": "0.0004", "deal_order_id": 5}])
    got = await call(service, "order.deals", [5, 0, 10])
    same(got["records"], [{"time": T0 + 10, "user": 1, "id": 2, "role": 2, "price": "90",
                           "amount": "0.4", "deal": "36", "fee": "0.072", "deal_order_id": 3}])
    assert (await call(service, "order.deals", [4, 0, 10]))["records"] == []
    assert (await call(service, "order.deals", [1, 1, 10]))["records"] == []
    assert (await call(service, "order.deals", [2**64 - 1, 0, 10]))["records"] == []


async def test_market_user_deals(service: ReadHistoryService) -> None:
    got = await call(service, "market.user_deals", [1, "BTCBCH", 0, 10])
    same(got, {"offset": 0, "limit": 10, "records": [
        {"time": T0 + 10, "user": 1, "id": 2, "side": 1, "role": 2, "price": "90", "amount": "0.4",
         "deal": "36", "fee": "0.072", "deal_order_id": 3, "market": "BTCBCH"},
        {"time": T0 + 5, "user": 1, "id": 1, "side": 1, "role": 1, "price": "100", "amount": "1.5",
         "deal": "150", "fee": "0.15", "deal_order_id": 2, "market": "BTCBCH"},
    ]})
    got = await call(service, "market.user_deals", [2, "BTCBCH", 0, 10])
    assert [(r["id"], r["side"], r["role"], r["fee"]) for r in got["records"]] == [(1, 2, 2, "0.003")]
    got = await call(service, "market.user_deals", [1, "BTCBCH", 1, 1])
    assert [r["id"] for r in got["records"]] == [1]
    assert (await call(service, "market.user_deals", [1, "btcbch", 0, 10]))["records"] == []


async def test_huge_offset(service: ReadHistoryService) -> None:
    for offset in (2**63 + 5, 2**64 - 1):
        got = await call(service, "balance.history", [1, "", "", 0, 0, offset, 10])
        assert got == {"offset": offset, "limit": 10, "records": []}
        got = await call(service, "market.user_deals", [1, "BTCBCH", offset, 10])
        assert got["records"] == []


async def test_huge_times(service: ReadHistoryService) -> None:
    got = await call(service, "balance.history", [1, "", "", 2**64 - 2, 2**64 - 1, 0, 10])
    assert got["records"] == []
    got = await call(service, "balance.history", [1, "", "", 0, 2**64 - 1, 0, 10])
    assert len(got["records"]) == 7
    got = await call(service, "order.finished", [1, "BTCBCH", 2**63, 0, 0, 10])
    assert got["records"] == []


async def test_database_error(history_backend: HistoryBackend, tmp_path: Path) -> None:
    location = history_backend.new_location()  # nothing created there
    svc = ReadHistoryService(history_backend.reader(location), worker_num=1)
    try:
        reply = body(await svc.call("balance.history", [1, "", "", 0, 0, 0, 10], 3))
        assert reply == {"error": {"code": 2, "message": "internal error"}, "result": None, "id": 3}
        assert svc.pending == 0
    finally:
        svc.close()


# -- parameters (backend-independent: a recording reader) ----------------------------------------


class FakeReader:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.gate: threading.Event | None = None
        self.fail = False

    def _call(self, *args: Any) -> list[Any]:
        self.calls.append(args)
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise HistoryStoreError("database down")
        return []

    def balance_history(self, *args: Any) -> list[Any]:
        return self._call("balance_history", *args)

    def order_finished(self, *args: Any) -> list[Any]:
        return self._call("order_finished", *args)

    def order_detail(self, *args: Any) -> Any:
        self._call("order_detail", *args)
        return None

    def order_deals(self, *args: Any) -> list[Any]:
        return self._call("order_deals", *args)

    def user_deals(self, *args: Any) -> list[Any]:
        return self._call("user_deals", *args)

    def close(self) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[tuple[ReadHistoryService, FakeReader]]:
    reader = FakeReader()
    svc = ReadHistoryService(reader, worker_num=1)
    yield svc, reader
    if reader.gate is not None:
        reader.gate.set()
    svc.close()


U32 = 2**32 - 1
U64 = 2**64 - 1

INVALID = [
    ("balance.history", [1, "", "", 0, 0, 0]),
    ("balance.history", [1, "", "", 0, 0, 0, 10, 0]),
    ("balance.history", []),
    ("balance.history", [0, "", "", 0, 0, 0, 10]),
    ("balance.history", ["1", "", "", 0, 0, 0, 10]),      # non-integer -> 0 -> refused
    ("balance.history", [1.0, "", "", 0, 0, 0, 10]),
    ("balance.history", [True, "", "", 0, 0, 0, 10]),
    ("balance.history", [-1, "", "", 0, 0, 0, 10]),       # decision: no unsigned wrap-around
    ("balance.history", [U32 + 1, "", "", 0, 0, 0, 10]),
    ("balance.history", [1, 5, "", 0, 0, 0, 10]),
    ("balance.history", [1, None, "", 0, 0, 0, 10]),
    ("balance.history", [1, "", [], 0, 0, 0, 10]),
    ("balance.history", [1, "", "", 10, 9, 0, 10]),       # inverted range
    ("balance.history", [1, "", "", -1, 0, 0, 10]),
    ("balance.history", [1, "", "", 0, U64 + 1, 0, 10]),
    ("balance.history", [1, "", "", 0, 0, -1, 10]),
    ("balance.history", [1, "", "", 0, 0, U64 + 1, 10]),
    ("balance.history", [1, "", "", 0, 0, 0, 0]),
    ("balance.history", [1, "", "", 0, 0, 0, 102]),
    ("balance.history", [1, "", "", 0, 0, 0, -1]),
    ("balance.history", [1, "", "", 0, 0, 0, "10"]),
    ("order.finished", [1, "BTCBCH", 0, 0, 0]),
    ("order.finished", [0, "BTCBCH", 0, 0, 0, 10]),
    ("order.finished", [1, 1, 0, 0, 0, 10]),
    ("order.finished", [1, "BTCBCH", 5, 4, 0, 10]),
    ("order.finished", [1, "BTCBCH", 0, 0, 0, 102]),
    ("order.finished", [1, "BTCBCH", 0, 0, 0, 10, 3]),
    ("order.finished", [1, "BTCBCH", 0, 0, 0, 10, -1]),
    ("order.finished", [1, "BTCBCH", 0, 0, 0, 10, 2**32 + 1]),
    ("order.finished_detail", []),
    ("order.finished_detail", [1, 2]),
    ("order.finished_detail", [0]),
    ("order.finished_detail", ["5"]),
    ("order.finished_detail", [-5]),
    ("order.finished_detail", [U64 + 1]),
    ("order.deals", [1, 0]),
    ("order.deals", [1, 0, 10, 0]),
    ("order.deals", [0, 0, 10]),
    ("order.deals", [1, 0, 0]),
    ("order.deals", [1, 0, 200]),
    ("market.user_deals", [1, "BTCBCH", 0]),
    ("market.user_deals", [1, "BTCBCH", 0, 10, 0]),
    ("market.user_deals", [0, "BTCBCH", 0, 10]),
    ("market.user_deals", [1, None, 0, 10]),
    ("market.user_deals", [1, "BTCBCH", 0, 0]),
]


@pytest.mark.parametrize("method,params", INVALID)
async def test_invalid_argument(fake: tuple[ReadHistoryService, FakeReader], method: str,
                                params: list[Any]) -> None:
    svc, reader = fake
    reply = body(await svc.call(method, params, 9))
    assert reply == {"error": {"code": 1, "message": "invalid argument"}, "result": None, "id": 9}
    assert reader.calls == []


LENIENT = [
    ("balance.history", [U32, "BTC", "x", "5", 1.5, None, 101],
     ("balance_history", U32, "BTC", "x", 0, 0, 0, 101), {"offset": 0, "limit": 101, "records": []}),
    ("balance.history", [1, "", "", 7, 0, "abc", 1],
     ("balance_history", 1, "", "", 7, 0, 0, 1), {"offset": 0, "limit": 1, "records": []}),
    ("balance.history", [1, "", "", 7, 7, U64, 1],
     ("balance_history", 1, "", "", 7, 7, U64, 1), {"offset": U64, "limit": 1, "records": []}),
    ("order.finished", [1, "M", False, {}, [], 5, "side"],
     ("order_finished", 1, "M", 0, 0, 0, 0, 5), {"offset": 0, "limit": 5, "records": []}),
    ("order.finished", [1, "M", 0, 0, 3, 5, 2],
     ("order_finished", 1, "M", 2, 0, 0, 3, 5), {"offset": 3, "limit": 5, "records": []}),
    ("order.finished_detail", [U64], ("order_detail", U64), None),
    ("order.deals", [8, 2.0, 3], ("order_deals", 8, 0, 3), {"offset": 0, "limit": 3, "records": []}),
    ("market.user_deals", [8, "", True, 3], ("user_deals", 8, "", 0, 3),
     {"offset": 0, "limit": 3, "records": []}),
]


@pytest.mark.parametrize("method,params,query,result", LENIENT)
async def test_lenient_integers(fake: tuple[ReadHistoryService, FakeReader], method: str,
                                params: list[Any], query: tuple[Any, ...], result: Any) -> None:
    svc, reader = fake
    assert await call(svc, method, params) == result
    assert reader.calls == [query]


async def test_unknown_method(fake: tuple[ReadHistoryService, FakeReader]) -> None:
    svc, _ = fake
    assert await call(svc, "order.book", []) == ("error", 4, "method not found")


async def test_reader_error_is_internal_error(fake: tuple[ReadHistoryService, FakeReader]) -> None:
    svc, reader = fake
    reader.fail = True
    assert await call(svc, "order.deals", [1, 0, 10]) == ("error", 2, "internal error")
    assert svc.pending == 0


async def test_pending_jobs_bound(fake: tuple[ReadHistoryService, FakeReader]) -> None:
    svc, reader = fake
    assert svc.max_pending == 10
    reader.gate = threading.Event()
    tasks = [asyncio.create_task(svc.call("order.deals", [i + 1, 0, 10], i)) for i in range(10)]
    await wait_until_async(lambda: svc.pending == 10, message="ten jobs pending")
    assert await call(svc, "order.deals", [1, 0, 10]) == ("error", 3, "service unavailable")
    # checked before the params, as the original
    assert await call(svc, "order.deals", []) == ("error", 3, "service unavailable")
    reader.gate.set()
    replies = [body(b) for b in await asyncio.gather(*tasks)]
    assert all(r["error"] is None for r in replies)
    assert [r["id"] for r in replies] == list(range(10))
    assert svc.pending == 0
    assert (await call(svc, "order.deals", [1, 0, 10]))["records"] == []


async def test_event_loop_not_blocked(fake: tuple[ReadHistoryService, FakeReader]) -> None:
    svc, reader = fake
    reader.gate = threading.Event()
    task = asyncio.create_task(svc.call("order.deals", [1, 0, 10], 1))
    ticks = 0
    for _ in range(10):  # the loop turns (the thing under test) while the query is held
        await asyncio.sleep(0.001)
        ticks += 1
    assert ticks == 10 and not task.done()
    reader.gate.set()
    await task


async def test_debug_reply_is_indented() -> None:
    svc = ReadHistoryService(FakeReader(), worker_num=1, debug=True)
    try:
        raw = await svc.call("order.finished_detail", [1], 5)
        assert raw == b'{\n    "error": null,\n    "result": null,\n    "id": 5\n}'
    finally:
        svc.close()


def test_readers_have_the_same_interface() -> None:
    methods = {"balance_history", "order_finished", "order_detail", "order_deals", "user_deals",
               "close"}
    assert methods <= set(dir(SqliteHistoryReader)) and methods <= set(dir(MysqlHistoryReader))
