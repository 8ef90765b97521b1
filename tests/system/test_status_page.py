"""The status page in headless Chromium: it polls /status.json on the metrics port of a real
``exchange-server run`` (with an admin token, given in the page's URL fragment), shows every
service up, follows the operation log as orders arrive, and draws the throughput chart.

Needs Debian's chromium (``apt-get install -y chromium``); without it the test is skipped, or
fails when ``CI`` is set (as the market page test).  The screenshot is kept as
``test-artifacts/status-page.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exchange_server.common.config import MysqlConfig
from tests.support.browser import Browser, chromium_path
from tests.support.leadership import create_leader_history, exporter_pool, leader, standby
from tests.support.server import REPO, ServerProcess, free_port
from tests.support.waiting import wait_port

ARTIFACTS = REPO / "test-artifacts"
TOKEN = "page-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", extra=["--admin-token", TOKEN]).start()
    try:
        yield srv
    finally:
        srv.stop()


def _need_chromium() -> None:
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")


async def test_status_page_follows_the_exchange(server: ServerProcess) -> None:
    _need_chromium()
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
        leaders = await browser.evaluate(
            "[...document.querySelectorAll('#leaders tbody td')].map(td => td.textContent)")
        assert leaders == ["embedded", "single (no standby configured)", "–", "–", "–"]
        durable = f"{state}.data.matchengine.durable_operation"
        before = await browser.evaluate(durable)
        for _ in range(4):  # trades: the log moves on, the chart shows throughput
            server.call("order.put_limit", 1, "BTCBCH", 1, "0.1", "100", "0.002", "0.001", "p")
            server.call("order.put_limit", 2, "BTCBCH", 2, "0.1", "100", "0.002", "0.001", "p")
        await browser.wait_for(f"{durable} >= {before + 8}")
        await browser.wait_for(f"{state}.data.matchengine.trades_per_second > 0")
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


@pytest.mark.mysql
async def test_status_page_shows_leadership(mysql_config: Callable[..., MysqlConfig],
                                            tmp_path: Path) -> None:
    """``status --serve -c DIR`` of a deployment with an active, a standby and a deposed
    matchengine (leadership gauges on real metrics endpoints, tests/support/leadership.py,
    and the log database's leader_history): the page shows each one's role, epoch and lag, the
    last leader change, and the deposed one as a problem."""
    _need_chromium()
    cfg = mysql_config(prefix="leaders")
    create_leader_history(cfg, [(4, "host-a:100", "host-c:50", time.time() - 7200),
                                (5, "host-b:200", "host-a:100", time.time() - 60)])
    db = {"host": cfg.host, "port": cfg.port, "user": cfg.user, "pass": cfg.password,
          "name": cfg.name}
    port = free_port()
    with exporter_pool() as make:
        engines = {"matchengine-a": make(), "matchengine-b": make(), "matchengine-c": make()}
        engines["matchengine-a"].set(**leader(4))  # deposed, unaware
        engines["matchengine-b"].set(**leader(5, changes=2))
        engines["matchengine-c"].set(**standby(5, lag=7))
        for name, exporter in engines.items():
            (tmp_path / f"{name}.json").write_text(json.dumps(
                {"db_log": db, "metrics": {"bind": f"tcp@127.0.0.1:{exporter.server.server_port}"}}))
        proc = subprocess.Popen(
            [sys.executable, "-m", "exchange_server", "status", "--serve", f"127.0.0.1:{port}",
             "-c", str(tmp_path), "--timeout", "30"],  # a deadline: loaded CI
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        browser = None
        try:
            wait_port(port)
            browser = await Browser().start()
            await browser.goto(f"http://127.0.0.1:{port}/status")
            await browser.wait_for("window.statusPage.state.polls >= 1")
            rows = await browser.evaluate(
                "[...document.querySelectorAll('#leaders tbody tr')]"
                ".map(tr => [...tr.children].map(td => td.textContent))")
            assert rows == [["matchengine-a", "DEPOSED", "4", "–", "1"],
                            ["matchengine-b", "active", "5", "–", "2"],
                            ["matchengine-c", "standby", "5", "7", "1"]]
            change = await browser.evaluate("document.getElementById('last-change').textContent")
            assert change.startswith("last leader change: epoch 5 taken by host-b:200 "
                                     "(was host-a:100) at ")
            problems = await browser.evaluate(
                "[...document.querySelectorAll('#problems li')].map(li => li.textContent)")
            assert problems == [
                "matchengine-a still acts as the active matchengine with epoch 4, but epoch 5 "
                "is held by matchengine-b: it is deposed and does not know it (stop it)"]
            assert await browser.evaluate(
                "document.getElementById('verdict').textContent") == "unhealthy"
            await browser.screenshot(ARTIFACTS / "status-page-leadership.png")
            assert not browser.errors, (browser.errors, browser.console)
        finally:
            if browser is not None:
                await browser.close()
            proc.terminate()
            proc.wait(30)
