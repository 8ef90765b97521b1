"""Helpers for the accessws tests and benchmark (no tests here).

* :class:`Stack`: the real services in this process — matchengine (SQLite), the in-process bus
  with the publisher as the engine's sink, the history writer + readhistory, marketprice — and
  accessws in front of them on a free port.
* :class:`AuthService`: a small real HTTP service playing the operator's auth and sign servers.
* :class:`WsClient`: an aiohttp WebSocket client that separates replies from notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from exchange_server.accessws.config import AccessWsConfig
from exchange_server.accessws.server import AccessWs
from exchange_server.common.backend import Backend, LocalBackend
from exchange_server.common.config import default_matchengine_data, load_matchengine

MARKET = "BTCBCH"

#: Deadline of a reply, a push or a close: a liveness check only (it never makes a passing test
#: slower), so long enough for a heavily loaded machine.
WAIT = 30.0

# -- auth service ---------------------------------------------------------------------------------


class AuthService:
    """``GET /auth`` (token in Authorization) and ``GET /sign?access_id&tonce`` (signature in
    Authorization: hex HMAC-SHA256 of ``"access_id=<id>&tonce=<tonce>"`` with the key's secret;
    tonce in milliseconds, within ``tonce_window`` of now).  Special tokens: ``"slow"`` answers
    after 1 s, ``"garbage"`` is not JSON, ``"nomessage"`` has a code without message,
    ``"zero"`` gives user_id 0."""

    def __init__(self) -> None:
        self.tokens: dict[str, int] = {}
        self.keys: dict[str, tuple[str, int]] = {}  # access_id -> (secret, user)
        self.tonce_window = 60_000
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @staticmethod
    def signature(secret: str, access_id: str, tonce: int) -> str:
        message = f"access_id={access_id}&tonce={tonce}".encode()
        return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()

    async def _auth(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "")
        self.requests.append({"path": "auth", "method": request.method,
                              "headers": dict(request.headers)})
        if token == "slow":
            await asyncio.sleep(1)
        if token == "garbage":
            return web.Response(text="<html>oops</html>")
        if token == "nomessage":
            return web.json_response({"code": 7})
        if token == "zero":
            return web.json_response({"code": 0, "message": "ok", "data": {"user_id": 0}})
        user = self.tokens.get(token)
        if user is None:
            return web.json_response({"code": 1, "message": "token expired", "data": {}})
        return web.json_response({"code": 0, "message": "ok", "data": {"user_id": user}})

    async def _sign(self, request: web.Request) -> web.Response:
        self.requests.append({"path": "sign", "method": request.method,
                              "headers": dict(request.headers), "query": dict(request.query)})
        access_id = request.query.get("access_id", "")
        try:
            tonce = int(request.query.get("tonce", ""))
        except ValueError:
            return web.json_response({"code": 2, "message": "invalid tonce"})
        key = self.keys.get(access_id)
        if key is None:
            return web.json_response({"code": 3, "message": "invalid access_id"})
        if abs(tonce - int(time.time() * 1000)) > self.tonce_window:
            return web.json_response({"code": 4, "message": "tonce out of window"})
        secret, user = key
        expected = self.signature(secret, access_id, tonce)
        if not hmac.compare_digest(expected, request.headers.get("Authorization", "")):
            return web.json_response({"code": 5, "message": "invalid signature"})
        return web.json_response({"code": 0, "message": "ok", "data": {"user_id": user}})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/auth", self._auth)
        app.router.add_route("*", "/sign", self._sign)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth"

    @property
    def sign_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sign"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- the services ---------------------------------------------------------------------------------


def fast_config(**overrides: Any) -> AccessWsConfig:
    """Short polling intervals, so pushes come quickly in tests."""
    base = AccessWsConfig(deals_interval=0.05, price_interval=0.05, state_interval=0.05,
                          today_interval=0.05, kline_interval=0.05, depth_interval=0.05,
                          cache_timeout=0.2)
    return replace(base, **overrides)


class Stack:
    def __init__(self, data_dir: Path, config: AccessWsConfig | None = None,
                 auth: AuthService | None = None, marketprice: bool = True,
                 readhistory: bool = True) -> None:
        self.data_dir = data_dir
        self.config = config or fast_config()
        if auth is not None:
            self.config = replace(self.config, auth_url=auth.auth_url, sign_url=auth.sign_url)
        self.with_marketprice = marketprice
        self.with_readhistory = readhistory
        self.ws: AccessWs | None = None
        self.engine: Any = None
        self.marketprice: Any = None
        self.readhistory: Any = None
        self.history: Any = None
        self.publisher: Any = None
        self.bus: Any = None
        self.backends: dict[str, Backend] = {}
        self._stops: list[Callable[[], Any]] = []

    async def start(self) -> Stack:
        from exchange_server.bus.memory import InProcessBus
        from exchange_server.bus.publisher import BusPublisher
        from exchange_server.matchengine.service import MatchEngineService
        from exchange_server.matchengine.store_sqlite import SqliteEngineStore

        # answered in process: no refusal for a slow commit on a loaded machine (test_methods)
        me_config = load_matchengine(dict(default_matchengine_data(), commit_timeout=30.0),
                                     embedded=True)
        store = SqliteEngineStore(self.data_dir / "engine")
        store.open()
        self.bus = InProcessBus()
        self.publisher = BusPublisher(self.bus, self.data_dir / "bus.mark")
        engine = self.engine = MatchEngineService(me_config, store)
        engine.add_sink(self.publisher)
        if self.with_readhistory:
            from exchange_server.history.store_sqlite import SqliteHistoryStore
            from exchange_server.history.writer import HistoryWriter

            self.history = HistoryWriter(SqliteHistoryStore(self.data_dir / "history"),
                                         flush_interval=0.02)
            engine.add_sink(self.history)
        engine.restore()
        await self.publisher.start()
        if self.history is not None:
            self.history.start()
        await engine.start()
        self._stops.append(store.close)
        self._stops.append(engine.stop)
        self._stops.append(self.publisher.stop)
        self.backends["matchengine"] = LocalBackend(engine)
        if self.with_marketprice:
            from exchange_server.marketprice.service import MarketPriceService
            from exchange_server.marketprice.store_sqlite import SqliteStore

            names = [m.name for m in me_config.markets]
            self.marketprice = MarketPriceService(self.bus, SqliteStore(self.data_dir / "mp"),
                                                  lambda: names)
            await self.marketprice.start()
            self._stops.append(self.marketprice.stop)
            self.backends["marketprice"] = LocalBackend(self.marketprice)
        if self.history is not None:
            from exchange_server.readhistory.reader import SqliteHistoryReader
            from exchange_server.readhistory.service import ReadHistoryService

            self.readhistory = ReadHistoryService(SqliteHistoryReader(self.data_dir / "history"),
                                                  worker_num=2)
            self._stops.append(self.history.aclose)
            self._stops.append(self.readhistory.close)
            self.backends["readhistory"] = LocalBackend(self.readhistory)
        self.ws = AccessWs(self.config, self.backends, self.bus)
        await self.ws.start("127.0.0.1", 0)
        self._stops.append(self.ws.stop)
        return self

    @property
    def url(self) -> str:
        assert self.ws is not None
        return f"http://127.0.0.1:{self.ws.port}/"

    async def stop(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                result = stop()
                if asyncio.iscoroutine(result):
                    await result
        self._stops = []

    async def me(self, method: str, *params: Any) -> Any:
        """Call the matchengine directly; the result (or AssertionError with the error)."""
        reply = orjson.loads(await self.engine.call(method, list(params), 1))
        assert reply["error"] is None, reply["error"]
        return reply["result"]

    async def deposit(self, user: int, asset: str, amount: str) -> None:
        self._bid = getattr(self, "_bid", 0) + 1
        await self.me("balance.update", user, asset, "deposit", self._bid, amount, {})

    async def limit(self, user: int, side: int, amount: str, price: str,
                    market: str = MARKET) -> dict[str, Any]:
        result: dict[str, Any] = await self.me("order.put_limit", user, market, side, amount, price,
                                               "0.001", "0.001", "test")
        return result

    async def history_synced(self) -> None:
        if self.history is not None:
            await self.history.drain(10)


# -- client ---------------------------------------------------------------------------------------


class WsClient:
    """A WebSocket client: ``call`` waits for the reply with its id; notifications are queued
    per method."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession) -> None:
        self.ws = ws
        self.session = session
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.raw_replies: dict[int, str] = {}
        self.notes: dict[str, asyncio.Queue[list[Any]]] = {}
        self.frames: list[str] = []
        self.closed = asyncio.Event()
        self._next_id = 0
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> WsClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, autoping=True, max_msg_size=0, **kwargs)
        except BaseException:
            await session.close()
            raise
        return cls(ws, session)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                self.frames.append(msg.data)
                data = orjson.loads(msg.data)
                if data.get("id") is None and "method" in data:
                    self.queue(data["method"]).put_nowait(data["params"])
                else:
                    fut = self.replies.pop(data["id"], None)
                    self.raw_replies[data["id"]] = msg.data
                    if fut is not None and not fut.done():
                        fut.set_result(data)
        finally:
            self.closed.set()
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("closed"))

    def queue(self, method: str) -> asyncio.Queue[list[Any]]:
        q = self.notes.get(method)
        if q is None:
            q = self.notes[method] = asyncio.Queue()
        return q

    async def request(self, method: str, *params: Any, timeout: float = WAIT) -> dict[str, Any]:
        """The whole reply object."""
        self._next_id += 1
        req_id = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[req_id] = fut
        await self.ws.send_str(orjson.dumps({"method": method, "params": list(params),
                                             "id": req_id}).decode())
        return await asyncio.wait_for(fut, timeout)

    async def call(self, method: str, *params: Any, timeout: float = WAIT) -> Any:
        """The result; AssertionError if the reply is an error."""
        reply = await self.request(method, *params, timeout=timeout)
        assert reply["error"] is None, reply["error"]
        return reply["result"]

    async def error(self, method: str, *params: Any) -> tuple[int, str]:
        reply = await self.request(method, *params)
        assert reply["result"] is None and reply["error"] is not None, reply
        return reply["error"]["code"], reply["error"]["message"]

    async def next(self, method: str, timeout: float = WAIT) -> list[Any]:
        return await asyncio.wait_for(self.queue(method).get(), timeout)

    async def quiet(self, method: str, wait: float = 0.3) -> bool:
        """True if no ``method`` notification arrives within ``wait`` seconds."""
        try:
            params = await asyncio.wait_for(self.queue(method).get(), wait)
        except TimeoutError:
            return True
        self.queue(method).put_nowait(params)
        return False

    def drain(self, method: str) -> list[list[Any]]:
        q = self.queue(method)
        out = []
        while not q.empty():
            out.append(q.get_nowait())
        return out

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        await self.session.close()


# -- raw WebSocket over a socket (handshakes, fragments, opcodes) ----------------------------------


class RawWs:
    """A byte-level client: sends what it is told, masks frames, reads server frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, request: bytes) -> tuple[RawWs, bytes]:
        """Send ``request`` (a handshake); return the client and the server's response head
        (b"" if the server closed without answering)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        except (asyncio.IncompleteReadError, ConnectionError):
            head = b""
        return cls(reader, writer), head

    @staticmethod
    def handshake(headers: dict[str, str] | None = None, method: str = "GET",
                  version: str = "1.1") -> bytes:
        base = {"Host": "localhost", "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
        for key, value in (headers or {}).items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        lines = [f"{method} / HTTP/{version}"] + [f"{k}: {v}" for k, v in base.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def send_frame(self, payload: bytes, opcode: int = 1, fin: bool = True) -> None:
        import os
        import struct

        mask = os.urandom(4)
        n = len(payload)
        first = (0x80 if fin else 0) | opcode
        if n < 126:
            head = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", first, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    async def read_frame(self, timeout: float = WAIT) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next frame; None when the connection is closed."""
        import struct

        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return head[0] & 0x0F, payload

    async def closed(self, timeout: float = WAIT) -> bool:
        """True once the server has closed (after at most a close frame), within timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                frame = await self.read_frame(deadline - time.monotonic())
            except TimeoutError:
                return False
            if frame is None:
                return True
            if frame[0] == 8:
                continue
            return False
        return False

    def close(self) -> None:
        self.writer.close()
