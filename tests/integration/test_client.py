"""exchange_server.client against a real ``exchange-server run``: the sync and async HTTP
clients, the WebSocket client (subscriptions, and resubscription after the server restarts),
and the ``call`` console command."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange_server.apidoc.liveserver import AuthStub, LiveServer
from exchange_server.client import (
    AsyncHttpClient,
    AuthenticationRequired,
    BusinessError,
    HttpClient,
    InvalidArgument,
    MethodNotFound,
    TransportError,
    WsClient,
)
from exchange_server.client import cli as client_cli
from exchange_server.client.codec import decimal_text, encode_request

MARKET = "BTCBCH"
#: the WebSocket test trades alone in this market
WS_MARKET = "LTCBCH"
TOKENS = {"token-alice": 1, "token-bob": 2}


@pytest.fixture(scope="module")
def auth() -> Iterator[AuthStub]:
    stub = AuthStub(TOKENS, {"key-alice": 1}).start()
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, auth: AuthStub) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("client") / "data",
                     ws_config=auth.ws_config(cache_timeout=0.05)).start()
    try:
        yield srv
    finally:
        srv.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_decimals_are_sent_as_plain_strings() -> None:
    body = json.loads(encode_request("m", [Decimal("1E-8"), Decimal("2.50"), (1, 2)], 7))
    assert body == {"method": "m", "params": ["0.00000001", "2.50", [1, 2]], "id": 7}
    assert decimal_text(Decimal("-0")) == "0"
    with pytest.raises(ValueError):
        decimal_text(Decimal("NaN"))


def test_sync_round_trip(server: LiveServer) -> None:
    with HttpClient(server.url) as api:
        assert api.balance_update(11, "BTC", "deposit", 1, Decimal("10"), {"tx": "a"}) == \
            {"status": "success"}
        api.balance_update(12, "BCH", "deposit", 2, Decimal("1000.5"), {})
        balances = api.balance_query(11, "BTC", "BCH")
        assert balances == {"BTC": {"available": Decimal(10), "freeze": Decimal(0)},
                            "BCH": {"available": Decimal(0), "freeze": Decimal(0)}}
        assert isinstance(balances["BTC"]["available"], Decimal)
        ask = api.order_put_limit(11, MARKET, 1, Decimal("2"), Decimal("100.1"),
                                  Decimal("0.002"), Decimal("0.001"), "client-test")
        assert ask["price"] == Decimal("100.1") and ask["left"] == Decimal(2)
        assert isinstance(ask["ctime"], float) and isinstance(ask["id"], int)
        bid = api.order_put_limit(12, MARKET, 2, "0.5", "100.1", "0.002", "0.001", "client-test")
        assert bid["left"] == 0 and bid["deal_stock"] == Decimal("0.5")
        assert api.order_depth(MARKET, 10, "0") == {
            "asks": [[Decimal("100.1"), Decimal("1.5")]], "bids": []}
        pending = api.order_pending(11, MARKET, 0, 10)
        assert pending["total"] == 1 and pending["records"][0]["id"] == ask["id"]
        assert api.order_pending_detail(MARKET, 10**9) is None
        summary = api.market_summary(MARKET)
        assert summary[0]["ask_amount"] == Decimal("1.5")
        # untyped call of any method, and raw results
        assert api.call("asset.list")[0] == {"name": "BCH", "prec": 8}
        with HttpClient(server.url, decode=False) as raw:
            assert raw.order_pending_detail(MARKET, ask["id"])["left"] == "1.5"
        # errors: one class per code family, code and message as sent
        with pytest.raises(BusinessError) as business:
            api.order_cancel(12, MARKET, ask["id"])
        assert (business.value.code, business.value.message) == (11, "user not match")
        with pytest.raises(BusinessError) as repeat:
            api.balance_update(11, "BTC", "deposit", 1, Decimal("10"), {"tx": "a"})
        assert (repeat.value.code, repeat.value.message) == (10, "repeat update")
        with pytest.raises(InvalidArgument) as invalid:
            api.order_put_limit(11, MARKET, 3, "1", "1", "0", "0", "x")
        assert invalid.value.code == 1 and invalid.value.method == "order.put_limit"
        with pytest.raises(MethodNotFound):
            api.call("order.no_such_method")
        cancelled = api.order_cancel(11, MARKET, ask["id"])
        assert cancelled["left"] == Decimal("1.5")
        # the batch extension: results and error objects in order
        results = api.batch([("market.last", [MARKET]), ("order.put_limit", [0]),
                             ("asset.list", [])])
        assert results[0] == Decimal("100.1")
        assert isinstance(results[1], InvalidArgument)
        assert results[2][1]["name"] == "BTC"


def test_sync_transport_errors() -> None:
    with HttpClient(f"http://127.0.0.1:{closed_port()}/", timeout=2) as api, \
            pytest.raises(TransportError):
        api.asset_list()
    with pytest.raises(ValueError):
        HttpClient("ftp://example.invalid/")


def test_sync_client_survives_a_closed_keep_alive_connection(server: LiveServer) -> None:
    with HttpClient(server.url) as api:
        api.asset_list()
        assert api._conn is not None and api._conn.sock is not None
        api._conn.sock.shutdown(socket.SHUT_RDWR)  # as if the server had closed it
        assert len(api.market_list()) >= 1  # a read is retried once on a new connection


async def test_async_round_trip(server: LiveServer) -> None:
    async with AsyncHttpClient(server.url) as api:
        await api.balance_update(21, "BTC", "deposit", 1, Decimal("3"), {})
        orders = await asyncio.gather(*(
            api.order_put_limit(21, MARKET, 1, Decimal("0.1"), Decimal(200 + i), "0.002",
                                "0.001", "async") for i in range(5)))
        assert sorted(o["price"] for o in orders) == [Decimal(200 + i) for i in range(5)]
        book = await api.order_book(MARKET, 1, 0, 100)
        assert book["total"] >= 5
        assert all(isinstance(o["amount"], Decimal) for o in book["orders"])
        with pytest.raises(BusinessError) as e:
            await api.order_put_limit(21, MARKET, 1, "100", "1", "0", "0", "async")
        assert e.value.code == 10
        results = await api.batch([("balance.query", [21, "BTC"]), ("nope", [])])
        assert results[0]["BTC"]["freeze"] == Decimal("0.5")
        assert isinstance(results[1], MethodNotFound)
    async with AsyncHttpClient(f"http://127.0.0.1:{closed_port()}/", timeout=2) as down:
        with pytest.raises(TransportError):
            await down.asset_list()


async def _next(sub: Any, accept: Any = lambda p: True, timeout: float = 10.0) -> list[Any]:
    async with asyncio.timeout(timeout):
        while True:
            params = await sub.get()
            if accept(params):
                return list(params)


async def test_ws_queries_and_subscriptions(server: LiveServer) -> None:
    async with WsClient(server.ws_url) as ws, AsyncHttpClient(server.url) as api:
        assert await ws.call("server.ping") == "pong"
        with pytest.raises(AuthenticationRequired):
            await ws.call("asset.query")
        with pytest.raises(BusinessError) as rejected:
            await ws.auth("wrong-token")
        assert (rejected.value.code, rejected.value.message) == (11, "invalid token")
        await ws.auth("token-alice")
        await api.balance_update(1, "LTC", "deposit", 1, Decimal("5"), {})
        await api.balance_update(2, "BCH", "deposit", 2, Decimal("5000"), {})
        orders = await ws.subscribe("order", WS_MARKET)
        assets = await ws.subscribe("asset", "LTC")
        depth = await ws.subscribe("depth", WS_MARKET, 10, "0")
        deals = await ws.subscribe("deals", WS_MARKET)
        ask = await api.order_put_limit(1, WS_MARKET, 1, "1", "300", "0.002", "0.001", "ws")
        event, order = await _next(orders, lambda p: p[1]["id"] == ask["id"])
        assert event == 1 and order["amount"] == Decimal(1)
        (balances,) = await _next(assets, lambda p: p[0]["LTC"]["freeze"] == 1)
        assert balances["LTC"]["freeze"] == Decimal(1)
        clean, book, market = await _next(depth, lambda p: any(
            level[0] == Decimal(300) for level in p[1].get("asks", [])))
        assert market == WS_MARKET and isinstance(clean, bool)
        await api.order_put_limit(2, WS_MARKET, 2, "0.25", "300", "0.002", "0.001", "ws")
        market, new = await _next(deals, lambda p: any(d["price"] == 300 for d in p[1]))
        assert new[0]["amount"] == Decimal("0.25") and new[0]["type"] == "buy"
        assert await ws.call("price.query", WS_MARKET) == Decimal("300")
        mine = await ws.call("order.query", WS_MARKET, 0, 10)
        assert mine["records"][0]["left"] == Decimal("0.75")
        assert set(ws.subscriptions()) == {"order", "asset", "depth", "deals"}
        await deals.unsubscribe()
        assert "deals" not in ws.subscriptions()
        with pytest.raises(StopAsyncIteration):
            await deals.get(1)


async def test_ws_resubscribes_after_the_server_restarts(tmp_path: Path, auth: AuthStub) -> None:
    first = LiveServer(tmp_path / "data", ws_config=auth.ws_config()).start()
    ws = WsClient(first.ws_url, min_delay=0.05, max_delay=0.5, timeout=10)
    second: LiveServer | None = None
    try:
        await ws.connect()
        await ws.auth("token-bob", "test")
        async with AsyncHttpClient(first.url) as api:
            await api.balance_update(2, "BCH", "deposit", 1, Decimal("100"), {})
        orders = await ws.subscribe("order", MARKET)
        depth = await ws.subscribe("depth", MARKET, 5, "0")
        restored = asyncio.Event()
        ws.on_reconnect.append(restored.set)
        first.stop()
        second = LiveServer(tmp_path / "data", ws_config=auth.ws_config(), port=first.port,
                            ws_port=first.ws_port).start()
        async with asyncio.timeout(20):
            await restored.wait()
        assert ws.reconnects >= 1 and ws.connected
        async with AsyncHttpClient(second.url) as api:
            bid = await api.order_put_limit(2, MARKET, 2, "1", "50", "0.002", "0.001", "after")
        # the same Subscription objects deliver again: auth and subscriptions were restored
        event, order = await _next(orders, lambda p: p[1]["id"] == bid["id"], timeout=15)
        assert event == 1 and order["user"] == 2
        await _next(depth, lambda p: any(level[0] == 50 for level in p[1].get("bids", [])),
                    timeout=15)
        assert await ws.call("asset.query", "BCH") == {
            "BCH": {"available": Decimal(50), "freeze": Decimal(50)}}
    finally:
        await ws.close()
        if second is not None:
            second.stop()
        first.stop()


def test_ws_without_reconnect_fails_calls(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(TransportError):
            await WsClient(f"ws://127.0.0.1:{closed_port()}/").connect()

    asyncio.run(scenario())


# -- exchange-server call ---------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = client_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_call_command(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--url", server.url]
    code, out, _ = run_cli(capsys, *url, "balance.update", "31", "BTC", "deposit", "1", "2.5",
                           '{"by": "cli"}')
    assert (code, json.loads(out)) == (0, {"status": "success"})
    code, out, _ = run_cli(capsys, *url, "balance.query", "31", "BTC")
    assert json.loads(out) == {"BTC": {"available": "2.5", "freeze": "0"}}
    code, out, err = run_cli(capsys, *url, "balance.update", "31", "BTC", "withdraw", "2", "-9",
                             "{}")
    assert code == client_cli.EXIT_ERROR and "error 11: balance not enough" in err
    code, out, _ = run_cli(capsys, *url, "--json", "order.depth", '["BTCBCH", 1, "0"]')
    assert code == 0 and set(json.loads(out)) == {"asks", "bids"}
    code, _, err = run_cli(capsys, *url, "order.depth", "BTCBCH", "ten", "0")
    assert code == client_cli.EXIT_USAGE and "integer" in err
    code, out, _ = run_cli(capsys, "--list")
    assert code == 0 and "order.put_limit" in out and "depth.subscribe" in out
    code, out, _ = run_cli(capsys, "--describe", "order.put_limit")
    assert code == 0 and "amount too small" in out
    code, _, err = run_cli(capsys, "--url", f"http://127.0.0.1:{closed_port()}/", "asset.list")
    assert code == client_cli.EXIT_TRANSPORT
    code, out, _ = run_cli(capsys, "--ws", server.ws_url, "--token", "token-alice",
                           "asset.query", "BTC")
    assert code == 0 and "BTC" in json.loads(out)
    code, out, _ = run_cli(capsys, "--ws", server.ws_url, "--count", "1", "depth.subscribe",
                           MARKET, "5", "0")
    lines = out.split("\n}\n")
    assert code == 0 and '"depth.update"' in out and len(lines) >= 2


def _cli(*argv: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """The real ``exchange-server call`` in its own process."""
    return subprocess.run([sys.executable, "-m", "exchange_server", "call", *argv],
                          stdout=stdout, stderr=subprocess.PIPE, timeout=60, check=False)


def test_call_checks_the_param_count(server: LiveServer) -> None:
    url = ["--url", server.url]
    # too few: nothing is sent, a usage line that names the params
    done = _cli(*url, "order.cancel", "31", MARKET)
    assert done.returncode == client_cli.EXIT_PARAM_COUNT == 2 and done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        "exchange-server call: order.cancel takes 3 params, got 2",
        "usage: exchange-server call order.cancel user_id market order_id"]
    # too many, optional params, --json, a repeatable param
    done = _cli(*url, "market.last", MARKET, "extra")
    assert done.returncode == 2
    assert b"usage: exchange-server call market.last market\n" in done.stderr
    done = _cli(*url, "--json", "order.put_limit", f'[31, "{MARKET}", 1]')
    assert done.returncode == 2 and b"takes 8 to 12 params, got 3" in done.stderr
    assert b" source [fee_asset] [fee_discount] [option] [client_id]\n" in done.stderr
    done = _cli(*url, "balance.query")
    assert done.returncode == 2
    assert b"usage: exchange-server call balance.query user_id [asset ...]\n" in done.stderr
    done = _cli("--ws", server.ws_url, "server.auth", "token-alice")
    assert done.returncode == 2
    assert b"usage: exchange-server call --ws URL server.auth token source\n" in done.stderr
    # the right counts reach the server
    done = _cli(*url, "balance.query", "31", "BTC", "BCH")
    assert done.returncode == 0 and set(json.loads(done.stdout)) == {"BTC", "BCH"}
    assert _cli(*url, "balance.query", "31").returncode == 0
    # an undocumented method: the server judges (HTTP 404, method not found)
    done = _cli(*url, "no.such_method", "1", "2")
    assert done.returncode == client_cli.EXIT_ERROR and b"error 4" in done.stderr


def test_call_ws_that_cannot_connect_says_so_once(server: LiveServer) -> None:
    done = _cli("--ws", f"ws://127.0.0.1:{closed_port()}/", "server.time")
    assert done.returncode == client_cli.EXIT_TRANSPORT and done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("exchange-server call: cannot connect to ws://")


def _closed_pipe() -> tuple[int, int]:
    """A pipe whose reader is already gone: every write to it fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return read_end, write_end


@pytest.mark.parametrize("argv", [("--list",), ("--describe", "order.put_limit"),
                                  ("order.depth", MARKET, "10", "0")])
def test_call_into_a_closed_pipe_stops_quietly(server: LiveServer, argv: tuple[str, ...]) -> None:
    """``exchange-server call --list | head``: no BrokenPipeError traceback, the status of a tool
    that SIGPIPE stopped."""
    _, write_end = _closed_pipe()
    try:
        done = _cli("--url", server.url, *argv, stdout=write_end)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (client_cli.EXIT_OUTPUT_CLOSED, b"")


def test_call_list_through_head() -> None:
    done = subprocess.run(["bash", "-c", f"'{sys.executable}' -m exchange_server call --list "
                           "| head -n 2"], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout.decode().splitlines()[0] == "HTTP methods:"


def test_undocumented_args_are_guessed() -> None:
    assert client_cli.convert_args(None, ["12", "1.5", "abc", '{"a": 1}', "true", "-3"]) == \
        [12, "1.5", "abc", {"a": 1}, True, -3]
