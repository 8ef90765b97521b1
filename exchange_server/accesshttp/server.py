"""accesshttp: the public JSON-RPC over HTTP gateway (rpc.md 1.1).

A small HTTP/1.1 server on an asyncio Protocol with the httptools parser, because the original's
wire details matter to existing clients and a framework would add its own: malformed requests
get 400 with an empty body and the connection is closed, a backend that is down gives 500 with
an empty body, and a backend reply is passed through byte for byte.

Extensions (docs/compatibility.md): a JSON array of requests is answered with an array of
replies, and responses carry ``Content-Type: application/json``.

Who may call what (trust.py): the API is a trusted back-office API.  Admin methods (``config.*``)
are refused with HTTP 403 and error 6 "require authentication" unless the request carries
``Authorization: Bearer <admin token>`` (config ``admin_token``, ``run --admin-token``); with
an ``api_token`` every non-public method needs that token; a public listener (``public_only``)
answers only the public market-data methods (routes.PUBLIC_METHODS).

Limits (limits.py, docs/operations.md "HTTP limits"): what one client may cost is bounded in
bytes, requests read ahead, replies waiting, time and connections (HttpProtocol), and no
request holds the event loop for long (batches are worked through in chunks).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import deque
from typing import Any

import httptools
from prometheus_client import Counter

from exchange_server.accesshttp import pages
from exchange_server.accesshttp.limits import DEFAULT_MAX_BODY, HttpLimits
from exchange_server.accesshttp.routes import ROUTES
from exchange_server.accesshttp.trust import Grant, TrustPolicy
from exchange_server.common import exactjson, jsonfmt, metrics
from exchange_server.common.backend import Backend
from exchange_server.common.errors import (
    GENERIC_MESSAGES,
    METHOD_NOT_FOUND,
    REQUIRE_AUTH,
    SERVICE_TIMEOUT,
    SERVICE_UNAVAILABLE,
)

log = logging.getLogger("exchange_server.accesshttp")

REASONS = {
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    504: b"Gateway Timeout",
}

#: A response body: bytes, or parts written one after the other (a batch's replies).
Body = bytes | list[bytes]

#: Most requests one batch may carry.
BATCH_MAX = 1000
#: A batch is worked through a chunk of calls at a time, the event loop running in between;
#: the chunk is halved while one takes longer than BATCH_SLICE seconds (calls answered in
#: this process: the loop is held) and doubled while they are quick, up to BATCH_CHUNK
#: (from 4 for the first batch, then from where the previous batch ended).
BATCH_CHUNK = 32
BATCH_SLICE = 0.004
#: Received data is parsed this many bytes at a time (the pipeline bound is checked between).
FEED_SLICE = 16384
#: Bytes of a request head beyond its target and headers (method, version, line ends).
HEAD_SLACK = 256
#: File descriptors kept for everything but HTTP connections (logs, databases, backends).
FD_RESERVE = 256
#: Most bytes read and dropped after a refused request before the connection is reset.
LINGER_BYTES = 1 << 20
#: A refused connection is logged at most this often (seconds); all are counted.
REFUSED_LOG_INTERVAL = 10.0

REFUSED = Counter("exchange_connections_refused_total",
                  "Connections closed at once because the gateway had its maximum open",
                  ["service"])

_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]


class _DateCache:
    """``Date:`` in the original's style (full month name), rebuilt once a second."""

    second = -1
    value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            t = time.gmtime(now)
            self.value = (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
                          f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT").encode()
            self.second = now
        return self.value


_date = _DateCache()


class BadRequest(Exception):
    """The body is not a valid request: answer 400 with no body and close."""


def parse_body(body: bytes) -> Any:
    """A request body's JSON (one request or a batch); BadRequest if it is not JSON.  Exact:
    integers beyond 64 bits stay integers (they reach the log and history)."""
    try:
        return exactjson.loads(body, lenient_depth=True)
    except ValueError:
        raise BadRequest from None


#: Request ids the gateway takes: a signed or unsigned 64-bit integer.
_ID_MIN = -2**63
_ID_MAX = 2**64 - 1


def parse_request(item: Any) -> tuple[str, list[Any], int]:
    if not isinstance(item, dict):
        raise BadRequest
    method = item.get("method")
    params = item.get("params")
    req_id = item.get("id")
    if type(method) is not str or type(params) is not list or type(req_id) is not int:
        raise BadRequest
    if not _ID_MIN <= req_id <= _ID_MAX:  # beyond what any JSON parser of ours ever took as an id
        raise BadRequest
    return method, params, req_id


class AccessHttp:
    """The gateway: routes each method to its backend and applies the timeout."""

    def __init__(self, backends: dict[str, Backend], timeout: float = 1.0,
                 max_body: int = DEFAULT_MAX_BODY, admin_token: str | None = None,
                 api_token: str | None = None, public_only: bool = False,
                 limits: HttpLimits | None = None) -> None:
        self.backends = backends
        #: what one client may cost (limits.py); ``max_body`` is its ``max_body_size``
        self.limits = limits or HttpLimits(max_body_size=max_body)
        self.connections: set[HttpProtocol] = set()
        #: connections closed at once because ``max_connections`` were open
        self.refused = 0
        self._refused_logged = 0.0
        #: calls of a batch worked at a time (adapted, see BATCH_SLICE)
        self._batch_chunk = 4
        #: which methods each request may call (trust.py)
        self.trust = TrustPolicy.of(admin_token, api_token, public_only)
        self.timeout = timeout
        self.max_body = self.limits.max_body_size
        self.requests = 0
        #: where the market page finds the WebSocket API (pages.py, GET /market-config.json):
        #: a full URL, or accessws' port on the page's host; None: not known here
        self.ws_url: str | None = None
        self.ws_port: int | None = None
        self._servers: list[asyncio.base_events.Server] = []

    def grant(self, authorization: bytes | None) -> Grant:
        """What an ``Authorization`` header value unlocks."""
        return self.trust.grant(authorization)

    async def dispatch(self, body: bytes, grant: Grant = Grant.NONE) -> tuple[int, bytes]:
        """Answer one HTTP request body: (status, response body).  ``grant``: what the
        request's ``Authorization`` header unlocks."""
        status, reply = await self.dispatch_data(parse_body(body), grant)
        return status, reply if isinstance(reply, bytes) else b"".join(reply)

    async def dispatch_data(self, data: Any, grant: Grant = Grant.NONE) -> tuple[int, Body]:
        """Answer one request body already parsed (``parse_body``); a batch's reply comes in
        parts (a large one is never copied into one buffer: see _respond)."""
        self.requests += 1
        if isinstance(data, list):
            return 200, await self._batch_parts(data, grant)
        method, params, req_id = parse_request(data)
        return await self._call(method, params, req_id, grant)

    async def _call(self, method: str, params: list[Any], req_id: int,
                    grant: Grant = Grant.NONE) -> tuple[int, bytes]:
        started = time.perf_counter()
        status, body = await self._route(method, params, req_id, grant)
        metrics.observe("accesshttp", method if status != 404 else "(unknown)", status,
                        time.perf_counter() - started)
        return status, body

    async def _route(self, method: str, params: list[Any], req_id: int,
                     grant: Grant = Grant.NONE) -> tuple[int, bytes]:
        route = ROUTES.get(method)
        if route is None:
            return 404, jsonfmt.error_body(METHOD_NOT_FOUND, GENERIC_MESSAGES[METHOD_NOT_FOUND], req_id)
        if not self.trust.allows(method, grant):
            return 403, jsonfmt.error_body(REQUIRE_AUTH, GENERIC_MESSAGES[REQUIRE_AUTH], req_id)
        backend = self.backends.get(route[0])
        if backend is None or not backend.connected():
            return 500, b""
        try:
            # asyncio.timeout, not wait_for: the call runs in this task (no task per request)
            async with asyncio.timeout(self.timeout):
                reply = await backend.call(method, params, req_id)
        except TimeoutError:
            return 504, jsonfmt.error_body(SERVICE_TIMEOUT, GENERIC_MESSAGES[SERVICE_TIMEOUT], req_id)
        except ConnectionError:
            return 500, b""
        return 200, reply

    async def _batch_parts(self, items: list[Any], grant: Grant = Grant.NONE) -> list[bytes]:
        """The replies of a batch, between ``[``, ``", "`` and ``]``."""
        if not items or len(items) > BATCH_MAX:
            raise BadRequest
        requests = [parse_request(item) for item in items]
        replies: list[tuple[int, bytes]] = []
        size = self._batch_chunk
        while len(replies) < len(requests):
            if replies:
                await asyncio.sleep(0)  # the engine and other clients between chunks
            chunk = requests[len(replies):len(replies) + size]
            started = time.perf_counter()
            replies += await asyncio.gather(*(self._call(m, p, i, grant) for m, p, i in chunk))
            took = time.perf_counter() - started
            if took > BATCH_SLICE:
                size = max(1, size // 2)
            elif took < BATCH_SLICE / 4:
                size = min(BATCH_CHUNK, size * 2)
        self._batch_chunk = size  # the next batch starts from what this one learned
        parts = [b"["]
        for (status, body), (_, _, req_id) in zip(replies, requests, strict=True):
            if status == 500:
                body = jsonfmt.error_body(SERVICE_UNAVAILABLE, GENERIC_MESSAGES[SERVICE_UNAVAILABLE], req_id)
            parts += (body, b", ")
        parts[-1] = b"]"
        return parts

    def admit(self, connection: HttpProtocol) -> bool:
        """Count a new connection in, or refuse it (False) when the maximum is open."""
        if len(self.connections) < self.limits.max_connections:
            self.connections.add(connection)
            return True
        self.refused += 1
        REFUSED.labels("accesshttp").inc()
        now = time.monotonic()
        if now - self._refused_logged >= REFUSED_LOG_INTERVAL:
            self._refused_logged = now
            log.warning("accesshttp: %d connections open (max_connections): new ones are closed "
                        "at once (%d so far)", len(self.connections), self.refused)
        return False

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        """Listen on one more address (``reuse_port``: several processes share the port)."""
        loop = asyncio.get_running_loop()
        protocol = AdminHttpProtocol if self.trust.reads_headers else HttpProtocol
        server = await loop.create_server(lambda: protocol(self), host, port,
                                          reuse_address=True, reuse_port=reuse_port or None,
                                          backlog=1024)
        self._servers.append(server)
        self._check_fd_limit()

    def _check_fd_limit(self) -> None:
        """Past the file-descriptor limit new connections are accepted and dropped at once
        (the event loop keeps accepting); say so when max_connections cannot be reached."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = self.limits.max_connections + FD_RESERVE
        if soft != resource.RLIM_INFINITY and soft < wanted:
            log.warning("accesshttp: the open-file limit (%d) is below max_connections + %d (%d):"
                        " raise it (ulimit -n, LimitNOFILE=) or lower svr.max_connections",
                        soft, FD_RESERVE, wanted)

    @property
    def port(self) -> int:
        return int(self._servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()


class _Refused(Exception):
    """Raised from a parser callback to stop reading a request over a limit (``status``)."""


class _Request:
    """A request read in full and not answered yet: ``status`` to answer without dispatching
    (0: dispatch ``data``, the parsed body), or the answer to a GET (``page``, pages.py)."""

    __slots__ = ("status", "data", "keep_alive", "page", "grant", "weight")

    def __init__(self, status: int, data: Any, keep_alive: bool,
                 page: pages.Answer | None = None, grant: Grant = Grant.NONE,
                 weight: int = 1) -> None:
        self.status = status
        self.data = data
        self.keep_alive = keep_alive
        self.page = page
        self.grant = grant
        self.weight = weight


class HttpProtocol(asyncio.Protocol):
    """One client connection.  Requests are answered in order (pipelining allowed).

    What a client may cost is bounded (limits.py): the request line, headers and body while
    they are read (pieces kept in lists, refused as soon as a limit is passed, the body from its
    Content-Length before it is read); the requests read ahead (``max_pipeline``, a batch counts
    as its N requests: beyond it the socket is not read, ``pause_reading``); the replies waiting
    to be sent (no request is worked on while the transport is above its high-water mark,
    ``pause_writing``); and time (``keep_alive`` when idle, ``request_timeout`` to send a request
    or to take a reply)."""

    #: what the request being read may call (set by AdminHttpProtocol)
    _grant = Grant.NONE

    def __init__(self, app: AccessHttp) -> None:
        self.app = app
        self.limits = app.limits
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url: list[bytes] = []
        self._url_size = 0
        self._head_size = 0
        self._head_chunks = 0
        self._in_head = False
        self._began = False
        self._in_message = False
        self._limit_status = 0
        self._body: list[bytes] = []
        self._body_size = 0
        #: the request's Host and X-Forwarded-Proto headers (pages.py: the OpenRPC servers)
        self._host: bytes | None = None
        self._proto: bytes | None = None
        #: received and not parsed yet: the pipeline was full
        self._unparsed: memoryview | None = None
        self._queue: deque[_Request] = deque()
        #: requests queued or being answered, a batch counting as its N requests
        self._pending = 0
        self._reading = True
        self._refused = False
        self._lingering = False
        self._lingered = 0
        self._writable = asyncio.Event()
        self._writable.set()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.app.admit(self):
            self._closing = True
            transport.close()
            return
        self._arm_read(self.limits.keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.app.connections.discard(self)
        for timer in (self._read_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._queue.clear()
        self._body = []
        self._url = []
        self._unparsed = None
        self._writable.set()
        if self._worker is not None:
            self._worker.cancel()

    def _linger(self, size: int) -> None:
        """Data after a refused request is dropped, up to LINGER_BYTES (then: reset)."""
        if self._lingering and self.transport is not None:
            self._lingered += size
            if self._lingered > LINGER_BYTES:
                self.transport.abort()

    def eof_received(self) -> bool:
        if self._lingering and self.transport is not None:
            self.transport.close()
        return False

    def pause_writing(self) -> None:
        self._writable.clear()
        self._watch_writes(-1)

    def _watch_writes(self, last_size: int) -> None:
        """While replies wait above the high-water mark, the client must take some of them
        every ``request_timeout`` (as nginx's send_timeout), else the connection is closed."""
        transport = self.transport
        if self._writable.is_set() or transport is None or transport.is_closing():
            return
        size = transport.get_write_buffer_size()
        if 0 <= last_size <= size:
            self._abort()
            return
        if self._write_timer is not None:
            self._write_timer.cancel()
        self._write_timer = self.loop.call_later(self.limits.request_timeout,
                                                 self._watch_writes, size)

    def resume_writing(self) -> None:
        self._writable.set()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def data_received(self, data: bytes) -> None:
        if self._closing or self._refused:
            self._linger(len(data))
            return
        self._feed(memoryview(data))

    def _feed(self, data: memoryview) -> None:
        """Parse ``data`` a slice at a time; once ``max_pipeline`` requests wait, keep the rest
        (at most one read: the socket is not read meanwhile) for when replies have gone out."""
        offset = 0
        while offset < len(data):
            if self._pending >= self.limits.max_pipeline:
                self._unparsed = data[offset:]
                self._pause_reading()
                return
            piece = data[offset:offset + FEED_SLICE]
            offset += len(piece)
            if not self._feed_piece(piece):
                return

    def _feed_piece(self, piece: memoryview) -> bool:
        """Parse one slice; False when a request was refused."""
        self._began = False
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            self._refuse(400)
            return False
        except httptools.HttpParserError:
            self._refuse(self._limit_status or 400)
            return False
        if self._in_head and not self._began:
            # the whole slice belongs to a request line and headers not complete yet
            self._head_chunks += len(piece)
            if self._head_chunks > (self.limits.max_url_size + self.limits.max_header_size
                                    + HEAD_SLACK):
                self._refuse(431)
                return False
        return True

    # -- httptools callbacks ----------------------------------------------------------------------

    def _over(self, status: int) -> _Refused:
        self._limit_status = status
        return _Refused(status)

    def on_message_begin(self) -> None:
        self._url = []
        self._url_size = 0
        self._head_size = 0
        self._head_chunks = 0
        self._in_head = True
        self._in_message = True
        self._began = True
        self._body = []
        self._body_size = 0
        self._host = self._proto = None
        if self._reading:
            self._arm_read(self.limits.request_timeout)

    def on_url(self, url: bytes) -> None:
        self._url_size += len(url)
        if self._url_size > self.limits.max_url_size:
            raise self._over(414)
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if len(name) == 4 and name.lower() == b"host":
            self._host = value
        elif len(name) == 17 and name.lower() == b"x-forwarded-proto":
            self._proto = value
        elif len(name) == 14 and name.lower() == b"content-length":
            try:
                too_large = int(value) > self.limits.max_body_size
            except ValueError:
                too_large = False  # the parser refuses it
            if too_large:
                raise self._over(413)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_size > self.limits.max_header_size:
            raise self._over(431)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_body_size:
            raise self._over(413)
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        self._body = []
        self._in_message = False
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        self._cancel_read_timer()
        if not body and method == b"GET":
            # GET /, /openrpc.json, the market pages and their assets (pages.py); other GETs,
            # and any GET with a body (a request sent the wrong way): the original's 400
            page = pages.handle_get(b"".join(self._url), self.app, self._host, self._proto)
            if page is not None:
                self._enqueue(_Request(0, None, keep_alive, page))
                return
        if method != b"POST" or not body:
            self._enqueue(_Request(400, None, False))
            return
        try:
            data = parse_body(body)
        except BadRequest:
            self._enqueue(_Request(400, None, False))
            return
        weight = len(data) if isinstance(data, list) and data else 1
        self._enqueue(_Request(0, data, keep_alive, grant=self._grant, weight=weight))

    # -- flow control and time limits -------------------------------------------------------------

    def _refuse(self, status: int) -> None:
        """Stop reading; answer ``status`` after the requests before it, then close."""
        self._refused = True
        self._pause_reading()
        self._enqueue(_Request(status, None, False))

    def _pause_reading(self) -> None:
        if self._reading and self.transport is not None:
            self._reading = False
            self._cancel_read_timer()
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self._reading and not self._refused and self.transport is not None:
            unparsed, self._unparsed = self._unparsed, None
            if unparsed is not None:
                self._feed(unparsed)
                if self._unparsed is not None or self._refused or self._closing:
                    return
            self._reading = True
            self.transport.resume_reading()
            if self._in_message:
                self._arm_read(self.limits.request_timeout)

    def _arm_read(self, seconds: float) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(seconds, self._read_timeout)

    def _read_timeout(self) -> None:
        """Idle past keep_alive (closed as the original does), or too slow to send a request
        (reset: there is nothing to say to it)."""
        transport = self.transport
        if self._in_message or self._queue or transport is None:
            self._abort()
        elif not self._closing:
            self._closing = True
            transport.close()

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _abort(self) -> None:
        """Too slow to send a request or to take a reply: close at once."""
        transport = self.transport
        if transport is not None and not self._closing:
            self._closing = True
            transport.abort()

    # -- answering --------------------------------------------------------------------------------

    def _enqueue(self, request: _Request) -> None:
        self._queue.append(request)
        self._pending += request.weight
        if self._worker is None and not self._closing:
            self._worker = self.loop.create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._queue and not self._closing:
                if not self._writable.is_set():
                    await self._writable.wait()
                    continue
                request = self._queue[0]
                if not await self._answer(request):
                    return
                self._queue.popleft()
                self._pending -= request.weight
                if self._pending < self.limits.max_pipeline:
                    self._resume_reading()
                if self._queue:
                    await asyncio.sleep(0)  # other connections and the engine between requests
        finally:
            self._worker = None
            if not self._closing and not self._queue and self._reading and not self._in_message:
                self._arm_read(self.limits.keep_alive)

    async def _answer(self, request: _Request) -> bool:
        """Answer one request; False when the connection was closed."""
        if request.status:
            self._respond(request.status, b"", close=True)
            return False
        content_type = b"application/json"
        reply: Body
        try:
            if request.page is not None:
                status, reply, content_type = await pages.resolve(request.page)
            else:
                status, reply = await self.app.dispatch_data(request.data, request.grant)
        except BadRequest:
            self._respond(400, b"", close=True)
            return False
        except Exception:
            log.exception("request failed")
            self._respond(500, b"", close=True)
            return False
        self._respond(status, reply, close=not request.keep_alive, content_type=content_type)
        return request.keep_alive

    def _respond(self, status: int, body: Body, close: bool,
                 content_type: bytes = b"application/json") -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        size = len(body) if isinstance(body, bytes) else sum(map(len, body))
        head = b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %d\r\n" % (
            status, REASONS[status], _date.get(), size)
        if size:
            head += b"Content-Type: %s\r\n" % content_type
        if close:
            head += b"Connection: close\r\n"
        if isinstance(body, bytes):
            transport.write(head + b"\r\n" + body)
        else:  # the parts as they are: joining megabytes would hold the loop
            transport.writelines([head + b"\r\n", *body])
        if close:
            self._close(transport)

    def _close(self, transport: asyncio.Transport) -> None:
        """Close after the last reply.  A request refused before it was read in full is
        followed by more of it: closing at once would reset the connection and the client
        could lose the reply, so (as nginx's lingering close) the write side is shut and what
        still comes is read and dropped until the client closes, ``request_timeout`` or
        LINGER_BYTES."""
        self._closing = True
        self._queue.clear()
        if self._write_timer is not None:
            self._write_timer.cancel()
        # a client that does not take the last reply must not keep the socket forever
        self._write_timer = self.loop.call_later(self.limits.request_timeout, transport.abort)
        if self._refused and transport.can_write_eof():
            self._lingering = True
            transport.write_eof()
            transport.resume_reading()
        else:
            transport.close()


class AdminHttpProtocol(HttpProtocol):
    """A connection to a gateway with a token: also reads ``Authorization``."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._grant = Grant.NONE

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)  # sizes: every header counts
        if len(name) == 13 and name.lower() == b"authorization":
            self._grant = self.app.grant(value)
