"""Async WebSocket client (aiohttp) with subscriptions that survive reconnects.

::

    async with WsClient("ws://127.0.0.1:8090/") as ws:
        await ws.auth("token-of-user-1")                     # remembered for reconnects
        depth = await ws.subscribe("depth", "BTCBCH", 10, "0")
        async for clean, book, market in depth:             # depth.update params
            ...
        last = await ws.call("price.query", "BTCBCH")       # Decimal('...')

The server keeps one subscription per kind and connection (a new ``depth.subscribe`` replaces
the previous one), and so does this client: ``subscribe(kind, *params)`` replaces the
subscription of that kind and returns a :class:`Subscription`, an async iterator over the
params of each ``<kind>.update`` push (decimal strings as Decimal where the registry's push
schema says so).

When the connection drops (server restart, network), pending calls fail with
:class:`TransportError`, and the client reconnects with exponential back-off, authenticates
again with the remembered credentials, re-sends every active subscription in the order they
were made, and calls the ``on_reconnect`` callbacks.  Pushes then resume: the server sends a
full depth snapshot (``clean`` = true) first, the deals of the last poll, and so on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from exchange_server.client import codec, schemas
from exchange_server.client.errors import TransportError, error_for

log = logging.getLogger("exchange_server.client.ws")

DEFAULT_WS_URL = "ws://127.0.0.1:8090/"

#: Push queue length per subscription; older pushes are dropped past it.
QUEUE_MAX = 10000


class Subscription:
    """The pushes of one kind (``depth``, ``deals``, ``order``...), as an async iterator."""

    def __init__(self, client: WsClient, kind: str, params: tuple[Any, ...]) -> None:
        self.client = client
        self.kind = kind
        self.params = params
        self.active = True
        self.dropped = 0
        self._queue: asyncio.Queue[list[Any] | None] = asyncio.Queue()

    def _push(self, params: list[Any]) -> None:
        if self._queue.qsize() >= QUEUE_MAX:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(params)

    def _end(self) -> None:
        self.active = False
        self._queue.put_nowait(None)

    async def get(self, timeout: float | None = None) -> list[Any]:
        """The next push's params (TimeoutError after ``timeout`` s; StopAsyncIteration when
        unsubscribed)."""
        async with asyncio.timeout(timeout):
            item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return item

    def pending(self) -> list[list[Any]]:
        """Every push already received and not read yet (without waiting)."""
        out = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)
                break
            out.append(item)
        return out

    def __aiter__(self) -> AsyncIterator[list[Any]]:
        return self

    async def __anext__(self) -> list[Any]:
        return await self.get()

    async def unsubscribe(self) -> None:
        await self.client.unsubscribe(self.kind)


class WsClient:
    """One WebSocket connection to accessws, re-opened when it drops (``reconnect=True``)."""

    def __init__(self, url: str = DEFAULT_WS_URL, *, timeout: float = 10.0, reconnect: bool = True,
                 min_delay: float = 0.1, max_delay: float = 5.0, heartbeat: float | None = 30.0,
                 decode: bool = True, protocol: str | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.reconnect = reconnect
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.heartbeat = heartbeat
        self.decode = decode
        self.protocol = protocol
        #: times the connection was re-established
        self.reconnects = 0
        self.on_reconnect: list[Callable[[], Awaitable[None] | None]] = []
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._subs: dict[str, Subscription] = {}
        self._auth: tuple[str, tuple[Any, ...]] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._restoring: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self._closing = False

    # -- life cycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> WsClient:
        await self.connect()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection (raises TransportError when the first attempt fails)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            await self._open()
        except BaseException:
            # nothing is open: do not leave the session behind ("Unclosed client session")
            session, self._session = self._session, None
            await session.close()
            raise
        self._runner = asyncio.create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for task in list(self._restoring):
            task.cancel()
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._fail_pending("client closed")
        for sub in self._subs.values():
            sub._end()
        self._subs.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def _open(self) -> None:
        assert self._session is not None
        try:
            self._ws = await self._session.ws_connect(
                self.url, heartbeat=self.heartbeat, autoping=True, max_msg_size=0,
                protocols=(self.protocol,) if self.protocol else (),
                timeout=aiohttp.ClientWSTimeout(ws_close=self.timeout))
        except (aiohttp.ClientError, OSError) as e:
            raise TransportError(f"cannot connect to {self.url}: {e}") from e
        self._connected.set()

    async def _run(self) -> None:
        """Read frames; on a drop, reconnect and restore auth and subscriptions."""
        delay = self.min_delay
        while not self._closing:
            ws = self._ws
            if ws is not None:
                await self._read(ws)
            self._connected.clear()
            self._ws = None
            self._fail_pending("connection lost")
            if self._closing:
                return
            if not self.reconnect:
                for sub in self._subs.values():
                    sub._end()
                return
            while not self._closing:
                await asyncio.sleep(delay)
                try:
                    await self._open()
                except TransportError as e:
                    log.info("reconnect to %s failed: %s", self.url, e)
                    delay = min(self.max_delay, delay * 2)
                    continue
                break
            delay = self.min_delay
            self.reconnects += 1
            task = asyncio.create_task(self._restore())
            self._restoring.add(task)
            task.add_done_callback(self._restoring.discard)

    async def _restore(self) -> None:
        try:
            if self._auth is not None:
                method, params = self._auth
                await self.call(method, *params)
            for sub in list(self._subs.values()):
                if sub.active:
                    await self.call(f"{sub.kind}.subscribe", *sub.params)
            for callback in self.on_reconnect:
                result = callback()
                if result is not None:
                    await result
        except Exception as e:  # the connection dropped again: the next round restores
            log.info("restoring the session on %s failed: %s", self.url, e)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(msg.data)
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        except (aiohttp.ClientError, OSError) as e:
            log.info("connection to %s: %s", self.url, e)

    def _dispatch(self, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            log.warning("not JSON from %s: %.200s", self.url, text)
            return
        if not isinstance(message, dict):
            return
        req_id = message.get("id")
        if req_id is None:
            method = message.get("method")
            params = message.get("params")
            if isinstance(method, str) and isinstance(params, list):
                self._on_push(method, params)
            return
        entry = self._pending.pop(req_id, None) if isinstance(req_id, int) else None
        if entry is None:
            return
        method, future = entry
        if future.done():
            return
        error = message.get("error")
        if error is not None:
            future.set_exception(error_for(error, method))
        else:
            result = message.get("result")
            if self.decode:
                result = codec.decode(schemas.ws_result(method), result)
            future.set_result(result)

    def _on_push(self, method: str, params: list[Any]) -> None:
        kind, _, suffix = method.rpartition(".")
        sub = self._subs.get(kind)
        if sub is None or suffix != "update" or not sub.active:
            return
        if self.decode:
            params = codec.decode(schemas.push_params(method), params)
        sub._push(params)

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for method, future in pending.values():
            if not future.done():
                future.set_exception(TransportError(f"{method}: {why}"))

    # -- requests ---------------------------------------------------------------------------------

    async def call(self, method: str, *params: Any) -> Any:
        """Send a request and wait for its answer (``timeout`` s)."""
        async with asyncio.timeout(self.timeout):
            await self._connected.wait()
            ws = self._ws
            if ws is None or ws.closed:
                raise TransportError(f"{method}: not connected to {self.url}")
            req_id = next(self._ids)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[req_id] = (method, future)
            try:
                await ws.send_str(codec.encode_request(method, params, req_id).decode())
                return await future
            finally:
                self._pending.pop(req_id, None)

    async def auth(self, token: str, source: str = "client") -> None:
        """server.auth; the token is sent again after every reconnect."""
        await self.call("server.auth", token, source)
        self._auth = ("server.auth", (token, source))

    async def sign(self, access_id: str, authorisation: str, tonce: int) -> None:
        """server.sign (not repeated on reconnect: a signature is for one tonce; call
        ``sign`` again from an ``on_reconnect`` callback)."""
        await self.call("server.sign", access_id, authorisation, tonce)

    async def subscribe(self, kind: str, *params: Any) -> Subscription:
        """``<kind>.subscribe`` with ``params``; replaces this client's subscription of that
        kind (the old :class:`Subscription` ends)."""
        old = self._subs.pop(kind, None)
        if old is not None:
            old._end()
        sub = Subscription(self, kind, params)
        self._subs[kind] = sub
        try:
            await self.call(f"{kind}.subscribe", *params)
        except Exception:
            if self._subs.get(kind) is sub:
                del self._subs[kind]
            sub._end()
            raise
        return sub

    async def unsubscribe(self, kind: str) -> None:
        sub = self._subs.pop(kind, None)
        if sub is not None:
            sub._end()
        await self.call(f"{kind}.unsubscribe")

    def subscriptions(self) -> dict[str, Subscription]:
        return dict(self._subs)
