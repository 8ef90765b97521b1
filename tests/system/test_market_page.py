"""The market page in headless Chromium: orders placed through HTTP show up on the page
(order book / depth, recent trades, candles, 24 h status) through the WebSocket API.

Needs Debian's chromium (``apt-get install -y chromium``); without it the test is skipped, or
fails when ``CI`` is set.  The screenshot is kept as ``test-artifacts/market-page.png``.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator

import pytest

from exchange_server.apidoc.liveserver import LiveServer
from exchange_server.client import AsyncHttpClient
from tests.support.browser import Browser, chromium_path
from tests.support.server import REPO
from tests.support.waiting import wait_until_async

ARTIFACTS = REPO / "test-artifacts"
MARKET = "BTCBCH"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("page") / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


def _get(port: int, path: str) -> tuple[int, str | None, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def test_page_and_assets_are_served(server: LiveServer) -> None:
    status, ctype, body = _get(server.port, f"/market/{MARKET}?interval=300")
    assert status == 200 and ctype == "text/html; charset=utf-8"
    assert b'data-market="BTCBCH"' in body and b"{{MARKET}}" not in body
    status, ctype, body = _get(server.port, "/static/lightweight-charts.standalone.production.js")
    assert status == 200 and ctype.startswith("application/javascript")
    assert b"Lightweight Charts" in body[:300]
    for name in ("market.js", "market.css", "lightweight-charts.LICENSE.txt"):
        assert _get(server.port, f"/static/{name}")[0] == 200
    status, _, body = _get(server.port, "/market-config.json")
    assert status == 200 and b"ws_url" in body
    # names that are not market names, and files that are not assets: the usual 400
    for path in ("/market/", "/market/<script>", "/static/", "/static/..%2Fpages.py",
                 "/static/nope.js"):
        assert _get(server.port, path)[:3:2] == (400, b""), path


async def test_page_follows_orders(server: LiveServer) -> None:
    if chromium_path() is None:  # `make test` installs it (scripts/test-deps.sh): never a skip
        pytest.fail("chromium is missing: run `make test-deps` (apt-get install -y chromium)")
    async with AsyncHttpClient(server.url) as api:
        await api.balance_update(1, "BTC", "deposit", 1, "100", {})
        await api.balance_update(2, "BCH", "deposit", 2, "100000", {})
        for i, price in enumerate(("101", "102", "103.5", "105", "108")):
            await api.order_put_limit(1, MARKET, 1, str(1 + i * 0.5), price, "0.002", "0.001",
                                      "page")
        for i, price in enumerate(("99", "98.5", "97", "95")):
            await api.order_put_limit(2, MARKET, 2, str(2 + i), price, "0.002", "0.001", "page")
        await api.order_put_limit(2, MARKET, 2, "0.4", "101", "0.002", "0.001", "page")

        browser = await Browser().start()
        try:
            # 1-second candles, so that a few seconds of trading draw several of them
            await browser.goto(f"http://127.0.0.1:{server.port}/market/{MARKET}"
                               f"?ws=ws://127.0.0.1:{server.ws_port}/&interval=1")
            state = "window.marketPage.state"
            await browser.wait_for(f"{state}.connected && {state}.asks.size === 5 "
                                   f"&& {state}.bids.size === 4")
            await browser.wait_for(f"{state}.trades.length === 1")
            assert await browser.evaluate("document.querySelectorAll('#asks tr').length") == 5
            assert await browser.evaluate("document.querySelectorAll('#bids tr').length") == 4

            # a bid that takes the two best asks: new trades, levels gone, a new best bid
            await api.order_put_limit(2, MARKET, 2, "3", "102.5", "0.002", "0.001", "page")
            trades = await browser.wait_for(
                f"{state}.trades.length >= 3 && {state}.trades.map(t => t.price)")
            assert {"101", "102"} <= set(trades)
            await browser.wait_for(f"!{state}.asks.has('101') && !{state}.asks.has('102') "
                                   f"&& {state}.bids.has('102.5')")
            await browser.wait_for("document.querySelector('#trades tr').children[1]"
                                   ".textContent === '102'")
            await browser.wait_for("document.querySelector('#bids tr td').textContent "
                                   "=== '102.5'")
            # numerically: price.update carries market.last's text ("102.00000000", trailing
            # zeros kept) and state.update the status's ("102"); which of the two pushes comes
            # last is a race between two polling feeds, and the page shows whichever came last
            await browser.wait_for("Number(document.getElementById('last-price').textContent)"
                                   " === 102")
            await browser.wait_for(f"{state}.status && {state}.status.volume !== '0'")
            # more trading, one trade a second: candles appear one by one
            answered = time.time()
            for price, side in (("103.5", 2), ("99", 1), ("102.5", 1), ("105", 2)):
                # each trade in a later second than the one before (its own 1 s candle)
                await wait_until_async(lambda after=int(answered): int(time.time()) > after,
                                       interval=0.05, message="the next second")
                await api.order_put_limit(1 if side == 1 else 2, MARKET, side, "0.5", price,
                                          "0.002", "0.001", "page")
                answered = time.time()
            await browser.wait_for(f"{state}.trades.length >= 7")
            await browser.wait_for(f"{state}.candles >= 4 && {state}.updates.kline >= 3")
            # the chart draws on animation frames: let two pass before the screenshot
            await browser.evaluate("new Promise(r => requestAnimationFrame("
                                   "() => requestAnimationFrame(() => r(true))))")
            await browser.screenshot(ARTIFACTS / "market-page.png")
            # switching the candle interval reloads and resubscribes
            await browser.evaluate("(() => { const s = document.getElementById('interval');"
                                   " s.value = '300'; s.dispatchEvent(new Event('change'));"
                                   " return true; })()")
            await browser.wait_for(f"{state}.interval === 300 && location.search.includes("
                                   "'interval=300')")
            # one candle per 5-minute bucket the trades fall in (one, unless the few seconds
            # of trading straddled a multiple of 300 s)
            await browser.wait_for(f"{state}.trades.length >= 7 && {state}.candles === new Set("
                                   f"{state}.trades.map(t => Math.floor(t.time / 300))).size")
            errors = await browser.evaluate(f"{state}.errors")
            assert not errors and not browser.errors, (errors, browser.errors, browser.console)
        finally:
            await browser.close()
    assert (ARTIFACTS / "market-page.png").stat().st_size > 10000


def test_market_config_tells_where_the_websocket_is() -> None:
    from types import SimpleNamespace

    from exchange_server.accesshttp import pages

    page = pages.handle_get(b"/market-config.json?x=1", SimpleNamespace(ws_url=None, ws_port=9001))
    assert page is not None and page[0] == 200
    assert json.loads(page[1]) == {"ws_url": None, "ws_port": 9001}
    page = pages.handle_get(b"/market-config.json", SimpleNamespace(ws_url="wss://x/ws"))
    assert page is not None and json.loads(page[1])["ws_url"] == "wss://x/ws"


# -- how the page shows numbers (the 24 h status' "0" prices, market.last's trailing zeros) -------


def _chromium_or_skip() -> None:
    if chromium_path() is None:  # `make test` installs it (scripts/test-deps.sh): never a skip
        pytest.fail("chromium is missing: run `make test-deps` (apt-get install -y chromium)")


async def _text(browser: Browser, element_id: str) -> str:
    text: str = await browser.evaluate(f"document.getElementById('{element_id}').textContent")
    return text


async def test_page_formats_prices_like_the_api(server: LiveServer) -> None:
    """LTCBCH's first deal at 91.59: price.update (like market.last) says "91.59000000", the
    24 h status says open and low "0"; the page shows "91.59" and "—".  ETHBCH has no deal at
    all: every price is "—", volume "0"."""
    _chromium_or_skip()
    market = "LTCBCH"
    async with AsyncHttpClient(server.url) as api:
        await api.balance_update(51, "LTC", "deposit", 1, "10", {})
        await api.balance_update(52, "BCH", "deposit", 2, "10000", {})
        await api.order_put_limit(51, market, 1, "1", "91.59", "0.002", "0.001", "page")
        await api.order_put_limit(52, market, 2, "1", "91.59", "0.002", "0.001", "page")
        async def traded() -> bool:  # marketprice has the deal
            return bool(await api.market_last(market) != 0)
        await wait_until_async(traded, message="marketprice never saw the deal")

    browser = await Browser().start()
    try:
        ws = f"?ws=ws://127.0.0.1:{server.ws_port}/"
        await browser.goto(f"http://127.0.0.1:{server.port}/market/{market}{ws}")
        state = "window.marketPage.state"
        await browser.wait_for(f"{state}.connected && {state}.updates.price >= 1 && "
                               f"{state}.status && {state}.status.volume !== '0' "
                               f"&& {state}.trades.length === 1")
        assert await _text(browser, "last-price") == "91.59"
        assert await _text(browser, "stat-high") == "91.59"
        assert await _text(browser, "stat-low") == "—"
        assert await _text(browser, "stat-open") == "—"
        assert await _text(browser, "stat-volume") == "1"
        assert await _text(browser, "stat-deal") == "91.59"
        assert "first deal" in await browser.evaluate(
            "document.getElementById('stat-low').title")
        assert await browser.evaluate("document.querySelector('#trades tr').children[1]"
                                      ".textContent") == "91.59"
        # the formatting itself, on the texts the API sends
        samples = {"91.59000000": "91.59", "100.00000000": "100", "0.5": "0.5", "7": "7",
                   "-2.10": "-2.1", "1e-8": "1e-8", "5.0e-7": "5.0e-7"}
        shown = await browser.evaluate(
            f"{json.dumps(list(samples))}.map(window.marketPage.format.decimal)")
        assert shown == list(samples.values())
        assert await browser.evaluate("window.marketPage.format.price('0')") == "—"
        # the way back to the index
        assert await browser.evaluate("document.getElementById('home').getAttribute('href')") \
            == "/"

        await browser.goto(f"http://127.0.0.1:{server.port}/market/ETHBCH{ws}")
        await browser.wait_for(f"{state}.connected && {state}.updates.state >= 1")
        for element_id in ("last-price", "stat-high", "stat-low", "stat-open"):
            assert await _text(browser, element_id) == "—", element_id
        assert await _text(browser, "stat-volume") == "0"
        errors = await browser.evaluate(f"{state}.errors")
        assert not errors and not browser.errors, (errors, browser.errors, browser.console)
    finally:
        await browser.close()
