"""accessws against real services: every method and push, auth, isolation, subscriptions.

The stack (tests/support/accessws_support.py) is the real matchengine on SQLite, the in-process bus
fed by the publisher, marketprice, the history writer + readhistory, and accessws on a free
port; clients are aiohttp WebSocket clients (or raw sockets where the bytes matter); server.auth
and server.sign talk to a small real HTTP auth service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from exchange_server.accessws import market as market_mod
from exchange_server.accessws.config import AccessWsConfig
from exchange_server.accessws.depth import apply_diff
from exchange_server.accessws.server import AccessWs
from tests.support.accessws_support import (
    MARKET,
    AuthService,
    RawWs,
    Stack,
    WsClient,
    fast_config,
)
from tests.support.waiting import wait_until_async

ALICE = 101
BOB = 102


@pytest.fixture
async def auth() -> AsyncIterator[AuthService]:
    service = AuthService()
    service.tokens.update({"tok-alice": ALICE, "tok-bob": BOB})
    service.keys["key-alice"] = ("secret-a", ALICE)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def stack(tmp_path: Path, auth: AuthService) -> AsyncIterator[Stack]:
    st = await Stack(tmp_path, auth=auth).start()
    yield st
    await st.stop()


@pytest.fixture
async def clients(stack: Stack) -> AsyncIterator[list[WsClient]]:
    """Connections opened by a test (closed at teardown): append to the list."""
    opened: list[WsClient] = []
    yield opened
    for c in opened:
        await c.close()


async def connect(stack: Stack, clients: list[WsClient], token: str | None = None) -> WsClient:
    c = await WsClient.connect(stack.url)
    clients.append(c)
    if token is not None:
        assert await c.call("server.auth", token, "web") == {"status": "success"}
    return c


#: Generous deadline for what the server does by itself (a loaded machine is slow).
DEADLINE = 30.0


async def until(predicate: Any, timeout: float = DEADLINE) -> None:
    await wait_until_async(predicate, timeout)


def D(x: str) -> Decimal:
    return Decimal(x)


# -- frames, server.* -----------------------------------------------------------------------------


async def test_ping_time_and_reply_text(stack: Stack, clients: list[WsClient]) -> None:
    c = await connect(stack, clients)
    assert await c.call("server.ping") == "pong"
    assert c.raw_replies[1] == '{"error": null, "result": "pong", "id": 1}'
    before = int(time.time())
    t = await c.call("server.time", "ignored", 5)
    assert isinstance(t, int) and before <= t <= time.time()  # however long the call took
    # any integer id is echoed, negative included
    await c.ws.send_str('{"method": "server.ping", "params": [], "id": -7}')
    await until(lambda: -7 in c.raw_replies)
    assert c.raw_replies[-7] == '{"error": null, "result": "pong", "id": -7}'


async def test_unknown_method_answers_error_4(stack: Stack, clients: list[WsClient]) -> None:
    c = await connect(stack, clients)
    assert await c.error("order.put_limit", MARKET, 1, "1", "1") == (4, "method not found")
    assert await c.error("nope") == (4, "method not found")
    assert c.raw_replies[2] == ('{"error": {"code": 4, "message": "method not found"}, '
                                '"result": null, "id": 2}')
    assert await c.call("server.ping") == "pong"  # still open


@pytest.mark.parametrize("payload", [
    b"not json", b"", b"[]", b"1", b"null", b'"x"', b"{}",
    b'{"method": "server.ping", "params": [], "id": "1"}',
    b'{"method": "server.ping", "params": [], "id": 1.5}',
    b'{"method": "server.ping", "params": [], "id": true}',
    b'{"method": "server.ping", "params": [], "id": null}',
    b'{"method": "server.ping", "params": [], "id": 9223372036854775808}',
    b'{"method": "server.ping", "params": [], "id": 99999999999999999999999}',
    b'{"method": "server.ping", "params": {}, "id": 1}',
    b'{"method": "server.ping", "params": null, "id": 1}',
    b'{"method": 5, "params": [], "id": 1}',
    b'{"params": [], "id": 1}',
    b'{"method": "server.ping", "id": 1}',
    b'{"method": "server.ping", "params": []}',
])
async def test_malformed_request_closes_without_answer(stack: Stack, payload: bytes) -> None:
    assert stack.ws is not None
    raw, head = await RawWs.open(stack.ws.port, RawWs.handshake())
    assert head.startswith(b"HTTP/1.1 101")
    raw.send_frame(payload)
    frames = []
    while (frame := await raw.read_frame()) is not None:
        frames.append(frame)
    assert all(opcode == 8 for opcode, _ in frames), frames  # at most a close frame
    raw.close()
    await until(lambda: stack.ws is not None and stack.ws.stats()["connections"] == 0)


async def test_binary_and_fragmented_messages(stack: Stack) -> None:
    assert stack.ws is not None
    raw, head = await RawWs.open(stack.ws.port, RawWs.handshake())
    assert head.startswith(b"HTTP/1.1 101")
    raw.send_frame(b'{"method": "server.ping", "params": [], "id": 1}', opcode=2)
    assert await raw.read_frame() == (1, b'{"error": null, "result": "pong", "id": 1}')
    message = b'{"method": "server.ping", "params": [], "id": 2}'
    raw.send_frame(message[:10], opcode=1, fin=False)
    raw.send_frame(message[10:30], opcode=0, fin=False)
    raw.send_frame(b"abc", opcode=9)  # a ping in the middle of a fragmented message
    raw.send_frame(message[30:], opcode=0, fin=True)
    assert await raw.read_frame() == (10, b"abc")
    assert await raw.read_frame() == (1, b'{"error": null, "result": "pong", "id": 2}')
    raw.send_frame(b"", opcode=8)  # close -> the server answers close and hangs up
    assert await raw.closed()
    raw.close()


async def test_oversized_message_closes(tmp_path: Path, clients: list[WsClient]) -> None:
    st = await Stack(tmp_path, config=fast_config(svr=_svr(max_pkg_size=1000)),
                     marketprice=False, readhistory=False).start()
    try:
        c = await connect(st, clients)
        await c.ws.send_str('{"method": "server.ping", "params": ["' + "x" * 2000 + '"], "id": 1}')
        await asyncio.wait_for(c.closed.wait(), DEADLINE)
        assert c.ws.close_code == 1009
        # the server is fine: a new connection works, and a message just under the limit too
        c2 = await connect(st, clients)
        assert await c2.call("server.ping", "y" * 900) == "pong"
    finally:
        await st.stop()


def _svr(**kw: Any) -> Any:
    from dataclasses import replace

    from exchange_server.accessws.config import WsSvrConfig

    return replace(WsSvrConfig(), **kw)


async def test_flood_is_throttled_and_others_unaffected(tmp_path: Path,
                                                        clients: list[WsClient]) -> None:
    config = fast_config(rate_limit=1000.0, rate_burst=20)
    st = await Stack(tmp_path, config=config, marketprice=False, readhistory=False).start()
    try:
        flooder = await connect(st, clients)
        other = await connect(st, clients)
        n = 600
        start = time.monotonic()
        for i in range(1, n + 1):
            await flooder.ws.send_str(f'{{"method": "server.ping", "params": [], "id": {i}}}')
        # while the flood is being served (the throttle makes it last >= 0.58 s however fast
        # the machine), another connection is answered: not queued behind the flood
        assert await other.call("server.ping") == "pong"
        assert len(flooder.raw_replies) < n
        await until(lambda: len(flooder.raw_replies) == n)
        elapsed = time.monotonic() - start
        assert elapsed >= (n - 20) / 1000.0 * 0.8  # throttled to ~rate_limit
        assert sorted(flooder.raw_replies) == list(range(1, n + 1))  # every one answered
    finally:
        await st.stop()


async def test_idle_connection_closed_after_keep_alive(tmp_path: Path,
                                                       clients: list[WsClient]) -> None:
    st = await Stack(tmp_path, config=fast_config(svr=_svr(keep_alive=2)), marketprice=False,
                     readhistory=False).start()
    try:
        busy = await connect(st, clients)
        start = time.monotonic()  # before the idle one connects: the bound below is causal
        idle = await connect(st, clients)
        while not idle.closed.is_set():
            assert time.monotonic() - start < DEADLINE
            await busy.call("server.ping")
            # paced activity is the thing under test: busy stays active while idle is not
            await asyncio.sleep(0.2)
        assert time.monotonic() - start >= 2.0
        assert not busy.closed.is_set()
    finally:
        await st.stop()


# -- handshake ------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers,method,version", [
    ({"Sec-WebSocket-Protocol": "other"}, "GET", "1.1"),
    ({"Sec-WebSocket-Version": "8"}, "GET", "1.1"),
    ({"Sec-WebSocket-Key": None}, "GET", "1.1"),
    ({"Upgrade": None}, "GET", "1.1"),
    ({"Connection": "keep-alive"}, "GET", "1.1"),
    ({"Host": None}, "GET", "1.1"),
    ({}, "POST", "1.1"),
    ({}, "GET", "1.0"),
    ({"Origin": "https://evil.example"}, "GET", "1.1"),
])
async def test_bad_handshake_closes_without_response(tmp_path: Path, headers: dict[str, Any],
                                                     method: str, version: str) -> None:
    config = fast_config(svr=_svr(origin="viabtc.com"))
    st = await Stack(tmp_path, config=config, marketprice=False, readhistory=False).start()
    try:
        assert st.ws is not None
        base = {"Origin": "https://www.viabtc.com"}
        base.update(headers)
        raw, head = await RawWs.open(st.ws.port, RawWs.handshake(base, method, version))
        if "Host" in headers:
            # aiohttp's HTTP parser refuses an HTTP/1.1 request without Host itself
            assert head.startswith(b"HTTP/1.0 400") or head == b""
        else:
            assert head == b""
        await asyncio.wait_for(raw.reader.read(), DEADLINE)  # and the connection is closed
        raw.close()
        # a good one passes: the sub-protocol is echoed when offered, absent otherwise
        good = RawWs.handshake({"Origin": "https://www.viabtc.com",
                                "Sec-WebSocket-Protocol": "superchat, chat"})
        raw, head = await RawWs.open(st.ws.port, good)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"\r\nSec-WebSocket-Protocol: chat\r\n" in head
        raw.close()
        plain = RawWs.handshake({"Origin": "https://www.viabtc.com"})
        raw, head = await RawWs.open(st.ws.port, plain)
        assert head.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol" not in head
        raw.close()
    finally:
        await st.stop()


# -- auth -----------------------------------------------------------------------------------------


async def test_auth_success_and_request_shape(stack: Stack, auth: AuthService,
                                              clients: list[WsClient]) -> None:
    c = await connect(stack, clients)
    assert await c.call("server.auth", "tok-alice", "web") == {"status": "success"}
    request = auth.requests[-1]
    assert request["method"] == "GET" and request["path"] == "auth"
    assert request["headers"]["Authorization"] == "tok-alice"
    assert request["headers"]["Accept-Language"] == "en_US"
    assert request["headers"]["Content-Type"] == "application/json"
    await stack.deposit(ALICE, "BTC", "3")
    assert await c.call("asset.query", "BTC") == {"BTC": {"available": "3", "freeze": "0"}}


@pytest.mark.parametrize("token,code,message", [
    ("unknown-token", 11, "token expired"),
    ("garbage", 2, "internal error"),
    ("nomessage", 2, "internal error"),
    ("zero", 2, "internal error"),
])
async def test_auth_failures(stack: Stack, clients: list[WsClient], token: str, code: int,
                             message: str) -> None:
    c = await connect(stack, clients)
    assert await c.error("server.auth", token, "web") == (code, message)
    assert await c.error("asset.query") == (6, "require authentication")


async def test_auth_timeout_and_unreachable(tmp_path: Path, auth: AuthService,
                                            clients: list[WsClient]) -> None:
    config = fast_config(backend_timeout=0.3)
    st = await Stack(tmp_path, config=config, auth=auth, marketprice=False,
                     readhistory=False).start()
    try:
        c = await connect(st, clients)
        start = time.monotonic()
        # the auth service answers "slow" after 1 s: error 5 shows the 0.3 s timeout ended it
        assert await c.error("server.auth", "slow", "web") == (5, "service timeout")
        assert time.monotonic() - start >= 0.3  # not before the timeout
        assert st.ws is not None
        st.ws.auth.auth_url = "http://127.0.0.1:1/auth"  # nothing listens there
        assert await c.error("server.auth", "tok-alice", "web") == (2, "internal error")
    finally:
        await st.stop()


@pytest.mark.parametrize("params", [
    [], ["tok-alice"], ["tok-alice", "web", "x"], [1, "web"], ["tok-alice", 1],
    ["tok-alice", "s" * 32], ["tok-alice", None],
])
async def test_auth_bad_params(stack: Stack, clients: list[WsClient], params: list[Any]) -> None:
    c = await connect(stack, clients)
    assert await c.error("server.auth", *params) == (1, "invalid argument")


async def test_auth_source_limit(stack: Stack, clients: list[WsClient]) -> None:
    c = await connect(stack, clients)
    assert await c.call("server.auth", "tok-alice", "s" * 31) == {"status": "success"}


async def test_sign(stack: Stack, auth: AuthService, clients: list[WsClient]) -> None:
    c = await connect(stack, clients)
    tonce = int(time.time() * 1000)
    good = AuthService.signature("secret-a", "key-alice", tonce)
    assert await c.error("server.sign", "key-alice", "bad-signature", tonce) == \
        (11, "invalid signature")
    old = tonce - 120_000
    assert await c.error("server.sign", "key-alice",
                         AuthService.signature("secret-a", "key-alice", old), old) == \
        (11, "tonce out of window")
    assert await c.error("server.sign", "no such key", good, tonce) == (11, "invalid access_id")
    assert auth.requests[-1]["query"] == {"access_id": "no such key", "tonce": str(tonce)}
    for params in ([], ["key-alice", good], ["key-alice", good, 0], ["key-alice", good, "1"],
                   ["key-alice", good, 1.5], [1, good, tonce]):
        assert await c.error("server.sign", *params) == (1, "invalid argument")
    assert await c.error("asset.query") == (6, "require authentication")
    assert await c.call("server.sign", "key-alice", good, tonce) == {"status": "success"}
    request = auth.requests[-1]
    assert request["method"] == "GET" and request["headers"]["Authorization"] == good
    assert request["headers"]["Accept-Language"] == "en_US"
    await stack.deposit(ALICE, "BCH", "7")
    assert await c.call("asset.query", "BCH") == {"BCH": {"available": "7", "freeze": "0"}}


async def test_no_auth_server_configured(tmp_path: Path, clients: list[WsClient]) -> None:
    st = await Stack(tmp_path, marketprice=False, readhistory=False).start()
    try:
        c = await connect(st, clients)
        assert await c.error("server.auth", "tok", "web") == (3, "service unavailable")
        assert await c.error("server.sign", "id", "sig", 5) == (3, "service unavailable")
    finally:
        await st.stop()


async def test_everything_private_requires_auth(stack: Stack, clients: list[WsClient]) -> None:
    c = await connect(stack, clients)
    cases: list[tuple[str, list[Any]]] = [
        ("order.query", [MARKET, 0, 10]), ("order.history", [MARKET, 0, 0, 0, 10, 0]),
        ("order.subscribe", [MARKET]), ("order.unsubscribe", []),
        ("asset.query", []), ("asset.history", ["", "", 0, 0, 0, 10]),
        ("asset.subscribe", ["BTC"]), ("asset.unsubscribe", []),
    ]
    for method, params in cases:
        assert await c.error(method, *params) == (6, "require authentication"), method


class _Down:
    def connected(self) -> bool:
        return False

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        raise AssertionError("not connected")


class _Slow:
    def __init__(self) -> None:
        self.calls = 0

    def connected(self) -> bool:
        return True

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        self.calls += 1
        await asyncio.Event().wait()  # never answers
        return b""


class _Broken:
    def connected(self) -> bool:
        return True

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        raise ConnectionResetError("backend connection lost")


async def test_backend_down_slow_broken() -> None:
    config = AccessWsConfig(backend_timeout=0.2)
    slow = _Slow()
    ws = AccessWs(config, {"matchengine": _Down(), "readhistory": _Down(), "marketprice": slow})
    await ws.start("127.0.0.1", 0)
    c = await WsClient.connect(f"http://127.0.0.1:{ws.port}/")
    try:
        # connection check first for these (before auth), as the original
        for method, params in [("order.query", [MARKET, 0, 1]),
                               ("order.history", [MARKET, 0, 0, 0, 1, 0]),
                               ("asset.history", ["", "", 0, 0, 0, 1]),
                               ("depth.query", [MARKET, 5, "0"])]:
            assert await c.error(method, *params) == (2, "internal error"), method
        # ...but asset.query checks auth first
        assert await c.error("asset.query") == (6, "require authentication")
        start = time.monotonic()
        # _Slow never answers: error 5 can only come from the 0.2 s timeout
        assert await c.error("price.query", MARKET) == (5, "service timeout")
        assert time.monotonic() - start >= 0.2  # not before the timeout
        # a missing backend is "not connected"
        ws.backends["marketprice"] = _Broken()
        assert await c.error("kline.query", MARKET, 1, 2, 60) == (2, "internal error")
        del ws.backends["marketprice"]
        assert await c.error("today.query", MARKET) == (2, "internal error")
        assert await c.call("server.ping") == "pong"
    finally:
        await c.close()
        await ws.stop()


# -- forwarded queries ----------------------------------------------------------------------------


async def _trade(stack: Stack) -> None:
    """ALICE bids 1 @ 100, BOB sells 0.4 (a deal at 100)."""
    await stack.deposit(ALICE, "BCH", "1000")
    await stack.deposit(BOB, "BTC", "10")
    await stack.limit(ALICE, 2, "1", "100")
    await stack.limit(BOB, 1, "0.4", "100")
    await stack.marketprice.wait_offset(0)


async def test_market_queries_pass_backend_replies_through(stack: Stack,
                                                           clients: list[WsClient]) -> None:
    await _trade(stack)
    c = await connect(stack, clients)
    now = int(time.time())
    cases: list[tuple[str, list[Any], Any, str]] = [
        ("kline.query", [MARKET, now - 3600, now, 60], stack.marketprice, "market.kline"),
        ("state.query", [MARKET, 86400], stack.marketprice, "market.status"),
        ("today.query", [MARKET], stack.marketprice, "market.status_today"),
        ("deals.query", [MARKET, 10, 0], stack.marketprice, "market.deals"),
        ("price.query", [MARKET], stack.marketprice, "market.last"),
        ("depth.query", [MARKET, 10, "0"], stack.engine, "order.depth"),
    ]
    for method, params, service, backend_method in cases:
        reply = await c.request(method, *params)
        expected = await service.call(backend_method, params, reply["id"])
        assert c.raw_replies[reply["id"]] == expected.decode(), method
    assert orjson.loads(c.raw_replies[5])["result"] == "100.00000000"
    # a second identical query within cache_timeout comes from accessws' cache, same answer
    assert stack.ws is not None
    hits = stack.ws.cache.hits
    reply = await c.request("deals.query", MARKET, 10, 0)
    assert stack.ws.cache.hits == hits + 1
    assert c.raw_replies[reply["id"]] == (await stack.marketprice.call(
        "market.deals", [MARKET, 10, 0], reply["id"])).decode()
    # errors are passed through and not cached
    assert await c.error("price.query", "NOSUCH") == (1, "invalid argument")
    assert await c.error("price.query", "NOSUCH") == (1, "invalid argument")
    assert stack.ws.cache.hits == hits + 1


async def test_private_queries(stack: Stack, clients: list[WsClient]) -> None:
    await _trade(stack)
    cancelled = await stack.limit(ALICE, 2, "2", "90")
    await stack.me("order.cancel", ALICE, MARKET, cancelled["id"])
    await stack.history_synced()
    alice = await connect(stack, clients, "tok-alice")
    bob = await connect(stack, clients, "tok-bob")
    pending = await alice.call("order.query", MARKET, 0, 10)
    assert pending == await stack.me("order.pending", ALICE, MARKET, 0, 10)
    assert pending["total"] == 1 and pending["records"][0]["left"] == "0.6"
    assert (await bob.call("order.query", MARKET, 0, 10))["total"] == 0
    history = await bob.call("order.history", MARKET, 0, 0, 0, 10, 0)
    assert [r["amount"] for r in history["records"]] == ["0.4"]
    assert history["records"][0]["user"] == BOB
    assert (await alice.call("order.history", MARKET, 0, 0, 0, 10, 0))["records"] == []
    assert await alice.call("asset.query") == await stack.me("balance.query", ALICE)
    assert await alice.call("asset.query", "BTC") == {
        "BTC": {"available": "0.3996", "freeze": "0"}}
    records = (await alice.call("asset.history", "BTC", "", 0, 0, 0, 10))["records"]
    assert [(r["business"], r["change"]) for r in records] == [("trade", "-0.0004"),
                                                               ("trade", "0.4")]
    assert await alice.error("order.query", MARKET, 0) == (1, "invalid argument")
    assert await alice.error("order.query", MARKET, "0", 10) == (1, "invalid argument")
    assert await alice.error("order.query", 5, 0, 10) == (1, "invalid argument")
    assert await alice.error("order.history", MARKET, 0, 0, 0, 10) == (1, "invalid argument")
    assert await alice.error("asset.history", "BTC", "", 0, 0, 0) == (1, "invalid argument")
    assert await alice.error("asset.query", "NOPE") == (1, "invalid argument")


# -- market-data pushes ---------------------------------------------------------------------------


async def test_depth_updates(stack: Stack, clients: list[WsClient]) -> None:
    await stack.deposit(ALICE, "BCH", "100000")
    await stack.deposit(BOB, "BTC", "100")
    c = await connect(stack, clients)
    assert await c.call("depth.subscribe", MARKET, 5, "0") == {"status": "success"}
    assert await c.next("depth.update") == [True, {"asks": [], "bids": []}, MARKET]
    book: dict[str, Any] = {"asks": [], "bids": []}

    async def step(expected: list[Any]) -> None:
        update = await c.next("depth.update")
        assert update == expected
        apply_diff(book, update[1], 5)
        depth = await stack.me("order.depth", MARKET, 5, "0")
        assert book == depth

    bid = await stack.limit(ALICE, 2, "1", "100")
    await step([False, {"bids": [["100", "1"]]}, MARKET])
    await stack.limit(BOB, 1, "2", "110")
    await step([False, {"asks": [["110", "2"]]}, MARKET])
    await stack.limit(ALICE, 2, "0.5", "100")
    await step([False, {"bids": [["100", "1.5"]]}, MARKET])
    await stack.limit(ALICE, 2, "1", "101")
    await step([False, {"bids": [["101", "1"]]}, MARKET])
    await stack.me("order.cancel", ALICE, MARKET, bid["id"])
    await step([False, {"bids": [["100", "0.5"]]}, MARKET])
    await stack.limit(ALICE, 2, "2", "110")  # takes the whole ask side, rests 0 @ 110
    await step([False, {"asks": [["110", "0"]]}, MARKET])
    # with a full window, a level pushed out of it is not sent as removed
    for i in range(5):
        await stack.limit(BOB, 1, "1", str(120 + i))
    await until(lambda: c.queue("depth.update").qsize() > 0)
    expected = await stack.me("order.depth", MARKET, 5, "0")

    def caught_up() -> bool:
        for update in c.drain("depth.update"):
            apply_diff(book, update[1], 5)
        return bool(book == expected)

    await until(caught_up)
    await stack.limit(BOB, 1, "1", "119")
    update = await c.next("depth.update")
    assert update == [False, {"asks": [["119", "1"], ["124", "0"]]}, MARKET] or \
        update == [False, {"asks": [["119", "1"]]}, MARKET]
    apply_diff(book, update[1], 5)
    assert book == await stack.me("order.depth", MARKET, 5, "0")
    # a second subscriber of the key gets the cached snapshot right after its reply
    c2 = await connect(stack, clients)
    assert await c2.call("depth.subscribe", MARKET, 5, "0") == {"status": "success"}
    assert c2.frames[-1].startswith('{"method": "depth.update", "params": [true, {"asks": ')
    assert await c2.next("depth.update") == [True, await stack.me("order.depth", MARKET, 5, "0"),
                                             MARKET]


async def test_depth_subscribe_params_and_merge(stack: Stack, clients: list[WsClient]) -> None:
    await stack.deposit(ALICE, "BCH", "100000")
    await stack.limit(ALICE, 2, "1", "100.15")
    await stack.limit(ALICE, 2, "1", "100.05")
    c = await connect(stack, clients)
    for params in ([MARKET, 7, "0"], [MARKET, 0, "0"], [MARKET, 5, "0.5"], [MARKET, 5, 0],
                   [MARKET, "5", "0"], [MARKET, 5], ["X" * 16, 5, "0"], [MARKET, 5, "0" * 16],
                   [MARKET, 5, "abc"]):
        assert await c.error("depth.subscribe", *params) == (1, "invalid argument"), params
    assert await c.call("depth.subscribe", MARKET, 10, "0.10") == {"status": "success"}
    update = await c.next("depth.update")
    assert update == [True, await stack.me("order.depth", MARKET, 10, "0.10"), MARKET]
    assert update[1]["bids"] == [["100.1", "1"], ["100", "1"]]  # floor to 0.1


async def test_depth_clean_snapshot_every_interval(stack: Stack, clients: list[WsClient],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(market_mod, "DEPTH_CLEAN_INTERVAL", 0.0)
    await stack.deposit(ALICE, "BCH", "1000")
    c = await connect(stack, clients)
    await c.call("depth.subscribe", MARKET, 5, "0")
    assert (await c.next("depth.update"))[0] is True
    await stack.limit(ALICE, 2, "1", "100")
    assert await c.next("depth.update") == [True, {"asks": [], "bids": [["100", "1"]]}, MARKET]
    assert await c.quiet("depth.update")  # unchanged -> nothing, even when a clean is due


async def test_deals_price_state_today_kline_updates(stack: Stack,
                                                     clients: list[WsClient]) -> None:
    c = await connect(stack, clients)
    for kind in ("deals", "price", "state", "today"):
        assert await c.call(f"{kind}.subscribe", MARKET) == {"status": "success"}
    assert await c.call("kline.subscribe", MARKET, 60) == {"status": "success"}
    state0 = await c.next("state.update")
    assert state0 == [MARKET, await _mp(stack, "market.status", MARKET, 86400)]
    assert state0[1]["last"] == "0" and state0[1]["volume"] == "0"
    today0 = await c.next("today.update")
    assert today0[0] == MARKET and today0[1]["volume"] == "0"
    assert await c.quiet("price.update", 0.2)  # price 0: nothing yet
    assert await c.quiet("deals.update", 0.01)
    await _trade(stack)
    deals = await c.next("deals.update")
    assert deals[0] == MARKET
    assert [(d["id"], d["price"], d["amount"], d["type"]) for d in deals[1]] == \
        [(1, "100", "0.4", "sell")]
    assert deals[1] == await _mp(stack, "market.deals", MARKET, 100, 0)
    assert list(deals[1][0]) == ["id", "time", "price", "amount", "type"]
    assert await c.next("price.update") == [MARKET, "100.00000000"]
    state = await c.next("state.update")
    assert state == [MARKET, await _mp(stack, "market.status", MARKET, 86400)]
    # The status window is [now - period, now) over minute buckets (rpc.md 301): a deal made
    # in the first second of a minute enters the window one second later, after a first push.
    while state[1]["volume"] == "0":
        state = await c.next("state.update")
    assert (state[1]["last"], state[1]["volume"], state[1]["deal"]) == ("100", "0.4", "40")
    # market.status_today's volume/deal are the same rolling window (rpc.md 305): same wait
    today = await c.next("today.update")
    while today[1]["volume"] == "0":
        today = await c.next("today.update")
    assert today == [MARKET, await _mp(stack, "market.status_today", MARKET)]
    assert (today[1]["last"], today[1]["volume"], today[1]["deal"]) == ("100", "0.4", "40")
    row = await _next_kline_row_with_volume(c)
    assert row[0] == int(time.time()) // 60 * 60 or row[0] == int(time.time()) // 60 * 60 - 60
    assert (row[2], row[5], row[6], row[7]) == ("100", "0.4", "40", MARKET)
    # a second trade: only the new deal is pushed, newest first
    await stack.limit(BOB, 1, "0.1", "100")
    await stack.limit(BOB, 1, "0.2", "100")
    got: list[Any] = []
    while len(got) < 2:
        got += (await c.next("deals.update"))[1]
    assert [(d["id"], d["amount"]) for d in got] in ([(2, "0.1"), (3, "0.2")],
                                                    [(3, "0.2"), (2, "0.1")])
    # unchanged price -> no price.update
    assert await c.quiet("price.update", 0.3)
    # (marketprice caches market.status for 0.45 s: wait for the pushes to catch up)
    while (await c.next("state.update"))[1]["volume"] != "0.7":
        pass
    while (await c.next("today.update"))[1]["volume"] != "0.7":
        pass
    # new subscribers get the cached values right after their reply
    c2 = await connect(stack, clients)
    await c2.call("deals.subscribe", MARKET)
    assert [d["id"] for d in (await c2.next("deals.update"))[1]] == [3, 2, 1]
    await c2.call("price.subscribe", MARKET)
    assert await c2.next("price.update") == [MARKET, "100.00000000"]
    await c2.call("state.subscribe", MARKET)
    assert (await c2.next("state.update"))[1]["volume"] == "0.7"
    await c2.call("today.subscribe", MARKET)
    assert (await c2.next("today.update"))[1]["volume"] == "0.7"


async def _next_kline_row_with_volume(c: WsClient) -> list[Any]:
    """The newest pushed k-line row with a volume: the deal's minute (an empty minute may
    follow it in the push once the clock has moved on)."""
    while True:
        for row in reversed(await c.next("kline.update")):
            if row[5] != "0":
                return list(row)


async def _mp(stack: Stack, method: str, *params: Any) -> Any:
    reply = orjson.loads(await stack.marketprice.call(method, list(params), 1))
    assert reply["error"] is None
    return reply["result"]


async def test_kline_subscribe_params(stack: Stack, clients: list[WsClient]) -> None:
    c = await connect(stack, clients)
    for params in ([MARKET], [MARKET, 0], [MARKET, -60], [MARKET, "60"], [MARKET, 60.0],
                   [5, 60], ["M" * 16, 60], [MARKET, 60, 1]):
        assert await c.error("kline.subscribe", *params) == (1, "invalid argument"), params


async def test_list_subscribe_validation(stack: Stack, clients: list[WsClient]) -> None:
    assert stack.ws is not None
    c = await connect(stack, clients)
    await c.call("price.subscribe", "ETHBCH")
    # the previous list is dropped first; elements before the bad one stay subscribed
    assert await c.error("price.subscribe", MARKET, 5, "LTCBCH") == (1, "invalid argument")
    conn = next(iter(stack.ws.connections))
    assert conn.price == [MARKET]
    assert stack.ws.market.price.topics[MARKET].sessions == {conn}
    # empty, or already pruned (a poll in between drops a topic nobody subscribes)
    dropped = stack.ws.market.price.topics.get("ETHBCH")
    assert dropped is None or not dropped.sessions
    assert await c.error("state.subscribe", "S" * 16) == (1, "invalid argument")
    assert await c.call("today.subscribe") == {"status": "success"}  # empty list: nothing
    too_many = [f"M{i}" for i in range(300)]
    assert await c.error("deals.subscribe", *too_many) == (1, "invalid argument")


async def test_unknown_market_key_is_dropped(stack: Stack, clients: list[WsClient]) -> None:
    assert stack.ws is not None
    c = await connect(stack, clients)
    assert await c.call("price.subscribe", "NOSUCH", MARKET) == {"status": "success"}
    assert await c.call("depth.subscribe", "NOSUCH", 5, "0") == {"status": "success"}
    await until(lambda: stack.ws is not None and "NOSUCH" not in stack.ws.market.price.topics
                and not stack.ws.market.depth.topics)
    conn = next(iter(stack.ws.connections))
    assert conn.price == [MARKET] and conn.depth is None
    assert await c.quiet("depth.update", 0.2)


async def test_subscription_replacement(stack: Stack, clients: list[WsClient]) -> None:
    ws = stack.ws
    assert ws is not None
    market = ws.market
    await stack.deposit(ALICE, "BCH", "1000")
    c = await connect(stack, clients)
    await c.call("kline.subscribe", MARKET, 60)
    await c.call("kline.subscribe", MARKET, 3600)
    await c.call("depth.subscribe", MARKET, 5, "0")
    await c.call("depth.subscribe", "ETHBCH", 10, "0")
    await c.call("price.subscribe", MARKET, "ETHBCH")
    await c.call("price.subscribe", "LTCBCH")
    await c.call("deals.subscribe", MARKET)
    await c.call("deals.subscribe", "ETHBCH")
    await c.call("state.subscribe", MARKET)
    await c.call("state.subscribe", "ETHBCH")
    await c.call("today.subscribe", MARKET)
    await c.call("today.subscribe", "ETHBCH")
    # a tick deletes the keys nobody subscribes any more
    others = (market.deals, market.state, market.today)
    await until(lambda: set(market.kline.topics) == {(MARKET, 3600)}
                and set(market.price.topics) == {"LTCBCH"}
                and all(set(feed.topics) == {"ETHBCH"} for feed in others))
    assert set(market.kline.topics) == {(MARKET, 3600)}
    assert set(market.depth.topics) == {("ETHBCH", 10, "0")}
    assert set(market.price.topics) == {"LTCBCH"}
    for feed in others:
        assert set(feed.topics) == {"ETHBCH"}, feed.name
    c.drain("depth.update")
    await stack.limit(ALICE, 2, "1", "100")
    assert await c.quiet("depth.update", 0.3)  # the BTCBCH depth subscription is gone
    # unsubscribe everything
    for kind in ("kline", "depth", "price", "deals", "state", "today"):
        assert await c.call(f"{kind}.unsubscribe") == {"status": "success"}
    await until(lambda: all(not feed.topics for feed in ws.feeds))


async def test_close_drops_every_subscription(stack: Stack, clients: list[WsClient]) -> None:
    ws = stack.ws
    assert ws is not None
    c = await connect(stack, clients, "tok-alice")
    other = await connect(stack, clients, "tok-alice")
    await other.call("state.subscribe", MARKET)
    await other.call("order.subscribe", MARKET)
    await c.call("kline.subscribe", MARKET, 60)
    await c.call("depth.subscribe", MARKET, 5, "0")
    for kind in ("price", "deals", "state", "today"):
        await c.call(f"{kind}.subscribe", MARKET, "ETHBCH")
    await c.call("order.subscribe", MARKET)
    await c.call("asset.subscribe", "BTC")
    stats = ws.stats()
    assert stats["subscribers"]["state"] == 3 and stats["user_connections"] == 2
    await c.close()
    await until(lambda: ws.stats()["connections"] == 1)
    await until(lambda: ws.stats()["topics"]["kline"] == 0)  # the next tick deletes the keys
    stats = ws.stats()
    assert stats["subscribers"] == {"kline": 0, "depth": 0, "price": 0, "state": 1, "today": 0,
                                    "deals": 0}
    assert stats["topics"]["state"] == 1 and stats["topics"]["kline"] == 0
    assert stats["users"] == 1 and stats["user_connections"] == 1
    await other.close()
    await until(lambda: ws.stats()["connections"] == 0)
    await until(lambda: sum(ws.stats()["topics"].values()) == 0)
    stats = ws.stats()
    assert sum(stats["subscribers"].values()) == 0 and sum(stats["topics"].values()) == 0
    assert stats["users"] == 0


# -- user pushes ----------------------------------------------------------------------------------


async def test_order_and_asset_updates(stack: Stack, clients: list[WsClient]) -> None:
    await stack.deposit(ALICE, "BCH", "1000")
    await stack.deposit(BOB, "BTC", "10")
    alice = await connect(stack, clients, "tok-alice")
    assert await alice.call("order.subscribe", MARKET) == {"status": "success"}
    assert await alice.call("asset.subscribe", "BTC", "BCH") == {"status": "success"}

    # PUT (the pushes are event-driven, bus waiter to socket: no interval to wait for)
    order = await stack.limit(ALICE, 2, "1", "100")
    assert await alice.next("order.update") == [1, order]
    balances = {}
    for _ in range(2):
        update = await alice.next("asset.update")
        balances.update(update[0])
    assert balances == {"BTC": {"available": "0", "freeze": "0"},
                        "BCH": {"available": "900", "freeze": "100"}}

    # UPDATE (partially filled as maker)
    await stack.limit(BOB, 1, "0.4", "100")
    event, pushed = await alice.next("order.update")
    assert event == 2
    assert pushed == await stack.me("order.pending_detail", MARKET, order["id"])
    assert (pushed["left"], pushed["deal_stock"], pushed["deal_money"], pushed["deal_fee"]) == \
        ("0.6", "0.4", "40", "0.0004")
    balances = {}
    while len(balances) < 2:
        balances.update((await alice.next("asset.update"))[0])
    assert balances == {"BTC": {"available": "0.3996", "freeze": "0"},
                        "BCH": {"available": "900", "freeze": "60"}}

    # FINISH (cancelled)
    cancelled = await stack.me("order.cancel", ALICE, MARKET, order["id"])
    assert await alice.next("order.update") == [3, cancelled]
    balances = {}
    while len(balances) < 2 or balances["BCH"]["freeze"] != "0":
        balances.update((await alice.next("asset.update"))[0])
    assert balances["BCH"] == {"available": "960", "freeze": "0"}

    # balances topic: a deposit
    await stack.deposit(ALICE, "BTC", "1.5")
    assert await alice.next("asset.update") == [{"BTC": {"available": "1.8996", "freeze": "0"}}]
    await stack.deposit(ALICE, "ETH", "2")  # not subscribed: nothing
    assert await alice.quiet("asset.update", 0.2)

    # market orders: FINISH for the taker
    await stack.limit(BOB, 1, "1", "100")
    alice.drain("order.update")
    taker = await stack.me("order.put_market", ALICE, MARKET, 2, "10", "0.001", "m")
    while True:
        event, pushed = await alice.next("order.update")
        if pushed["id"] == taker["id"]:
            break
    assert event == 3 and pushed == taker


async def test_order_updates_only_for_subscribed_markets(stack: Stack,
                                                         clients: list[WsClient]) -> None:
    await stack.deposit(ALICE, "BCH", "1000")
    alice = await connect(stack, clients, "tok-alice")
    await alice.call("order.subscribe", "ETHBCH", "LTCBCH")
    await stack.limit(ALICE, 2, "1", "100")
    assert await alice.quiet("order.update", 0.3)
    eth = await stack.limit(ALICE, 2, "1", "10", market="ETHBCH")
    assert await alice.next("order.update") == [1, eth]
    assert await alice.call("order.unsubscribe") == {"status": "success"}
    await stack.limit(ALICE, 2, "1", "11", market="ETHBCH")
    assert await alice.quiet("order.update", 0.3)
    # bad element: earlier ones stay, previous set dropped
    assert await alice.error("order.subscribe", MARKET, 7) == (1, "invalid argument")
    await stack.limit(ALICE, 2, "1", "12", market="ETHBCH")
    assert await alice.quiet("order.update", 0.3)
    put = await stack.limit(ALICE, 2, "1", "99")
    assert await alice.next("order.update") == [1, put]


async def test_asset_subscribe_variants(stack: Stack, clients: list[WsClient]) -> None:
    alice = await connect(stack, clients, "tok-alice")
    await alice.call("asset.subscribe", "BTC", "BTC")
    await stack.deposit(ALICE, "BTC", "1")
    assert await alice.next("asset.update") == [{"BTC": {"available": "1", "freeze": "0"}}]
    assert await alice.quiet("asset.update", 0.2)  # once, not twice
    await alice.call("asset.subscribe")  # empty: nothing subscribed
    await stack.deposit(ALICE, "BTC", "1")
    assert await alice.quiet("asset.update", 0.3)
    assert await alice.error("asset.subscribe", "BCH", "A" * 16) == (1, "invalid argument")
    await stack.deposit(ALICE, "BCH", "1")
    assert await alice.next("asset.update") == [{"BCH": {"available": "1", "freeze": "0"}}]
    assert await alice.call("asset.unsubscribe") == {"status": "success"}
    await stack.deposit(ALICE, "BCH", "1")
    assert await alice.quiet("asset.update", 0.3)


async def test_users_see_only_their_own_data(stack: Stack, clients: list[WsClient]) -> None:
    await stack.deposit(ALICE, "BCH", "1000")
    await stack.deposit(BOB, "BTC", "10")
    alice = await connect(stack, clients, "tok-alice")
    alice2 = await connect(stack, clients, "tok-alice")
    bob = await connect(stack, clients, "tok-bob")
    anon = await connect(stack, clients)
    for c in (alice, alice2, bob):
        await c.call("order.subscribe", MARKET)
        await c.call("asset.subscribe", "BTC", "BCH")
    bid = await stack.limit(ALICE, 2, "1", "100")
    for c in (alice, alice2):
        assert await c.next("order.update") == [1, bid]
    assert await bob.quiet("order.update", 0.3) and await bob.quiet("asset.update", 0.01)
    ask = await stack.limit(BOB, 1, "1", "100")  # both filled
    event, pushed = await bob.next("order.update")
    assert (event, pushed["id"], pushed["user"]) == (3, ask["id"], BOB)
    event, pushed = await alice.next("order.update")
    assert (event, pushed["id"], pushed["user"]) == (3, bid["id"], ALICE)
    # An absence (no other user's push) can't be waited on: the sleep gives a stray push the
    # time to arrive before the frames are checked.
    await asyncio.sleep(0.3)
    for c, user in ((alice, ALICE), (alice2, ALICE), (bob, BOB)):
        for frame in c.frames:
            data = orjson.loads(frame)
            if data.get("method") == "order.update":
                assert data["params"][1]["user"] == user
            if data.get("method") == "asset.update":
                asset = next(iter(data["params"][0]))
                expected = await stack.me("balance.query", user, asset)
                assert data["params"][0] == expected or asset in expected
    assert not any("order.update" in f or "asset.update" in f for f in anon.frames)
    bob_balances = {}
    for frame in bob.frames:
        data = orjson.loads(frame)
        if data.get("method") == "asset.update":
            bob_balances.update(data["params"][0])
    assert bob_balances == await stack.me("balance.query", BOB, "BTC", "BCH")


async def test_reauth_as_another_user_drops_private_subscriptions(
        stack: Stack, clients: list[WsClient]) -> None:
    await stack.deposit(ALICE, "BCH", "1000")
    await stack.deposit(BOB, "BCH", "1000")
    c = await connect(stack, clients, "tok-alice")
    await c.call("order.subscribe", MARKET)
    await c.call("asset.subscribe", "BCH")
    await c.call("price.subscribe", MARKET)
    assert await c.call("server.auth", "tok-bob", "web") == {"status": "success"}
    await stack.limit(ALICE, 2, "1", "100")
    assert await c.quiet("order.update", 0.3) and await c.quiet("asset.update", 0.01)
    await stack.limit(BOB, 2, "1", "100")
    assert await c.quiet("order.update", 0.2)  # bob's subscriptions must be made anew
    assert stack.ws is not None and stack.ws.stats()["subscribers"]["price"] == 1
    await c.call("order.subscribe", MARKET)
    bob_order = await stack.limit(BOB, 2, "1", "99")
    assert await c.next("order.update") == [1, bob_order]
    # a failed auth keeps the current identity
    assert await c.error("server.auth", "bad", "web") == (11, "token expired")
    assert (await c.call("asset.query", "BCH"))["BCH"]["freeze"] == "199"


# -- listening ------------------------------------------------------------------------------------


async def test_binds_from_config_monitor_and_connection_limit(tmp_path: Path) -> None:
    import aiohttp

    from exchange_server.common.config import SvrConfig
    from tests.support.server import free_port

    sock_path = tmp_path / "ws.sock"
    tcp_port, monitor_port = free_port(), free_port()
    svr = _svr(bind=(f"stream@{sock_path}", f"tcp@127.0.0.1:{tcp_port}"))
    config = AccessWsConfig(svr=svr, monitor=SvrConfig(bind=[f"tcp@127.0.0.1:{monitor_port}"]),
                            max_connections=2)
    ws = AccessWs(config, {}, serve_monitor=True)
    await ws.start()
    try:
        assert ws.port == tcp_port
        # the monitor port accepts connections and ignores what it gets
        reader, writer = await asyncio.open_connection("127.0.0.1", monitor_port)
        writer.write(b"hello\n")
        await writer.drain()
        with pytest.raises(TimeoutError):  # an absence (no answer, no close): a fixed wait
            await asyncio.wait_for(reader.read(1), 0.2)
        writer.close()
        # the unix socket serves WebSocket clients
        session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(sock_path)))
        async with session, session.ws_connect("http://localhost/") as unix_client:
            await unix_client.send_str('{"method": "server.ping", "params": [], "id": 3}')
            assert (await unix_client.receive()).data == \
                '{"error": null, "result": "pong", "id": 3}'
            # max_connections = 2: a third is closed at once
            second = await WsClient.connect(f"http://127.0.0.1:{tcp_port}/")
            raw, head = await RawWs.open(tcp_port, RawWs.handshake())
            assert head == b""
            raw.close()
            await second.close()
    finally:
        await ws.stop()


def test_apply_process_limits() -> None:
    import resource

    from exchange_server.accessws.config import ProcessConfig, apply_process_limits

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    apply_process_limits(ProcessConfig(file_limit=min(hard, soft + 10)))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(hard, soft + 10)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
