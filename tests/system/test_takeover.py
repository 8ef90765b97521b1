"""Taking over a running original ViaBTC exchange: its databases as it left them.

Why: an exchange already on the original must switch to this project without losing or doubling
anything its clients were told.  ``tests/data/takeover`` holds the original's ``trade_log`` and
``trade_history`` (mariadb-dump) after a slice and 31 more logged operations, two of them with
integers the original wrapped, and what it answered before it was stopped.  The project's
matchengine and readhistory (production processes, tests/support/topology.py) start on them and must
answer the same, continue its order ids, write no history row and publish no message the
original already did, and go on trading.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT

from exchange_server.common.config import MysqlConfig
from exchange_server.matchengine.original import original_params, recover_sources
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import OperRecord, SliceInfo, StoreError
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.storage import mysql as mysql_db
from tests.integration.test_methods import config as engine_config
from tests.support.server import REPO
from tests.support.topology import Topology
from tests.system.test_topology import call

pytestmark = [pytest.mark.mysql, pytest.mark.slow]

DATA = REPO / "tests" / "data" / "takeover"
EXPECTED = json.loads((DATA / "expected-state.json").read_text())
#: The last operation the original logged (trade_log.sql: ids 1..44).
LAST_ORIGINAL_OPER = 44
#: History tables, with the column that holds each row's time.
HISTORY_KINDS = {"balance_history": "time", "order_history": "finish_time",
                 "order_detail": "finish_time", "deal_history": "time",
                 "user_deal_history": "time"}
SERVICES = ("matchengine", "readhistory", "accesshttp")


def load_dump(cfg: MysqlConfig, path: Path) -> None:
    """Run a mariadb-dump file in the (new) database ``cfg.name`` (the dumps name none)."""
    mysql_db.ensure_database(cfg)
    conn = pymysql.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password,
                           database=cfg.name, charset="utf8mb4",
                           client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        with conn.cursor() as cur:
            cur.execute(path.read_text())
            while cur.nextset():
                pass
        conn.commit()
    finally:
        conn.close()


def query(cfg: MysqlConfig, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    conn = mysql_db.connect(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            rows = list(cur.fetchall())
        conn.commit()
    finally:
        conn.close()
    return rows


def history_counts(cfg: MysqlConfig, before: float | None = None) -> dict[str, int]:
    """Rows per history kind (only those with a time at or before ``before`` if given)."""
    tables = {r[0] for r in query(cfg, "SHOW TABLES")}
    counts = {}
    for kind, column in HISTORY_KINDS.items():
        parts = [f"SELECT COUNT(*) FROM `{kind}_{shard}`"
                 + (f" WHERE `{column}` <= {before!r}" if before is not None else "")
                 for shard in range(100) if f"{kind}_{shard}" in tables]
        counts[kind] = sum(int(r[0]) for r in query(cfg, " UNION ALL ".join(parts)))
    return counts


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def answer(port: int, method: str, params: list[Any]) -> dict[str, Any] | None:
    """The whole JSON-RPC reply through accesshttp; None while it or its backend is not up."""
    body = json.dumps({"method": method, "params": params, "id": 1}).encode()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", body, timeout=10) as r:
            reply: dict[str, Any] = json.loads(r.read())
            return reply
    except urllib.error.HTTPError as e:
        if e.code == 500:
            return None
        raise
    except OSError:  # accesshttp not listening yet
        return None


def consume(brokers: str, topic: str) -> list[bytes]:
    """Every message of ``topic`` so far (read until the end of its only partition)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"takeover-{time.time()}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        messages: list[bytes] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    return messages
                raise AssertionError(f"{topic}: {msg.error()}")
            messages.append(msg.value())
        raise AssertionError(f"{topic}: end not reached")
    finally:
        consumer.close()


@pytest.fixture
def takeover(tmp_path: Path, mysql_config: Callable[..., MysqlConfig],
             kafka_brokers: str, kafka_topics: Callable[[], str]
             ) -> Iterator[tuple[Topology, MysqlConfig, MysqlConfig, str]]:
    db_log, db_history = mysql_config("takeover_log"), mysql_config("takeover_history")
    load_dump(db_log, DATA / "trade_log.sql")
    load_dump(db_history, DATA / "trade_history.sql")
    prefix = kafka_topics()
    topo = Topology(tmp_path, db_log, db_history, redis_db=7, brokers=kafka_brokers,
                    topic_prefix=prefix)
    # the original's own config (assets, markets, slice settings)
    original = json.loads((DATA / "matchengine.json").read_text())
    config = topo.configs["matchengine"]
    for key in ("assets", "markets", "slice_interval", "slice_keeptime"):
        config[key] = original[key]
    (topo.conf / "matchengine.json").write_text(json.dumps(config, indent=2))
    try:
        for name in SERVICES:
            topo.start(name)
        yield topo, db_log, db_history, prefix
    finally:
        for name in reversed(SERVICES):
            topo.stop(name)


#: Order times: the original took them from its clock when it processed the order, a replay
#: from the logged time of the operation (a few microseconds later).
CLOCK_FIELDS = ("ctime", "mtime")


def without_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in value.items() if k not in CLOCK_FIELDS}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


def state(port: int) -> dict[str, Any]:
    """The answers expected-state.json recorded from the running original."""
    pending = {}
    for key in EXPECTED["pending"]:
        user, market = key.split()
        pending[key] = call(port, "order.pending", int(user), market, 0, 100)
    return {
        "balances": {user: call(port, "balance.query", int(user))
                     for user in EXPECTED["balances"]},
        "pending": pending,
        "depth": {market: call(port, "order.depth", market, 50, "0")
                  for market in EXPECTED["depth"]},
        "asset.summary": call(port, "asset.summary"),
        "market.summary": call(port, "market.summary"),
    }


def test_takeover_answers_as_the_original_and_trades_on(
        takeover: tuple[Topology, MysqlConfig, MysqlConfig, str], kafka_brokers: str) -> None:
    topo, db_log, db_history, prefix = takeover
    port = topo.http_port
    dumped = history_counts(db_history)
    last_dumped = float(query(db_log, "SELECT MAX(time) FROM operlog_20261201")[0][0])

    # the state clients saw, including the orders restored from the original's slice (their
    # source recovered from the log) and the two operations with wrapped integers
    assert without_clock(state(port)) == without_clock(EXPECTED)
    assert query(db_log, "SELECT end_oper_id FROM takeover") == [(LAST_ORIGINAL_OPER,)]

    # trading goes on: the next order id is the original's, and it matches order 2
    order = call(port, "order.put_limit", 12, "BTCBCH", 2, "0.5", "101", "0.002", "0.001", "new")
    assert order["id"] == 23
    assert order["deal_stock"] == "0.5" and Decimal(order["left"]) == 0
    wait_for("the history of the new order", lambda: query(
        db_history, "SELECT oper_id FROM history_offset")[0][0] == LAST_ORIGINAL_OPER + 1)

    # history: the original's rows were not written again, the new order's once
    assert history_counts(db_history, before=last_dumped) == dumped
    new = {kind: count - dumped[kind] for kind, count in history_counts(db_history).items()}
    # (balance rows: stock, money and fee of each side)
    assert new == {"balance_history": 6, "order_history": 1, "order_detail": 1,
                   "deal_history": 2, "user_deal_history": 2}
    deals = call(port, "order.deals", 23, 0, 100)["records"]
    assert [(d["deal_order_id"], d["amount"], d["price"]) for d in deals] == [(2, "0.5", "101")]
    finished = call(port, "order.finished", 12, "BTCBCH", 0, 0, 0, 100)["records"]
    assert [(o["id"], o["source"]) for o in finished] == [(23, "new")]
    # op 26's deposit to user -1 (read as 4294967295), written by the original, once
    wrapped = call(port, "balance.history", 4294967295, "ETH", "", 0, 0, 0, 100)["records"]
    assert [(r["business"], r["change"]) for r in wrapped] == [("deposit", "5")]

    # the bus: only the new operation's messages, none of the original's again
    deal_messages = [json.loads(m) for m in consume(kafka_brokers, prefix + "deals")]
    # (decimals unstripped, as the original prints them: order 2's price as its slice load
    # rules made it, truncated to the market's 8 decimals)
    assert [(m[1], m[2], m[3], m[6], m[7]) for m in deal_messages] == [
        ("BTCBCH", 2, 23, "101.00000000", "0.50000000")]
    orders = [json.loads(m) for m in consume(kafka_brokers, prefix + "orders")]
    # maker 2 updated, taker 23 finished at once
    assert [(m["event"], m["order"]["id"]) for m in orders] == [(2, 2), (3, 23)]
    assert orders[0]["order"]["source"] == "api"  # recovered from the log (operation 7)
    assert consume(kafka_brokers, prefix + "balances") == []

    # a restart of ours (from its own slice now): the same state, nothing written again
    pending = call(port, "order.pending", 1, "BTCBCH", 0, 100)
    counts = history_counts(db_history)
    topo.stop("matchengine")
    topo.start("matchengine")
    assert call(port, "order.pending", 1, "BTCBCH", 0, 100) == pending
    assert [(o["id"], o["source"], o["left"]) for o in pending["records"]] == [
        (6, "api", "0.1"), (2, "api", "0.5")]
    # restored from the final slice of ours (operation 45), in our layout
    assert [r[0] for r in query(db_log, "SELECT end_oper_id FROM slice_history ORDER BY id")] \
        == [13, 45]
    order = call(port, "order.put_limit", 13, "BTCBCH", 1, "1", "500", "0.002", "0.001", "next")
    assert order["id"] == 24
    wait_for("the history of order 24", lambda: query(
        db_history, "SELECT oper_id FROM history_offset")[0][0] == LAST_ORIGINAL_OPER + 2)
    assert history_counts(db_history) == counts  # it rests: no history row yet
    assert len(consume(kafka_brokers, prefix + "deals")) == 1


def test_new_requests_with_wrapped_integers_are_still_refused(
        takeover: tuple[Topology, MysqlConfig, MysqlConfig, str]) -> None:
    """The original's integer rules apply to its own records only."""
    topo = takeover[0]
    for params in ([-1, "ETH", "deposit", 900, "5", {}], [11, "ETH", "deposit", -6, "5", {}]):
        reply = wait_for("an answer", lambda params=params: answer(
            topo.http_port, "balance.update", params))
        assert reply["error"] is not None and reply["error"]["code"] == 1, reply
    assert call(topo.http_port, "balance.query", 4294967295, "ETH") == {
        "ETH": {"available": "5", "freeze": "0"}}


def test_no_takeover_while_the_original_still_writes(
        mysql_config: Callable[..., MysqlConfig]) -> None:
    """Two writers of one log must never happen: while the original's operation log still
    grows, the takeover is refused and nothing is changed; once it stands still, it is taken
    over at its end."""
    db_log = mysql_config("takeover_log")
    load_dump(db_log, DATA / "trade_log.sql")
    stop = threading.Event()
    written: list[int] = []

    def original_writer() -> None:  # the original, still logging operations
        conn = mysql_db.connect(db_log)
        try:
            with conn.cursor() as cur:
                oper_id = LAST_ORIGINAL_OPER
                while not stop.is_set():
                    oper_id += 1
                    cur.execute("INSERT INTO operlog_20261201 VALUES (%s, %s, %s)",
                                (oper_id, time.time(), json.dumps(
                                    {"method": "cancel_order", "params": [1, "BTCBCH", 2]})))
                    conn.commit()
                    written.append(oper_id)
        finally:
            conn.close()

    writer = threading.Thread(target=original_writer)
    writer.start()
    try:
        wait_for("the original's first record", lambda: written)
        store = MysqlEngineStore(db_log)
        with pytest.raises(StoreError, match="still writing its operation log"):
            store.open()
        store.close()
    finally:
        stop.set()
        writer.join()
    assert not query(db_log, "SHOW TABLES LIKE 'takeover'")
    assert query(db_log, "SHOW TABLES LIKE 'slice_order_example_viabtc'") == []
    store = MysqlEngineStore(db_log)
    store.open()
    try:
        assert store.takeover_point() == written[-1]
    finally:
        store.close()


# -- the original's rules, without servers ----------------------------------------------------


def dumped_operlog() -> dict[int, str]:
    """``{id: detail}`` of the operation log in trade_log.sql."""
    text = (DATA / "trade_log.sql").read_text()
    rows = re.findall(r"^\((\d+),[\d.]+,'(.*)'\)[,;]$", text, re.M)
    return {int(i): detail.replace('\\"', '"') for i, detail in rows}


#: The original's slice (end_oper_id 13, end_order_id 7): orders 2 and 6 as
#: (id, t, side, create_time, update_time, user_id, market).
SLICE = SliceInfo(1796096531, 13, 7, 4)
SLICE_ORDERS = [(2, 1, 1, 0.0, 0.0, 1, "BTCBCH"), (6, 1, 2, 0.0, 0.0, 1, "BTCBCH")]


def test_sources_are_recovered_while_the_log_holds_the_creating_operation() -> None:
    log = dumped_operlog()
    whole = [(i, log[i]) for i in range(13, 0, -1)]
    assert recover_sources(SLICE, SLICE_ORDERS, iter(whole)) == {2: "api", 6: "api"}
    # older operations gone (days dropped): order 2's creation is no longer there
    assert recover_sources(SLICE, SLICE_ORDERS, iter(whole[:4])) == {6: "api"}
    # a gap in the ids (operation 12 missing): the count is no longer reliable, nothing older
    # is recovered
    assert recover_sources(SLICE, SLICE_ORDERS, iter(whole[:1] + whole[2:])) == {}


def test_sources_stop_at_an_operation_that_does_not_match_its_order() -> None:
    log = dumped_operlog()
    history = [(i, log[i]) for i in range(13, 0, -1)]
    # operation 12 (order 6) claims another user: neither 6 nor anything older is trusted
    history[1] = (12, log[12].replace("[1, ", "[3, "))
    assert recover_sources(SLICE, SLICE_ORDERS, iter(history)) == {}


def test_original_integer_rules() -> None:
    assert original_params("update_balance", [-1, "ETH", "deposit", -5, "5", {}]) == [
        4294967295, "ETH", "deposit", 2**64 - 5, "5", {}]
    assert original_params("limit_order", [-2, "BTCBCH", 1]) == [2**32 - 2, "BTCBCH", 1]
    assert original_params("cancel_order", [1, "BTCBCH", -1]) == [1, "BTCBCH", 2**64 - 1]
    params = [11, "ETH", "deposit", 5, "5", {}]
    assert original_params("update_balance", params) is params  # nothing to wrap
    assert original_params("update_balance", [True, "ETH"]) == [True, "ETH"]  # not an integer


class TakenOverStore(SqliteEngineStore):
    """A store whose first two records were written by an original ViaBTC."""

    def takeover_point(self) -> int:
        return 2


def test_the_originals_records_replay_with_its_rules_and_are_never_skipped(
        tmp_path: Path) -> None:
    t = 1796096534.5
    store = TakenOverStore(tmp_path / "wrapped")
    store.open()
    store.append([OperRecord(1, t, "update_balance", [-1, "BTC", "deposit", -5, "1", {}]),
                  OperRecord(2, t, "update_balance", [2, "BTC", "deposit", -5, "2", {}])])
    service = MatchEngineService(engine_config(), store)
    service.restore()
    assert service.engine.balances.get_available(4294967295, "BTC") == 1
    assert service.engine.balances.get_available(2, "BTC") == 2
    store.close()
    # a record of the original that this project refuses (user 0, which the original let
    # through) stops the restore with its id: acknowledged money is never dropped silently
    store = TakenOverStore(tmp_path / "refused")
    store.open()
    store.append([OperRecord(1, t, "update_balance", [0, "BTC", "deposit", 1, "1", {}])])
    with pytest.raises(StoreError, match="operation 1 "):
        MatchEngineService(engine_config(), store).restore()
    store.close()
