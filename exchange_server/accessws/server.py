"""accessws: the WebSocket API (websocket.md) on aiohttp -- the application that ties it up.

Why this shape: the server owns only what is about connections -- the listener, the set of
connections, each connection's read loop, dispatching a message to its method, and the timers
(idle connections, emptying the query cache).  The rest lives in modules with one job each and
narrow dependencies, none of which imports this one:

* handlers.py: the methods (params checks, answers, subscriptions) and their table;
* forward.py: the one way to ask a backend (look up, check, time out, call, parse, log), given
  to the handlers, the market-data feeds and the user pushes instead of the server;
* market.py / user.py: the pushes (polled market data; orders and balances from the bus);
* ratelimit.py: the per-connection token bucket and the cap on requests in flight;
* cache.py: the query cache; handshake.py: accepting a connection; listener.py: the bounds on
  aiohttp's listener (handshake timeout, connection limit, unmasked frames closed with 1002).

aiohttp does the HTTP upgrade and reads frames (reassembling fragments, unmasking, answering
close, enforcing ``max_pkg_size``); everything the server sends is written by
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
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from exchange_server.accessws.auth import AuthClient
from exchange_server.accessws.cache import QueryCache
from exchange_server.accessws.config import AccessWsConfig, parse_bind
from exchange_server.accessws.forward import Forwarder
from exchange_server.accessws.handlers import Handler, Handlers
from exchange_server.accessws.handshake import client_ip, handshake_ok, set_buffer_sizes
from exchange_server.accessws.listener import GuardedResponse, LimitedServer
from exchange_server.accessws.market import MarketFeeds, PollFeed
from exchange_server.accessws.protocol import BadRequest, error_body, parse_request
from exchange_server.accessws.ratelimit import RateLimit
from exchange_server.accessws.session import Connection
from exchange_server.accessws.user import UserFeeds, bus_topics
from exchange_server.bus.base import BusReader
from exchange_server.common.backend import Backend
from exchange_server.common.errors import GENERIC_MESSAGES, METHOD_NOT_FOUND, RpcError, internal_error
from exchange_server.common.jsondepth import check_params_depth

log = logging.getLogger("exchange_server.accessws")

#: The whole query cache is dropped this often, as the original does.
CACHE_CLEAR_INTERVAL = 60.0
#: Longest the idle-connection check waits between two passes (the original: 60 s).
IDLE_CHECK_INTERVAL = 60.0
#: Seconds a closing handshake may take before the connection is just closed.
CLOSE_TIMEOUT = 2.0

#: Close frame with status 1008 (policy violation), sent before closing on a malformed message.
CLOSE_POLICY_VIOLATION = bytes((0x88, 2)) + int(WSCloseCode.POLICY_VIOLATION).to_bytes(2, "big")


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
        self.connections: set[Connection] = set()
        self.forwarder = Forwarder(backends, config.backend_timeout)
        self.cache = QueryCache(config.cache_timeout, config.cache_max_entries)
        self.auth = AuthClient(config.auth_url, config.sign_url, config.backend_timeout,
                               config.auth_concurrency, config.sign_concurrency)
        self.market = MarketFeeds(self.forwarder, config, clock)
        self.feeds: list[PollFeed] = self.market.all
        self.users = UserFeeds(self.forwarder, bus_topics(config))
        self.handlers = Handlers(config, self.forwarder, self.cache, self.market, self.users,
                                 self.auth, clock)
        self.methods: dict[str, Handler] = self.handlers.table
        self.limits = RateLimit(config.rate_limit, float(config.rate_burst), config.max_pending)
        self._server: LimitedServer | None = None
        self._runner: web.ServerRunner | None = None
        self._monitor: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._requests: set[asyncio.Task[None]] = set()
        self._readers: set[asyncio.Task[Any]] = set()
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
        try:
            for site in sites:
                await site.start()
            if self.serve_monitor and self.config.monitor is not None:
                await self._start_monitor()
        except BaseException:
            # a listener that fails after others opened (a port taken): close what is open, so
            # a failed start leaves nothing listening (process/lifecycle.py stops no half step)
            await self._runner.cleanup()
            self._runner = None
            raise
        self.market.start()
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
        await self.market.stop()
        for conn in list(self.connections):
            conn.drop("server stopping", quiet=True)
        for task in list(self._requests):
            task.cancel()
        if self._requests:
            await asyncio.gather(*self._requests, return_exceptions=True)
        if self._readers:
            await asyncio.wait(list(self._readers), timeout=5.0)
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

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        ws = GuardedResponse(
            protocols=(self.config.svr.protocol,), compress=False, autoping=False,
            autoclose=True, max_msg_size=self.config.svr.max_pkg_size, timeout=CLOSE_TIMEOUT,
            on_unmasked=self._on_unmasked,
        )
        if transport is None or self._stopping or not handshake_ok(request, ws, self.config.svr):
            if transport is not None:
                transport.close()
            return web.Response()
        set_buffer_sizes(transport, self.config.svr)
        await ws.prepare(request)
        assert request.transport is not None
        now = time.monotonic()
        conn = Connection(request.transport, client_ip(request), self.config.send_buffer_limit,
                          now, float(self.config.rate_burst))
        self.connections.add(conn)
        self.accepted += 1
        task = asyncio.current_task()
        if task is not None:
            self._readers.add(task)
        try:
            await self._read_loop(conn, ws)
        except (asyncio.CancelledError, ConnectionError):
            pass
        except Exception:
            log.exception("connection %d from %s failed", conn.id, conn.remote)
        finally:
            self._detach(conn)
            if task is not None:
                self._readers.discard(task)
            if not ws.closed and not conn.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            conn.closed = True
        return ws

    async def _read_loop(self, conn: Connection, ws: web.WebSocketResponse) -> None:
        limits = self.limits
        while not conn.closed:
            msg = await ws.receive()
            kind = msg.type
            now = time.monotonic()
            conn.last_active = now
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                # a connection going faster than rate_limit, or with max_pending requests in
                # flight, is read later
                await limits.admit(conn, now)
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
        self.market.clear(conn)
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
            conn.send(error_body(METHOD_NOT_FOUND, GENERIC_MESSAGES[METHOD_NOT_FOUND], req_id))
            return True
        try:
            check_params_depth(params)  # before any handler, cache key or backend sees them
            waiting = handler(conn, req_id, params)
        except RpcError as e:
            conn.send(error_body(e.code, e.message, req_id))
            return True
        except Exception:
            log.exception("%s %r failed", method, params[:10])
            error = internal_error()
            conn.send(error_body(error.code, error.message, req_id))
            return True
        if waiting is not None:
            conn.pending += 1
            task: asyncio.Task[None] = asyncio.ensure_future(waiting)
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
            task.add_done_callback(conn.request_done)
        return True
