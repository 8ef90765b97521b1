"""`exchange-server run` with every service: trades flow to marketprice and to WebSocket pushes."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange_server.client import HttpClient, SyncWsClient
from tests.support.server import ServerProcess, free_port
from tests.support.waiting import wait_until


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data").start()
    yield srv
    assert srv.stop() == 0


def trade(server: ServerProcess, price: str, amount: str, n: int) -> None:
    server.call("order.put_limit", 1, "BTCBCH", 1, amount, price, "0.002", "0.001", "e2e")
    server.call("order.put_limit", 2, "BTCBCH", 2, amount, price, "0.002", "0.001", "e2e")


def wait_for(check: Any, timeout: float = 60.0) -> Any:
    return wait_until(check, timeout=timeout)


def test_trades_reach_marketprice_and_websocket(server: ServerProcess) -> None:
    """Through the project's own clients: blocking HTTP and WebSocket, Decimals in and out."""
    http = HttpClient(f"http://127.0.0.1:{server.port}/")
    http.balance_update(1, "BTC", "deposit", 1, Decimal("100"), {})
    http.balance_update(2, "BCH", "deposit", 2, Decimal("100000"), {})
    assert http.market_last("BTCBCH") == Decimal(0)

    with SyncWsClient(f"ws://127.0.0.1:{server.ws_port}/") as ws:
        deals = ws.subscribe("deals", "BTCBCH")
        trade(server, "101", "0.5", 1)
        seen: list[Any] = []
        deadline = time.monotonic() + 60
        while not any(d["price"] == Decimal("101") for d in seen):
            assert time.monotonic() < deadline, f"no deal pushed: {seen}"
            market, batch = deals.get(timeout=30)[:2]
            assert market == "BTCBCH"
            seen += batch
        assert ws.call("server.ping") == "pong"
    assert any(d["price"] == Decimal("101") and d["amount"] == Decimal("0.5")
               and d["type"] == "buy" for d in seen)

    last = wait_for(lambda: (v := http.market_last("BTCBCH")) and v)
    assert last == Decimal("101")  # the text is "101.00000000": not zero-stripped (rpc.md 6)
    assert server.call("market.last", "BTCBCH") == "101.00000000"
    recent = http.market_deals("BTCBCH", 10, 0)
    assert [(d["price"], d["amount"], d["type"]) for d in recent] == [
        (Decimal("101"), Decimal("0.5"), "buy")]
    now = int(time.time())
    kline = http.market_kline("BTCBCH", now - 3600, now, 60)
    # the deal's minute; a later, empty minute may follow it when the clock has moved on
    assert [row[5] for row in kline if row[7] == "BTCBCH" and row[5] != 0] == [Decimal("0.5")]
    # market.status's window is [now - period, now) over minute buckets (rpc.md 301): a deal
    # in a minute's first second enters it a second later (cached 0.45 s)
    status = wait_for(lambda: (s := http.market_status("BTCBCH", 86400))["volume"] and s)
    assert status["last"] == Decimal("101") and status["volume"] == Decimal("0.5")
    assert http.market_status_today("BTCBCH")["last"] == Decimal("101")
    http.close()


def test_prometheus_metrics(tmp_path: Path) -> None:
    metrics_port = free_port()
    srv = ServerProcess(tmp_path / "data", extra=["--metrics-port", str(metrics_port)]).start()
    try:
        srv.call("balance.update", 1, "BTC", "deposit", 1, "100", {})
        srv.call("order.put_limit", 1, "BTCBCH", 1, "1", "100", "0.002", "0.001", "m")
        text = wait_for(lambda: _scrape(metrics_port))
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                       if line and not line.startswith("#"))
        assert float(samples['exchange_operations{service="matchengine"}']) == 2
        assert float(samples['exchange_open_orders{service="matchengine"}']) == 1
        assert float(samples['exchange_operlog_commit_lag{service="matchengine"}']) == 0
        assert float(samples['exchange_requests_total{method="order.put_limit",'
                             'service="accesshttp",status="200"}']) == 1
        assert 'exchange_history_follower_lag{service="matchengine"}' in samples
        assert "process_resident_memory_bytes" in samples
    finally:
        assert srv.stop() == 0


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def test_market_data_survives_restart(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    srv.call("balance.update", 1, "BTC", "deposit", 1, "100", {})
    srv.call("balance.update", 2, "BCH", "deposit", 2, "100000", {})
    for price in ("100", "102", "99"):
        trade(srv, price, "1", 1)
    wait_for(lambda: len(srv.call("market.deals", "BTCBCH", 10, 0)) == 3)
    before = srv.call("market.deals", "BTCBCH", 10, 0)
    assert srv.stop() == 0
    srv2 = ServerProcess(tmp_path / "data").start()
    try:
        assert srv2.call("market.deals", "BTCBCH", 10, 0) == before
        assert srv2.call("market.last", "BTCBCH") == "99.00000000"
        trade(srv2, "105", "1", 1)
        after = wait_for(lambda: (d := srv2.call("market.deals", "BTCBCH", 10, 0)) and len(d) == 4 and d)
        assert [d["price"] for d in after] == ["105", "99", "102", "100"]
        assert len({d["id"] for d in after}) == 4  # no deal counted twice
    finally:
        assert srv2.stop() == 0
