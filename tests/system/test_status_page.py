"""The status page in headless Chromium: it polls /status.json on the metrics port of a real
``exchange-server run`` (with an admin token, given in the page's URL fragment), shows every
service up, follows the operation log as orders arrive, and draws the throughput chart.

Needs Debian's chromium (``apt-get install -y chromium``); without it the test is skipped, or
fails when ``CI`` is set (as the market page test).  The screenshot is kept as
``test-artifacts/status-page.png``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import Browser, chromium_path
from tests.support.server import REPO, ServerProcess

ARTIFACTS = REPO / "test-artifacts"
TOKEN = "page-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", extra=["--admin-token", TOKEN]).start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_status_page_follows_the_exchange(server: ServerProcess) -> None:
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    server.call("balance.update", 1, "BTC", "deposit", 1, "10", {})
    server.call("balance.update", 2, "BCH", "deposit", 2, "10000", {})
    browser = await Browser().start()
    state = "window.statusPage.state"
    try:
        base = f"http://127.0.0.1:{server.metrics_port}/status"
        # without the token the data is refused, and the page says so
        await browser.goto(base)
        await browser.wait_for(f"{state}.errors.some(e => e.includes('HTTP 401'))")
        assert await browser.evaluate("document.getElementById('verdict').textContent") == \
            "unreachable"
        await browser.goto(f"{base}#token={TOKEN}")
        await browser.wait_for(f"{state}.polls >= 1")
        assert await browser.evaluate("document.getElementById('verdict').textContent") == \
            "healthy"
        cells = await browser.evaluate(
            "[...document.querySelectorAll('#services tbody td')].map(td => td.textContent)")
        assert cells[:3] == ["embedded",
                             "accesshttp, accessws, marketprice, matchengine, readhistory", "up"]
        assert cells[3] == str(server.proc.pid)  # type: ignore[union-attr]
        durable = f"{state}.data.matchengine.durable_operation"
        before = await browser.evaluate(durable)
        for _ in range(4):  # trades: the log moves on, the chart shows throughput
            server.call("order.put_limit", 1, "BTCBCH", 1, "0.1", "100", "0.002", "0.001", "p")
            server.call("order.put_limit", 2, "BTCBCH", 2, "0.1", "100", "0.002", "0.001", "p")
        await browser.wait_for(f"{durable} >= {before + 8}")
        await browser.wait_for(f"{state}.data.matchengine.trades_per_second > 0", timeout=30)
        await browser.wait_for(f"{state}.chartPoints >= 2")
        points = await browser.evaluate(
            "document.getElementById('trades-line').getAttribute('points')")
        assert len(points.split()) >= 2
        rows = await browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#engine tr')]"
            ".map(tr => [tr.children[0].textContent, tr.children[1].textContent]))")
        assert rows["durable operation"] == str(await browser.evaluate(durable))
        assert rows["last slice"] == "none yet"
        lag_rows = await browser.evaluate(
            "[...document.querySelectorAll('#lag tbody tr')].map(tr => tr.children[0].textContent)")
        assert lag_rows == ["history_follower", "bus", "marketprice", "accessws"]
        await browser.screenshot(ARTIFACTS / "status-page.png")
        assert not browser.errors, (browser.errors, browser.console)
    finally:
        await browser.close()
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10000
