"""accessws: the WebSocket API (websocket.md) on aiohttp.

aiohttp does the HTTP upgrade and reads frames (reassembling fragments, unmasking, answering
close, enforcing ``max_pkg_size``), bounded by listener.py (handshake timeout, connection limit,
unmasked frames closed with 1002); everything the server sends is written by
``Connection.send_frame`` straight to the socket (see session.py), so a broadcast costs one
buffered write per subscriber and a stuck client never delays anyone else.

Each connection's handler reads its messages one after another.  Local methods are answered
inline; those that wait for a backend or the auth server run as tasks, at most ``max_pending``
per connection (the handler stops reading while a connection has that many), and a token
bucket throttles each connection to ``rate_limit`` requests per second.  A throttled
connection is simply read later: the kernel's and aiohttp's bounded buffers push back on the
client.

Differences from the original are listed in docs/compatibility.md; the main ones: an unknown
method is answered with error 4 "method not found" (the original sends nothing); closing a
connection drops every subscription, ``state`` included (the original leaks those); a failed
handshake is answered like the original (the TCP connection is closed without an HTTP
response) but a malformed message gets a WebSocket close frame (1008) before the close; params
nested deeper than 32 are refused with error 1 in every method, before any cache key is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from exchange_server.accessws.auth import AuthClient
from exchange_server.accessws.config import AccessWsConfig, parse_bind
from exchange_server.accessws.listener import GuardedResponse, LimitedServer
from exchange_server.accessws.market import (
    DealsFeed,
    DepthFeed,
    KlineFeed,
    ListFeed,
    PollFeed,
    PriceFeed,
    StateFeed,
    TodayFeed,
)
from exchange_server.accessws.protocol import (
    SUCCESS,
    BadRequest,
    byte_len,
    error_body,
    parse_reply,
    parse_request,
    result_body,
)
from exchange_server.accessws.session import Connection
from exchange_server.accessws.user import UserFeeds
from exchange_server.bus.base import BusReader
from exchange_server.common.backend import Backend
from exchange_server.common.errors import (
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    METHOD_NOT_FOUND,
    REQUIRE_AUTH,
    SERVICE_TIMEOUT,
    RpcError,
)
from exchange_server.common.jsondepth import check_params_depth

log = logging.getLogger("exchange_server.accessws")

MATCHENGINE = "matchengine"
MARKETPRICE = "marketprice"
READHISTORY = "readhistory"

#: The original's MARKET_NAME_MAX_LEN / ASSET_NAME_MAX_LEN / INTERVAL_MAX_LEN / SOURCE_MAX_LEN:
#: names must be shorter (in bytes).
NAME_MAX = 16
INTERVAL_MAX = 16
SOURCE_MAX = 32
#: The whole query cache is dropped this often, as the original does.
CACHE_CLEAR_INTERVAL = 60.0
#: Longest the idle-connection check waits between two passes (the original: 60 s).
IDLE_CHECK_INTERVAL = 60.0
#: Seconds a closing handshake may take before the connection is just closed.
CLOSE_TIMEOUT = 2.0

#: Close frame with status 1008 (policy violation), sent before closing on a malformed message.
CLOSE_POLICY_VIOLATION = bytes((0x88, 2)) + int(WSCloseCode.POLICY_VIOLATION).to_bytes(2, "big")

Handler = Callable[[Connection, int, list[Any]], Awaitable[None] | None]

_PROTOCOL_SPLIT = re.compile(r"[,\s]+")

ERR_INVALID = (INVALID_ARGUMENT, "invalid argument")
ERR_INTERNAL = (INTERNAL_ERROR, "internal error")
ERR_AUTH = (REQUIRE_AUTH, "require authentication")


class QueryCache:
    """Results of cacheable forwarded queries, by ``"<method>-<params json>"`` (websocket.md 4)."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Any]] = {}
        self.hits = 0

    def get(self, key: bytes) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if time.monotonic() - entry[0] > self.ttl:
            del self._entries[key]
            return False, None
        self.hits += 1
        return True, entry[1]

    def put(self, key: bytes, result: Any) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), result)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def client_ip(request: web.BaseRequest) -> str:
    """The client's address as the original logs it (proxy headers first)."""
    headers = request.headers
    for name in ("X-Connecting-IP", "X-Forwarded-For", "X-Proxy-IP", "X-Real-IP"):
        value = headers.get(name)
        if value:
            return value.split(",")[0].strip()
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and peer:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "?")


class AccessWs:
    """The WebSocket gateway.

    ``backends`` maps "matchengine", "marketprice" and "readhistory" to the services (any may be
    missing: its methods then answer error 2 and its pushes stay silent); ``bus`` gives the
    ``orders`` and ``balances`` topics (None: no user pushes).
    """

    def __init__(self, config: AccessWsConfig, backends: dict[str, Backend],
                 bus: BusReader | None = None, *, clock: Callable[[], float] = time.time,
                 serve_monitor: bool = False) -> None:
        self.config = config
        #: serve ``config.monitor`` here (the process runner does it for a standalone process)
        self.serve_monitor = serve_monitor
        self.backends = backends
        self.bus = bus
        self.clock = clock
        self.connections: set[Connection] = set()
        self.cache = QueryCache(config.cache_timeout, config.cache_max_entries)
        self.auth = AuthClient(config.auth_url, config.sign_url, config.backend_timeout,
                               config.auth_concurrency, config.sign_concurrency)
        self.kline = KlineFeed(self, config.kline_interval, clock)
        self.depth = DepthFeed(self, config.depth_interval)
        self.price = PriceFeed(self, config.price_interval)
        self.state = StateFeed(self, config.state_interval)
        self.today = TodayFeed(self, config.today_interval)
        self.deals = DealsFeed(self, config.deals_interval)
        self.feeds: list[PollFeed] = [self.kline, self.depth, self.price, self.state, self.today,
                                      self.deals]
        self.users = UserFeeds(self)
        self.methods: dict[str, Handler] = self._method_table()
        self._server: LimitedServer | None = None
        self._runner: web.ServerRunner | None = None
        self._monitor: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._requests: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._stopping = False
        # counters
        self.accepted = 0
        self.requests = 0
        self.bad_requests = 0
        self.dropped = 0
        self.unmasked = 0

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen on ``host:port``, or on the config's ``svr.bind`` entries when not given."""
        # every path serves the WebSocket API: aiohttp's low-level server, no routing
        self._server = LimitedServer(
            self._handle, max_connections=self.config.max_connections,
            handshake_timeout=self.config.handshake_timeout, access_log=None,
            max_field_size=16384, max_line_size=16384)
        self._runner = web.ServerRunner(self._server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        sites: list[web.BaseSite] = []
        # several worker processes (worker_num) share the port through SO_REUSEPORT
        reuse_port = self.config.worker_num > 1 or None
        if host is not None or port is not None:
            sites.append(web.TCPSite(self._runner, host or "127.0.0.1", port or 0,
                                     backlog=4096, reuse_address=True, reuse_port=reuse_port))
        else:
            for entry in self.config.svr.bind:
                bind = parse_bind(entry)
                if bind.kind == "tcp":
                    sites.append(web.TCPSite(self._runner, bind.host or None, bind.port,
                                             backlog=4096, reuse_address=True,
                                             reuse_port=reuse_port))
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(bind.path)  # a stale socket file from an earlier run
                    sites.append(web.UnixSite(self._runner, bind.path, backlog=4096))
        for site in sites:
            await site.start()
        if self.serve_monitor and self.config.monitor is not None:
            await self._start_monitor()
        for feed in self.feeds:
            self._tasks.append(asyncio.create_task(feed.run()))
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        if self.bus is not None:
            self.users.start(self.bus)
        log.info("accessws listening on %s", ", ".join(str(a) for a in self._runner.addresses))

    @property
    def port(self) -> int:
        """The TCP port of the first listening socket."""
        assert self._runner is not None
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                return int(address[1])
        raise RuntimeError("accessws is not listening on TCP")

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.users.stop()
        for feed in self.feeds:
            await feed.stop()
        for conn in list(self.connections):
            conn.drop("server stopping", quiet=True)
        for task in list(self._requests):
            task.cancel()
        if self._requests:
            await asyncio.gather(*self._requests, return_exceptions=True)
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5.0)
        if self._monitor is not None:
            self._monitor.close()
            await self._monitor.wait_closed()
            self._monitor = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.auth.close()

    async def _start_monitor(self) -> None:
        """The original's monitor port: accepts connections and ignores what they send."""
        assert self.config.monitor is not None
        bind = parse_bind(self.config.monitor.bind[0])

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while await reader.read(4096):
                    pass
            except OSError:
                pass
            finally:
                writer.close()

        if bind.kind == "tcp":
            self._monitor = await asyncio.start_server(serve, bind.host or None, bind.port,
                                                       reuse_address=True)
        else:
            self._monitor = await asyncio.start_unix_server(serve, bind.path)

    async def _housekeeping(self) -> None:
        """Idle connections closed after ``svr.keep_alive``; the query cache emptied every 60 s."""
        keep_alive = self.config.svr.keep_alive
        step = min(IDLE_CHECK_INTERVAL, max(0.5, keep_alive / 2))
        last_clear = time.monotonic()
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            if now - last_clear >= CACHE_CLEAR_INTERVAL:
                self.cache.clear()
                last_clear = now
            for conn in list(self.connections):
                if now - conn.last_active > keep_alive:
                    log.info("connection %d from %s idle for %ds: closed", conn.id, conn.remote,
                             keep_alive)
                    conn.close()

    def stats(self) -> dict[str, Any]:
        """Counters and sizes (tests, benchmarks, monitoring)."""
        return {
            "connections": len(self.connections),
            "accepted": self.accepted,
            "requests": self.requests,
            "bad_requests": self.bad_requests,
            "dropped": self.dropped,
            "refused": self._server.refused if self._server is not None else 0,
            "unmasked": self.unmasked,
            "topics": {feed.name: len(feed.topics) for feed in self.feeds},
            "subscribers": {feed.name: feed.subscribers() for feed in self.feeds},
            "users": len(self.users.users),
            "user_connections": sum(len(c) for c in self.users.users.values()),
            "cache": len(self.cache),
            "pending_requests": len(self._requests),
        }

    # -- connections ------------------------------------------------------------------------------

    def _handshake_ok(self, request: web.BaseRequest, ws: web.WebSocketResponse) -> bool:
        """websocket.md 1: anything wrong closes the TCP connection without a response."""
        if request.method != "GET" or request.version < (1, 1):
            return False
        headers = request.headers
        if not headers.get("Host"):
            return False
        if headers.get("Sec-WebSocket-Version", "").strip() != "13":
            return False
        svr = self.config.svr
        if svr.origin and not headers.get("Origin", "").endswith(svr.origin):
            return False
        offered = headers.get("Sec-WebSocket-Protocol")
        if offered is not None:
            if svr.protocol not in _PROTOCOL_SPLIT.split(offered.strip()):
                return False
            ws.headers["Sec-WebSocket-Protocol"] = svr.protocol
        return bool(ws.can_prepare(request).ok)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        ws = GuardedResponse(
            protocols=(self.config.svr.protocol,), compress=False, autoping=False,
            autoclose=True, max_msg_size=self.config.svr.max_pkg_size, timeout=CLOSE_TIMEOUT,
            on_unmasked=self._on_unmasked,
        )
        if transport is None or self._stopping or not self._handshake_ok(request, ws):
            if transport is not None:
                transport.close()
            return web.Response()
        self._socket_options(transport)
        await ws.prepare(request)
        assert request.transport is not None
        now = time.monotonic()
        conn = Connection(request.transport, client_ip(request), self.config.send_buffer_limit,
                          now, float(self.config.rate_burst))
        self.connections.add(conn)
        self.accepted += 1
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._read_loop(conn, ws)
        except (asyncio.CancelledError, ConnectionError):
            pass
        except Exception:
            log.exception("connection %d from %s failed", conn.id, conn.remote)
        finally:
            self._detach(conn)
            if task is not None:
                self._handlers.discard(task)
            if not ws.closed and not conn.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            conn.closed = True
        return ws

    def _socket_options(self, transport: asyncio.BaseTransport) -> None:
        svr = self.config.svr
        if not (svr.read_mem or svr.write_mem):
            return
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            if svr.read_mem:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, svr.read_mem)
            if svr.write_mem:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, svr.write_mem)
        except OSError as e:
            log.warning("cannot set socket buffer sizes: %s", e)

    async def _read_loop(self, conn: Connection, ws: web.WebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        rate = config.rate_limit
        burst = float(config.rate_burst)
        max_pending = config.max_pending
        while not conn.closed:
            msg = await ws.receive()
            kind = msg.type
            now = time.monotonic()
            conn.last_active = now
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                # token bucket: a connection going faster than rate_limit is read later
                tokens = min(burst, conn.tokens + (now - conn.token_time) * rate)
                conn.token_time = now
                if tokens < 1.0:
                    await asyncio.sleep((1.0 - tokens) / rate)
                    tokens = 1.0
                    conn.token_time = time.monotonic()
                conn.tokens = tokens - 1.0
                while conn.pending >= max_pending and not conn.closed:
                    conn.waiter = loop.create_future()
                    await conn.waiter
                if conn.closed:
                    return
                if not self._on_message(conn, msg.data):
                    # not a request: a close frame, then the TCP close, without waiting for the
                    # client's half of the closing handshake
                    self.bad_requests += 1
                    conn.send_frame(CLOSE_POLICY_VIOLATION)
                    conn.close()
                    return
            elif kind is WSMsgType.PING:
                await ws.pong(msg.data)
            elif kind is WSMsgType.PONG:
                continue
            else:  # CLOSE (answered by aiohttp), CLOSING, CLOSED, ERROR (too big, bad frame...)
                if kind is WSMsgType.ERROR:
                    log.info("connection %d from %s: %s", conn.id, conn.remote, msg.data)
                return

    def _on_unmasked(self) -> None:
        """RFC 6455 5.1: the guard answered an unmasked client frame with 1002 and closed."""
        self.unmasked += 1
        log.info("unmasked frame from a client: closed with 1002")

    def _detach(self, conn: Connection) -> None:
        """Drop every subscription of a connection that is gone."""
        self.connections.discard(conn)
        if conn.dropped:
            self.dropped += 1
        self.kline.clear(conn)
        self.depth.clear(conn)
        for feed in (self.price, self.state, self.today, self.deals):
            feed.clear(conn)
        self.users.clear(conn)
        waiter = conn.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- requests ---------------------------------------------------------------------------------

    def _on_message(self, conn: Connection, data: Any) -> bool:
        """Handle one message; False if it is not a request (the connection is then closed)."""
        try:
            method, params, req_id = parse_request(data)
        except BadRequest as e:
            log.info("connection %d from %s: bad request (%s): %r", conn.id, conn.remote, e,
                     bytes(data[:200]) if isinstance(data, (bytes, bytearray)) else data[:200])
            return False
        self.requests += 1
        handler = self.methods.get(method)
        if handler is None:
            log.debug("connection %d from %s: unknown method %r", conn.id, conn.remote,
                      method[:100])
            conn.send(error_body(METHOD_NOT_FOUND, "method not found", req_id))
            return True
        try:
            check_params_depth(params)  # before any handler, cache key or backend sees them
            waiting = handler(conn, req_id, params)
        except RpcError as e:
            conn.send(error_body(e.code, e.message, req_id))
            return True
        except Exception:
            log.exception("%s %r failed", method, params[:10])
            conn.send(error_body(*ERR_INTERNAL, req_id))
            return True
        if waiting is not None:
            conn.pending += 1
            task: asyncio.Task[None] = asyncio.ensure_future(waiting)
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
            task.add_done_callback(conn.request_done)
        return True

    def _method_table(self) -> dict[str, Handler]:
        return {
            "server.ping": self.server_ping,
            "server.time": self.server_time,
            "server.auth": self.server_auth,
            "server.sign": self.server_sign,
            "kline.query": self._cached_query(MARKETPRICE, "market.kline"),
            "kline.subscribe": self.kline_subscribe,
            "kline.unsubscribe": self.kline_unsubscribe,
            "depth.query": self._cached_query(MATCHENGINE, "order.depth"),
            "depth.subscribe": self.depth_subscribe,
            "depth.unsubscribe": self.depth_unsubscribe,
            "price.query": self._cached_query(MARKETPRICE, "market.last"),
            "price.subscribe": self._list_subscribe(self.price),
            "price.unsubscribe": self._list_unsubscribe(self.price),
            "state.query": self._cached_query(MARKETPRICE, "market.status"),
            "state.subscribe": self._list_subscribe(self.state),
            "state.unsubscribe": self._list_unsubscribe(self.state),
            "today.query": self._cached_query(MARKETPRICE, "market.status_today"),
            "today.subscribe": self._list_subscribe(self.today),
            "today.unsubscribe": self._list_unsubscribe(self.today),
            "deals.query": self._cached_query(MARKETPRICE, "market.deals"),
            "deals.subscribe": self._list_subscribe(self.deals),
            "deals.unsubscribe": self._list_unsubscribe(self.deals),
            "order.query": self.order_query,
            "order.query_stop": self.order_query_stop,
            "order.history": self.order_history,
            "order.subscribe": self.order_subscribe,
            "order.unsubscribe": self.order_unsubscribe,
            "asset.query": self.asset_query,
            "asset.history": self.asset_history,
            "asset.subscribe": self.asset_subscribe,
            "asset.unsubscribe": self.asset_unsubscribe,
        }

    # -- forwarding -------------------------------------------------------------------------------

    def _backend(self, name: str) -> Backend:
        """The backend, or error 2 when it is missing or not connected."""
        backend = self.backends.get(name)
        if backend is None or not backend.connected():
            raise RpcError(*ERR_INTERNAL)
        return backend

    async def _forward(self, conn: Connection, req_id: int, backend: Backend, method: str,
                       params: list[Any], cache_key: bytes | None = None) -> None:
        try:
            async with asyncio.timeout(self.config.backend_timeout):
                body = await backend.call(method, params, req_id)
        except TimeoutError:
            conn.send(error_body(SERVICE_TIMEOUT, "service timeout", req_id))
            return
        except Exception as e:
            log.error("%s %r failed: %s", method, params, e)
            conn.send(error_body(*ERR_INTERNAL, req_id))
            return
        conn.send(body)
        if cache_key is not None:
            try:
                _, result = parse_reply(body)
            except ValueError:
                return
            if result is not None:
                self.cache.put(cache_key, result)

    def _cached_query(self, backend_name: str, method: str) -> Handler:
        prefix = method.encode() + b"-"

        def handler(conn: Connection, req_id: int, params: list[Any]) -> Awaitable[None] | None:
            backend = self._backend(backend_name)
            key = prefix + orjson.dumps(params)
            hit, result = self.cache.get(key)
            if hit:
                conn.send(result_body(result, req_id))
                return None
            return self._forward(conn, req_id, backend, method, params, key)

        return handler

    # -- server.* ---------------------------------------------------------------------------------

    def server_ping(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        conn.send(result_body("pong", req_id))

    def server_time(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        conn.send(result_body(int(self.clock()), req_id))

    def server_auth(self, conn: Connection, req_id: int,
                    params: list[Any]) -> Awaitable[None] | None:
        if len(params) != 2:
            raise RpcError(*ERR_INVALID)
        token, source = params
        if type(token) is not str or type(source) is not str or byte_len(source) >= SOURCE_MAX:
            raise RpcError(*ERR_INVALID)
        return self._authenticate(conn, req_id, self.auth.auth(token), source)

    def server_sign(self, conn: Connection, req_id: int,
                    params: list[Any]) -> Awaitable[None] | None:
        if len(params) != 3:
            raise RpcError(*ERR_INVALID)
        access_id, authorisation, tonce = params
        if (type(access_id) is not str or type(authorisation) is not str
                or type(tonce) is not int or tonce == 0):
            raise RpcError(*ERR_INVALID)
        return self._authenticate(conn, req_id, self.auth.sign(access_id, authorisation, tonce),
                                  "api")

    async def _authenticate(self, conn: Connection, req_id: int, ask: Awaitable[int],
                            source: str) -> None:
        try:
            user_id = await ask
        except RpcError as e:
            conn.send(error_body(e.code, e.message, req_id))
            return
        if conn.closed:
            return
        if conn.user_id and conn.user_id != user_id:
            self.users.clear(conn)  # the previous user's order and asset subscriptions
        conn.user_id = user_id
        conn.source = source
        conn.send(result_body(SUCCESS, req_id))

    # -- market data ------------------------------------------------------------------------------

    @staticmethod
    def _name(value: Any, max_len: int = NAME_MAX) -> str:
        if type(value) is not str or byte_len(value) >= max_len:
            raise RpcError(*ERR_INVALID)
        return value

    def kline_subscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        if len(params) != 2:
            raise RpcError(*ERR_INVALID)
        market = self._name(params[0])
        interval = params[1]
        if type(interval) is not int or interval <= 0:
            raise RpcError(*ERR_INVALID)
        self.kline.set(conn, (market, interval))
        conn.send(result_body(SUCCESS, req_id))

    def kline_unsubscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        self.kline.clear(conn)
        conn.send(result_body(SUCCESS, req_id))

    def depth_subscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        if len(params) != 3:
            raise RpcError(*ERR_INVALID)
        market = self._name(params[0])
        limit = params[1]
        interval = self._name(params[2], INTERVAL_MAX)
        if type(limit) is not int or limit <= 0:
            raise RpcError(*ERR_INVALID)
        self.depth.clear(conn)
        if limit not in self.config.depth_limit or not self.config.allowed_merge(interval):
            raise RpcError(*ERR_INVALID)
        key = (market, limit, interval)
        self.depth.set(conn, key)
        conn.send(result_body(SUCCESS, req_id))
        self.depth.send_clean(conn, key)

    def depth_unsubscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        self.depth.clear(conn)
        conn.send(result_body(SUCCESS, req_id))

    def _list_subscribe(self, feed: ListFeed) -> Handler:
        def handler(conn: Connection, req_id: int, params: list[Any]) -> None:
            if len(params) > self.config.max_subscribe_list:
                raise RpcError(*ERR_INVALID)
            feed.clear(conn)
            for market in params:
                feed.append(conn, self._name(market))
            conn.send(result_body(SUCCESS, req_id))
            for market in params:
                feed.send_last(conn, market)

        return handler

    def _list_unsubscribe(self, feed: ListFeed) -> Handler:
        def handler(conn: Connection, req_id: int, params: list[Any]) -> None:
            feed.clear(conn)
            conn.send(result_body(SUCCESS, req_id))

        return handler

    # -- user data --------------------------------------------------------------------------------

    @staticmethod
    def _user(conn: Connection) -> int:
        if not conn.user_id:
            raise RpcError(*ERR_AUTH)
        return conn.user_id

    def order_query(self, conn: Connection, req_id: int,
                    params: list[Any]) -> Awaitable[None] | None:
        backend = self._backend(MATCHENGINE)
        user = self._user(conn)
        if len(params) != 3:
            raise RpcError(*ERR_INVALID)
        market, offset, limit = params
        if type(market) is not str or type(offset) is not int or type(limit) is not int:
            raise RpcError(*ERR_INVALID)
        return self._forward(conn, req_id, backend, "order.pending", [user, market, offset, limit])

    def order_query_stop(self, conn: Connection, req_id: int,
                         params: list[Any]) -> Awaitable[None] | None:
        """The CoinEx fork's ``[market (null = all), side (0 = both), offset, limit]`` ->
        order.pending_stop ``[user_id, market, side, offset, limit]``."""
        backend = self._backend(MATCHENGINE)
        user = self._user(conn)
        if len(params) != 4:
            raise RpcError(*ERR_INVALID)
        market, side, offset, limit = params
        if (market is not None and type(market) is not str) or type(side) is not int or \
                type(offset) is not int or type(limit) is not int:
            raise RpcError(*ERR_INVALID)
        return self._forward(conn, req_id, backend, "order.pending_stop",
                             [user, market, side, offset, limit])

    def order_history(self, conn: Connection, req_id: int,
                      params: list[Any]) -> Awaitable[None] | None:
        backend = self._backend(READHISTORY)
        user = self._user(conn)
        if len(params) != 6:
            raise RpcError(*ERR_INVALID)
        return self._forward(conn, req_id, backend, "order.finished", [user, *params])

    def order_subscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        self._user(conn)
        if len(params) > self.config.max_subscribe_list:
            raise RpcError(*ERR_INVALID)
        markets: set[str] = set()
        try:
            for value in params:
                markets.add(self._name(value))
        finally:  # elements before a bad one stay subscribed, as in the original
            self.users.set_orders(conn, markets)
        conn.send(result_body(SUCCESS, req_id))

    def order_unsubscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        self._user(conn)
        self.users.set_orders(conn, None)
        conn.send(result_body(SUCCESS, req_id))

    def asset_query(self, conn: Connection, req_id: int,
                    params: list[Any]) -> Awaitable[None] | None:
        user = self._user(conn)
        backend = self._backend(MATCHENGINE)
        return self._forward(conn, req_id, backend, "balance.query", [user, *params])

    def asset_history(self, conn: Connection, req_id: int,
                      params: list[Any]) -> Awaitable[None] | None:
        backend = self._backend(READHISTORY)
        user = self._user(conn)
        if len(params) != 6:
            raise RpcError(*ERR_INVALID)
        return self._forward(conn, req_id, backend, "balance.history", [user, *params])

    def asset_subscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        self._user(conn)
        if len(params) > self.config.max_subscribe_list:
            raise RpcError(*ERR_INVALID)
        assets: dict[str, None] = {}
        try:
            for value in params:
                assets[self._name(value)] = None
        finally:
            self.users.set_assets(conn, assets)
        conn.send(result_body(SUCCESS, req_id))

    def asset_unsubscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        self._user(conn)
        self.users.set_assets(conn, None)
        conn.send(result_body(SUCCESS, req_id))
