"""Stop orders downstream: stop_history rows (fired and cancelled stops) on SQLite and MySQL,
readhistory's order.finished_stop, the ``stops`` bus messages, and the WebSocket's
order.update_stop push and order.query_stop query."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from exchange_server.bus.base import STOPS
from exchange_server.bus.messages import encode_events, stop_message
from exchange_server.history.rows import STOP, StopRow, rows_of
from exchange_server.history.writer import HistoryWriter
from exchange_server.matchengine.core.model import StopChanged
from exchange_server.readhistory.service import ReadHistoryService
from tests.support.accessws_support import MARKET, AuthService, Stack, WsClient
from tests.support.ext_support import Ex


def session() -> Ex:
    """Stops placed by user 1: one fires into a placed order (status 1), one fires and is
    refused (a market sell without bids: status 2), one is cancelled (3), one still waits."""
    ex = Ex()
    for user in (1, 2, 3):
        ex.deposit(user, "BTC", "100")
        ex.deposit(user, "BCH", "100000")
    ex.trade_at("100")
    ex.stop_limit(1, 1, "1", "95", "95", None, "fires")        # id a
    ex.stop_market(1, 1, "0.5", "94", None, "refused")          # id a + 1
    ex.stop_limit(1, 2, "1", "120", "121", None, "cancelled")  # id a + 2
    ex.stop_limit(1, 2, "1", "130", "131", None, "waits")      # id a + 3
    ex.call("order.cancel_stop", 1, "BTCBCH", ex.engine.order_id - 1)
    ex.limit(3, 2, "2", "95")
    ex.limit(2, 1, "1", "95")  # last 95: "fires"; its order takes the rest of the bid
    ex.limit(2, 1, "0.1", "50")
    ex.limit(3, 2, "0.1", "94")  # deal at 94 with no bid left: "refused" fires, fails
    return ex


def test_rows_of_stop_events() -> None:
    ex = session()
    rows = [row for _, events in ex.ops for kind, row in rows_of(events) if kind == STOP]
    assert [(r.client_id, r.status) for r in rows] == [("cancelled", 3), ("fires", 1),
                                                       ("refused", 2)]
    fired = rows[1]
    assert isinstance(fired, StopRow) and fired.order_id > fired.id
    assert fired.finish_time > fired.create_time and fired.option == 0x44
    assert (rows[0].order_id, rows[2].order_id) == (0, 0)


def test_stop_messages() -> None:
    ex = session()
    messages = [(topic, json.loads(body)) for _, events in ex.ops
                for topic, body in encode_events(events) if topic == STOPS]
    assert [(m["event"], m["order"]["client_id"], m["order"]["status"]) for _, m in messages] == [
        (1, "fires", 0), (1, "refused", 0), (1, "cancelled", 0), (1, "waits", 0),
        (3, "cancelled", 0), (2, "fires", 1), (2, "refused", 2)]
    active = messages[5][1]
    assert list(active) == ["event", "order", "order_id", "stock", "money"]
    assert active["order_id"] > active["order"]["id"]
    assert (active["stock"], active["money"]) == ("BTC", "BCH")
    assert list(active["order"])[-1] == "status"
    # jansson's layout, like the original's messages
    event = next(e for _, events in ex.ops for e in events if isinstance(e, StopChanged))
    text = stop_message(event).decode()
    assert text.startswith('{"event": 1, "order": {"id": ') and '"fee_asset": null' in text


async def test_stop_history_and_finished_stop(history_backend: Any) -> None:
    ex = session()
    location = history_backend.new_location()
    writer = HistoryWriter(history_backend.store(location))
    writer.durable_mark()
    for oper_id, events in ex.ops:
        writer.on_events(oper_id, events)
    writer.flush_now()
    service = ReadHistoryService(history_backend.reader(location), worker_num=2)
    try:
        async def call(*params: Any) -> Any:
            reply = json.loads(await service.call("order.finished_stop", list(params), 3))
            return reply["error"]["code"] if reply["error"] else reply["result"]

        page = await call(1, "BTCBCH", 0, 0, 0, 0, 10)
        assert list(page) == ["offset", "limit", "records"]
        records = page["records"]
        assert [(r["client_id"], r["status"]) for r in records] == [
            ("cancelled", 3), ("refused", 2), ("fires", 1)]  # newest first (by creation)
        first = records[2]
        assert list(first) == ["id", "ctime", "ftime", "user", "option", "market", "source",
                               "type", "side", "stop_price", "price", "amount", "taker_fee",
                               "maker_fee", "fee_asset", "fee_discount", "status", "client_id",
                               "order_id"]
        assert (first["stop_price"], first["price"], first["amount"], first["taker_fee"]) == (
            "95", "95", "1", "0.002")
        assert first["order_id"] > first["id"] and first["market"] == "BTCBCH"
        assert [r["client_id"] for r in (await call(1, "", 2, 0, 0, 0, 10))["records"]] == [
            "cancelled"]
        assert [r["client_id"] for r in (await call(1, "", 0, 0, 0, 1, 1))["records"]] == [
            "refused"]
        assert (await call(1, "LTCBCH", 0, 0, 0, 0, 10))["records"] == []
        assert (await call(2, "", 0, 0, 0, 0, 10))["records"] == []
        ctime = int(records[0]["ctime"])
        assert (await call(1, "", 0, ctime + 10, 0, 0, 10))["records"] == []
        for bad in ([1, "", 0, 0, 0, 0], [0, "", 0, 0, 0, 0, 10], [1, "", 3, 0, 0, 0, 10],
                    [1, "", 0, 0, 0, 0, 0], [1, 5, 0, 0, 0, 0, 10], [1, "", 0, 9, 1, 0, 10]):
            assert await call(*bad) == 1
    finally:
        service.close()


@pytest.mark.mysql
def test_existing_mysql_history_gets_the_stop_tables(mysql_config: Any) -> None:
    from exchange_server.history.store_mysql import MysqlHistoryStore
    from exchange_server.storage import mysql as mysql_db

    cfg = mysql_config("test_history_upgrade")
    store = MysqlHistoryStore(cfg)
    store.open()
    conn = mysql_db.connect(cfg)
    with conn.cursor() as cur:
        for shard in range(100):
            cur.execute(f"DROP TABLE `stop_history_{shard}`")
        cur.execute("DROP TABLE `stop_history_example`")
    conn.commit()
    MysqlHistoryStore(cfg).open()  # a database made before stop_history: tables are added
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'stop\\_history\\_%'")
        assert len(cur.fetchall()) == 101
    conn.close()


# -- WebSocket ------------------------------------------------------------------------------------


ALICE = 101
BOB = 102
CAROL = 103


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    auth = AuthService()
    auth.tokens.update({"tok-alice": ALICE})
    await auth.start()
    st = await Stack(tmp_path, auth=auth).start()
    yield st
    await st.stop()
    await auth.stop()


async def test_stop_pushes_and_query(stack: Stack) -> None:
    await stack.deposit(ALICE, "BTC", "10")
    await stack.deposit(BOB, "BTC", "10")
    await stack.deposit(CAROL, "BCH", "10000")
    await stack.limit(BOB, 1, "0.1", "100")
    await stack.limit(CAROL, 2, "0.1", "100")  # last 100
    alice = await WsClient.connect(stack.url)
    try:
        assert await alice.call("server.auth", "tok-alice", "web") == {"status": "success"}
        assert await alice.call("order.subscribe", MARKET) == {"status": "success"}
        assert await alice.call("asset.subscribe", "BTC") == {"status": "success"}
        stop = await stack.me("order.put_stop_limit", ALICE, MARKET, 1, "2", "95", "95",
                              "0.001", "0.001", "ws", None, None, 0, "mine")
        event, pushed = await alice.next("order.update_stop")
        assert event == 1 and pushed == {**stop, "status": 0}
        assert await alice.next("asset.update") == [{"BTC": {"available": "8", "freeze": "2"}}]
        queried = await alice.call("order.query_stop", MARKET, 0, 0, 10)
        assert queried["total"] == 1 and queried["records"][0] == stop
        assert (await alice.call("order.query_stop", None, 1, 0, 10))["total"] == 1
        assert (await alice.error("order.query_stop", MARKET, 0, 0))[0] == 1
        # fired by BOB's trade at 95: ACTIVE, then the spawned order's own update
        await stack.limit(CAROL, 2, "3", "95")
        await stack.limit(BOB, 1, "0.5", "95")
        event, pushed = await alice.next("order.update_stop")
        assert (event, pushed["id"], pushed["status"]) == (2, stop["id"], 1)
        event, order = await alice.next("order.update")
        assert order["client_id"] == "mine" and order["option"] & 0x40
        await stack.history_synced()
        assert stack.readhistory is not None
        reply = json.loads(await stack.readhistory.call(
            "order.finished_stop", [ALICE, MARKET, 0, 0, 0, 0, 10], 1))
        assert [r["id"] for r in reply["result"]["records"]] == [stop["id"]]
    finally:
        await alice.close()
