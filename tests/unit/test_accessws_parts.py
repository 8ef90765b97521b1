"""accessws's narrow parts on their own: the forwarder, the rate limit, the query cache, and the
push names taken from the declared table.

Why: the server is split so that each of these can be used (and checked) without a listener;
the end-to-end behaviour is covered by test_accessws*.py against real servers.
"""

from __future__ import annotations

import ast
import asyncio
from typing import Any

import orjson
import pytest

from exchange_server.accessws.cache import QueryCache, cache_key
from exchange_server.accessws.config import AccessWsConfig
from exchange_server.accessws.forward import Forwarder
from exchange_server.accessws.market import MarketFeeds
from exchange_server.accessws.ratelimit import RateLimit
from exchange_server.accessws.session import Connection
from exchange_server.common.backend import Backend
from exchange_server.common.errors import INTERNAL_ERROR, SERVICE_TIMEOUT, RpcError
from exchange_server.common.methods import WS_PUSHES
from tests.support.server import REPO

ACCESSWS = REPO / "exchange_server" / "accessws"


class FakeBackend:
    """Answers with ``body``, raises ``fail``, or never answers (``hang``)."""

    def __init__(self, body: bytes = b"", fail: Exception | None = None, hang: bool = False,
                 connected: bool = True) -> None:
        self.body = body
        self.fail = fail
        self.hang = hang
        self.up = connected
        self.calls: list[tuple[str, list[Any], int | None]] = []

    def connected(self) -> bool:
        return self.up

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        self.calls.append((method, params, req_id))
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        return self.body


class FakeTransport:
    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def reply(result: Any = None, error: Any = None, req_id: int | None = 7) -> bytes:
    return orjson.dumps({"error": error, "result": result, "id": req_id})


def connection(now: float = 0.0, burst: float = 3.0) -> Connection:
    return Connection(FakeTransport(), "test", 1 << 20, now, burst)  # type: ignore[arg-type]


# -- forwarder ------------------------------------------------------------------------------------


async def test_forwarder_relays_the_body_as_it_is() -> None:
    body = reply({"a": "1"})
    backend = FakeBackend(body)
    forwarder = Forwarder({"matchengine": backend}, 1.0)
    assert await forwarder.call(forwarder.backend("matchengine"), "m", [1], 7) == body
    assert backend.calls == [("m", [1], 7)]
    assert await forwarder.ask("matchengine", "m", [2]) == (None, {"a": "1"})
    error = {"code": 10, "message": "x"}
    backend.body = reply(error=error)
    assert await forwarder.ask("matchengine", "m", [3]) == (error, None)


async def test_forwarder_failures_are_fresh_errors() -> None:
    forwarder = Forwarder({"broken": FakeBackend(fail=OSError("boom")),
                           "slow": FakeBackend(hang=True)}, 0.05)
    errors = []
    for _ in range(2):
        with pytest.raises(RpcError) as broken:
            await forwarder.call(forwarder.backend("broken"), "m", [], 1)
        assert (broken.value.code, broken.value.message) == (INTERNAL_ERROR, "internal error")
        errors.append(broken.value)
    assert errors[0] is not errors[1]
    with pytest.raises(RpcError) as slow:
        await forwarder.call(forwarder.backend("slow"), "m", [], 1)
    assert (slow.value.code, slow.value.message) == (SERVICE_TIMEOUT, "service timeout")
    # accessws' own queries just get nothing
    assert await forwarder.ask("broken", "m", []) is None
    assert await forwarder.ask("slow", "m", []) is None


async def test_forwarder_missing_disconnected_and_garbage() -> None:
    down = FakeBackend(reply(1), connected=False)
    backends: dict[str, Backend] = {"down": down, "garbage": FakeBackend(b"not json")}
    forwarder = Forwarder(backends, 1.0)
    for name in ("down", "nosuch"):
        assert forwarder.available(name) is None
        with pytest.raises(RpcError) as missing:
            forwarder.backend(name)
        assert missing.value.code == INTERNAL_ERROR
        assert await forwarder.ask(name, "m", []) is None
    assert not down.calls  # a disconnected backend is not called
    assert await forwarder.ask("garbage", "m", []) is None
    # the backends are shared, not copied
    backends["late"] = FakeBackend(reply("ok"))
    assert await forwarder.ask("late", "m", []) == (None, "ok")


# -- rate limit -----------------------------------------------------------------------------------


def test_token_bucket() -> None:
    limit = RateLimit(rate=10.0, burst=3.0, max_pending=2)
    conn = connection(now=100.0, burst=3.0)
    assert [limit.take(conn, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert limit.take(conn, 100.0) == pytest.approx(0.1)  # then one per 1/rate
    # the next request, read when that wait is over, waits a whole interval again
    assert limit.take(conn, 100.1) == pytest.approx(0.1)
    # a quiet second refills the bucket up to the burst, not beyond
    assert [limit.take(conn, 102.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take(conn, 102.0) > 0.0
    # an early wake-up (before the promised time) never earns tokens
    assert limit.take(conn, 101.0) == pytest.approx(0.1)


async def test_pending_cap_waits_for_a_slot() -> None:
    limit = RateLimit(rate=1000.0, burst=10.0, max_pending=2)
    conn = connection()
    conn.pending = 1
    await limit.slot(conn)  # below the cap: at once
    conn.pending = 2
    waiting = asyncio.ensure_future(limit.slot(conn))
    await asyncio.sleep(0)
    assert not waiting.done()
    conn.request_done()
    await asyncio.wait_for(waiting, 5.0)
    assert conn.pending == 1


# -- cache ----------------------------------------------------------------------------------------


def test_cache_keeps_results_only() -> None:
    cache = QueryCache(ttl=60.0, max_entries=2)
    key = cache_key(b"market.last-", ["BTCBCH"])
    assert key == b'market.last-["BTCBCH"]'
    cache.put_reply(key, reply(error={"code": 1, "message": "invalid argument"}))
    cache.put_reply(key, b"garbage")
    assert cache.get(key) == (False, None)
    cache.put_reply(key, reply("1.5"))
    assert cache.get(key) == (True, "1.5") and cache.hits == 1
    cache.put(b"b", 1)
    cache.put(b"c", 2)  # full: emptied first
    assert len(cache) == 1 and cache.get(key) == (False, None)
    off = QueryCache(ttl=0.0, max_entries=2)
    off.put_reply(key, reply("1.5"))
    assert len(off) == 0


# -- push names -----------------------------------------------------------------------------------


def test_feeds_push_the_declared_names() -> None:
    feeds = MarketFeeds(Forwarder({}, 1.0), AccessWsConfig())
    assert [feed.push for feed in feeds.all] == [f"{feed.name}.update" for feed in feeds.all]
    assert {feed.push for feed in feeds.all} <= set(WS_PUSHES)


def test_accessws_spells_no_push_name() -> None:
    """Every notification name accessws sends is imported from the table, never written out."""
    literals = []
    for path in sorted(ACCESSWS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in WS_PUSHES:
                literals.append(f"{path.name}:{node.lineno}: {node.value}")
    assert not literals
