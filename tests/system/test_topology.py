"""The production topology: every service its own daemonised process on MariaDB and Redis.

A trading session goes through accesshttp; then each service's worker is killed with SIGKILL in
turn: its watchdog starts a new one (after ``RESTART_DELAY``, 0.5 s), nothing acknowledged is
lost, clients recover, and the watchdog's fatal log line reaches the alert list in Redis through
the alertcenter.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from exchange_server.status.collect import parse_metrics
from exchange_server.storage import mysql as mysql_db
from tests.support.server import REPO
from tests.support.status_support import missing_metrics, scrape_names
from tests.support.topology import Topology
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.slow]

REDIS_DB = 7
#: start order: marketprice reads market.list from accesshttp at start-up
SERVICES = ("alertcenter", "matchengine", "readhistory", "accesshttp", "marketprice", "accessws")


def call(port: int, method: str, *params: Any, timeout: float = 60.0) -> Any:
    """Call through accesshttp, retrying while a restarted backend reconnects (a liveness
    wait: generous, since a restart on a loaded machine may take many seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/", json.dumps({"method": method, "params": list(params), "id": 1}))
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                reply = json.loads(body)
                assert reply["error"] is None, reply
                return reply["result"]
        except OSError:
            pass
        finally:
            conn.close()
        assert time.monotonic() < deadline, f"{method}: no answer"
        time.sleep(0.1)


@pytest.fixture
def topology(tmp_path: Path, mysql_config: Any) -> Iterator[Topology]:
    topo = Topology(tmp_path, mysql_config("test_topo_log"), mysql_config("test_topo_history"),
                    REDIS_DB, topic_prefix=f"topo{uuid.uuid4().hex[:8]}_")
    redis.Redis(db=REDIS_DB).flushdb()
    try:
        for name in SERVICES:
            topo.start(name)
            if name == "accesshttp":  # marketprice asks it for market.list at start-up
                call(topo.http_port, "market.list")
        yield topo
    finally:
        for name in reversed(SERVICES):
            topo.stop(name)


def check_status_and_monitoring_names(topology: Topology) -> None:
    """``exchange-server status -c CONF_DIR`` sees all six processes up and caught up, and
    every metric the dashboard and the alert rules name is exported by one of them."""

    def healthy() -> dict[str, Any] | None:
        result = subprocess.run(
            [sys.executable, "-m", "exchange_server", "status", "-c", str(topology.conf),
             "--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode in (0, 1), result.stderr
        status: dict[str, Any] = json.loads(result.stdout)
        return status if result.returncode == 0 else None

    deadline = time.monotonic() + 120
    while (status := healthy()) is None:
        assert time.monotonic() < deadline, "the production topology never looked healthy"
        time.sleep(0.2)
    rows = {row["name"]: row for row in status["services"]}
    assert sorted(rows) == sorted(SERVICES)
    for name in SERVICES:
        assert rows[name]["up"] and rows[name]["services"] == [name]
        assert rows[name]["pid"] == topology.worker_pid(name)
    assert status["lag"]["marketprice"] == {"operations": 0, "seconds": 0}
    assert status["lag"]["bus"]["operations"] == 0
    exported: set[str] = set()
    for key in ("me_metrics", "http_metrics", "mp_metrics", "rh_metrics", "ws_metrics",
                "ac_metrics"):
        exported |= scrape_names(f"http://127.0.0.1:{topology.ports[key]}/metrics")
    assert missing_metrics(exported) == set()
    assert [(r["name"], r["role"]) for r in status["leadership"]["matchengines"]] == [
        ("matchengine", "single")]


def check_bus_mark_in_the_log_database(topology: Topology) -> None:
    """The Kafka publisher's mark is a row of the log database (where a standby on another
    host finds it), up to the last operation; no mark file is written."""
    durable = int(scrape_values(topology, "exchange_operlog_durable_operation"))

    def mark() -> int:
        conn = mysql_db.connect(topology.db_log)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT oper_id FROM bus_mark WHERE name = 'matchengine'")
                row = cur.fetchone()
        finally:
            conn.close()
        return int(row[0]) if row else 0

    wait_until(lambda: mark() >= durable, 30, message=f"bus_mark reaches operation {durable}")
    assert not (topology.root / "bus.mark").exists()


def scrape_values(topology: Topology, name: str) -> float:
    with urllib.request.urlopen(
            f"http://127.0.0.1:{topology.ports['me_metrics']}/metrics", timeout=10) as resp:
        return parse_metrics(resp.read().decode())[name]["matchengine"]


def test_topology_survives_sigkill_of_each_service(topology: Topology) -> None:
    port = topology.http_port
    call(port, "balance.update", 1, "BTC", "deposit", 1, "10", {})
    call(port, "balance.update", 2, "BCH", "deposit", 2, "10000", {})
    call(port, "order.put_limit", 1, "BTCBCH", 1, "2", "100", "0.002", "0.001", "e2e")
    deal = call(port, "order.put_limit", 2, "BTCBCH", 2, "0.5", "100", "0.002", "0.001", "e2e")
    assert deal["deal_stock"] == "0.5"

    async def ws_deals() -> list[Any]:
        """A WebSocket client through accessws: the public deals of BTCBCH."""
        async with aiohttp.ClientSession() as http, http.ws_connect(
                f"http://127.0.0.1:{topology.ports['accessws']}/") as ws:
            await ws.send_json({"method": "deals.query", "params": ["BTCBCH", 10, 0], "id": 1})
            reply = await ws.receive_json(timeout=30)
            assert reply["error"] is None, reply
            return list(reply["result"])

    def market_data_ok() -> bool:
        last = call(port, "market.last", "BTCBCH")
        deals = asyncio.run(ws_deals())
        return last == "100.00000000" and [d["amount"] for d in deals] == ["0.5"]

    deadline = time.monotonic() + 60
    while not market_data_ok():
        assert time.monotonic() < deadline, "the deal never reached marketprice / accessws"
        time.sleep(0.2)

    for name in ("matchengine", "readhistory", "accesshttp", "marketprice", "accessws"):
        # the watchdog's own delay is RESTART_DELAY (0.5 s); how fast a loaded machine lets the
        # new worker run is not this test's business: kill_worker waits with a generous timeout
        old, new, _seconds = topology.kill_worker(name)
        assert new != old
        # clients recover: every call works again, and nothing acknowledged was lost
        balances = call(port, "balance.query", 1, "BTC", "BCH")
        assert balances == {"BTC": {"available": "8", "freeze": "1.5"},
                            "BCH": {"available": "49.95", "freeze": "0"}}
        # history is written asynchronously (by the follower, restarted with the matchengine)
        deadline = time.monotonic() + 60
        while True:
            history = call(port, "balance.history", 1, "BTC", "", 0, 0, 0, 10)
            changes = [r["change"] for r in history["records"]]
            if changes == ["-0.5", "10"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert changes == ["-0.5", "10"]
        book = call(port, "order.book", "BTCBCH", 1, 0, 10)
        assert [o["left"] for o in book["orders"]] == ["1.5"]
        deadline = time.monotonic() + 60
        while True:  # market data and WebSocket clients recover too
            try:
                if market_data_ok():
                    break
            except (AssertionError, OSError, aiohttp.ClientError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"market data lost after killing {name}"
            time.sleep(0.2)

    # Prometheus metrics of the matchengine and accesshttp processes
    me = urllib.request.urlopen(f"http://127.0.0.1:{topology.ports['me_metrics']}/metrics").read()
    assert b'exchange_bus_pending_messages{service="matchengine"}' in me
    assert b'exchange_history_follower_lag{service="matchengine"}' in me
    web = urllib.request.urlopen(f"http://127.0.0.1:{topology.ports['http_metrics']}/metrics").read()
    assert b'exchange_requests_total{method="balance.query",service="accesshttp",status="200"}' in web
    check_status_and_monitoring_names(topology)
    check_bus_mark_in_the_log_database(topology)

    # a write after the last restart still works and is remembered
    call(port, "order.cancel", 1, "BTCBCH", 1)
    assert call(port, "order.book", "BTCBCH", 1, 0, 10)["total"] == 0

    # the watchdogs' fatal lines reached the alert list through the alertcenter
    deadline = time.monotonic() + 60
    alerts: list[bytes] = []
    while time.monotonic() < deadline:
        alerts = redis.Redis(db=REDIS_DB).lrange("alert:message", 0, -1)
        if len(alerts) >= 5:
            break
        time.sleep(0.1)
    text = b"\n".join(alerts).decode()
    for name in ("matchengine", "readhistory", "accesshttp", "marketprice", "accessws"):
        assert f"{name}: " in text and "signal" in text, text
