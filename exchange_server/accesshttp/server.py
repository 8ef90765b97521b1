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

Hot path: a single call to a backend that answers without a task (the embedded matchengine,
``call_nowait``) with nothing queued before it on its connection is made as soon as it is read
(``HttpProtocol._start_inline``) and its reply written from the commit's callback; the 504 after
``timeout`` is one timer for all such calls.  Anything else (batches, pages, pipelined requests
behind another, other backends) is answered by the connection's worker task, with the same
replies.  A read of whole plain calls too short to break a limit is parsed without the URL and
header callbacks (``_QuickReader``); any other read, or one it does not take, in full.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import select
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import httptools
from prometheus_client import Counter

from exchange_server.accesshttp import pages
from exchange_server.accesshttp.limits import DEFAULT_MAX_BODY, HttpLimits
from exchange_server.accesshttp.routes import ROUTES
from exchange_server.accesshttp.trust import Grant, TrustPolicy
from exchange_server.common import exactjson, jsonfmt, metrics
from exchange_server.common.backend import Backend, NowaitCall
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
#: the chunk is halved while one holds this thread's CPU for longer than BATCH_SLICE seconds
#: (calls answered in this process: the loop is held) and doubled while they are quick, up to
#: BATCH_CHUNK (from 4 for the first batch, then from where the previous batch ended).  CPU
#: time, not wall time: a write's wait for its durable commit holds nothing, and counting it
#: shrank a batch of writes to one call, so one commit, at a time (2-4x slower than 105fc31).
#: Calls to a backend that answers without a task (the embedded matchengine) are made in
#: chunks of their own (``_start_chunk``): as many as fit in BATCH_SLICE of CPU, counted call
#: by call, up to INLINE_BATCH_CHUNK.
BATCH_CHUNK = 32
BATCH_SLICE = 0.004
#: Most calls of one chunk made inline (see BATCH_CHUNK): what bounds them is BATCH_SLICE;
#: this only keeps cheap calls (answered at once) from piling up one large reply.
INLINE_BATCH_CHUNK = 256
#: Chunks of a batch made inline before the replies of the first of them came (see
#: ``batch_chunks``): the writes of those after it join the next commit.
BATCH_AHEAD = 4
#: A batch's replies are held up to this many bytes; beyond, they are sent as they come (chunked
#: encoding; HTTP/1.0: until the connection closes) and no more calls are made while the
#: transport is above its high-water mark (what one connection holds stays bounded).
STREAM_AFTER = 256 * 1024
#: While neither read nor written to (pipeline full, client taking nothing), whether the client
#: went is looked at this often (seconds): its end is not seen otherwise.
PEER_CHECK = 1.0
#: Received data is parsed this many bytes at a time (the pipeline bound is checked between).
FEED_SLICE = 16384
#: Bytes of a request head beyond its target and headers (method, version, line ends).
HEAD_SLACK = 256
#: Bytes of chunked framing (size lines, extensions, line ends) a body may carry per byte of
#: data (one byte chunks take 5; refused beyond, with the header limit's worth on top).
FRAMING_PER_BYTE = 16
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
    #: a JSON reply's head up to its Content-Length, by status, for ``second``
    heads: dict[int, bytes] = {}

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            t = time.gmtime(now)
            self.value = (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
                          f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT").encode()
            self.second = now
            self.heads = {}
        return self.value

    def head(self, status: int) -> bytes:
        """``HTTP/1.1 <status> <reason>`` and ``Date:`` lines of a reply made now (the same
        text for every reply of a second: made once)."""
        if int(time.time()) != self.second:  # get()'s test, without its call (every reply)
            self.get()
        head = self.heads.get(status)
        if head is None:
            head = self.heads[status] = b"HTTP/1.1 %d %s\r\nDate: %s\r\n" % (
                status, REASONS[status], self.value)
        return head


_date = _DateCache()

#: ``Grant.NONE``, read once: a member read from its enum class goes through a descriptor in
#: Python 3.11 (ten times a plain class attribute), and every request's grant is compared to it
_NO_GRANT = Grant.NONE

#: The Content-Type of JSON replies, and a keep-alive JSON reply after its status and Date
#: lines (``_DateCache.head``): the same bytes as HttpProtocol._respond's general path.
_JSON = b"application/json"
_JSON_REPLY = b"%sContent-Length: %d\r\nContent-Type: application/json\r\n\r\n%s"


def _separated(replies: list[bytes], first: int) -> list[bytes]:
    """A batch's replies from its ``first``-th on, each after its separator (``[`` before
    the batch's first reply, ``", "`` before the others)."""
    parts: list[bytes] = []
    for body in replies:
        parts += (b", " if first or parts else b"[", body)
    return parts


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


class _InlineCall:
    """A call made by AccessHttp.call_inline and answered once: by the backend, or 504."""

    __slots__ = ("method", "req_id", "started", "answered", "_answered")

    def __init__(self, method: str, req_id: int, started: float,
                 answered: Callable[[int, bytes], None]) -> None:
        self.method = method
        self.req_id = req_id
        #: ``time.perf_counter()`` when made: its 504 is due ``AccessHttp.timeout`` after
        self.started = started
        self.answered = False
        self._answered = answered

    def reply(self, body: bytes) -> None:
        self._answer(200, body)

    def expire(self) -> None:
        if not self.answered:
            self._answer(504, jsonfmt.error_body(SERVICE_TIMEOUT,
                                                 GENERIC_MESSAGES[SERVICE_TIMEOUT], self.req_id))

    def _answer(self, status: int, body: bytes) -> None:
        if self.answered:
            return  # timed out before the backend answered, or the other way round
        self.answered = True
        metrics.observe("accesshttp", self.method, status, time.perf_counter() - self.started)
        try:
            self._answered(status, body)
        except Exception:  # called from the engine's commit: never break it
            log.exception("reply failed")


class _InlineChunk:
    """A chunk of a batch's calls made inline (AccessHttp._start_chunk): their replies in call
    order, and a future done once every one is answered (by its backend, or 504)."""

    __slots__ = ("replies", "missing", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.replies: list[bytes] = []
        #: replies not given yet, plus one until every call is made (``finish``)
        self.missing = 1
        self.done: asyncio.Future[None] = loop.create_future()

    def slot(self) -> Callable[[int, bytes], None]:
        """The ``answered`` callback of the next call: its reply goes to its place."""
        index = len(self.replies)
        self.replies.append(b"")
        self.missing += 1

        def answered(status: int, body: bytes) -> None:
            self.replies[index] = body
            self.missing -= 1
            if not self.missing and not self.done.done():
                self.done.set_result(None)

        return answered

    def finish(self) -> None:
        """Every call is made: done now if every one was answered at once."""
        self.missing -= 1
        if not self.missing and not self.done.done():
            self.done.set_result(None)


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
        #: calls made inline and maybe not answered yet, oldest first (call_inline)
        self._inline: deque[_InlineCall] = deque()
        self._inline_timer: asyncio.TimerHandle | None = None
        #: routed methods: the backend a request without a token reaches them on ("": not
        #: allowed); see _nowait
        self._open_routes: dict[str, str] = {}

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

    def call_inline(self, data: Any, grant: Grant, answered: Callable[[int, bytes], None],
                    loop: asyncio.AbstractEventLoop) -> tuple[int, bytes] | None | Literal[False]:
        """One call (not a batch) to a backend that answers without a task (LocalBackend of
        the matchengine), made now: (status, body) when it is answered at once, None when
        ``answered(status, body)`` will be called (once durable, or 504 after ``timeout``),
        False when it is not such a call (``dispatch_data`` answers it; nothing was done).
        The same replies as ``dispatch_data``, without a task, a future and a timeout
        context per request."""
        if type(data) is not dict:
            return False
        try:
            method, params, req_id = parse_request(data)
        except BadRequest:
            return False
        nowait = self._nowait(method, grant)
        if nowait is None:
            return False
        self.requests += 1
        call = _InlineCall(method, req_id, time.perf_counter(), answered)
        body = nowait(method, params, req_id, call.reply)
        if body is not None:
            call.answered = True
            metrics.observe("accesshttp", method, 200, time.perf_counter() - call.started)
            return 200, body
        self._expire_later(call, loop)
        return None

    def _nowait(self, method: str, grant: Grant) -> NowaitCall | None:
        """How to call ``method`` without a task (its backend's ``call_nowait``), or None when
        it cannot be (unknown or not allowed: answered by ``_route``; a backend that has no
        such call or is down).  Which backend a routed method without a token may reach is
        remembered (ROUTES and the trust policy do not change; the backends may)."""
        if grant is _NO_GRANT:
            name = self._open_routes.get(method)
            if name is None:
                name = self._open_route(method)
            if not name:
                return None
        else:
            route = ROUTES.get(method)
            if route is None or not self.trust.allows(method, grant):
                return None
            name = route[0]
        backend = self.backends.get(name)
        nowait: NowaitCall | None = getattr(backend, "call_nowait", None)
        if nowait is None or backend is None or not backend.connected():
            return None
        return nowait

    def _open_route(self, method: str) -> str:
        """The backend a request without a token reaches ``method`` on, "" when it is not
        routed or not allowed; remembered for routed methods only (a bounded table)."""
        route = ROUTES.get(method)
        if route is None:
            return ""
        name = route[0] if self.trust.allows(method, Grant.NONE) else ""
        self._open_routes[method] = name
        return name

    def _expire_later(self, call: _InlineCall, loop: asyncio.AbstractEventLoop) -> None:
        """Answer ``call`` 504 if it is not answered in ``timeout`` seconds: one timer for all
        (calls expire in the order they were made), not one per call.  A call's deadline is
        counted from its ``started`` (no clock read per call: one per order placed)."""
        self._inline.append(call)
        if self._inline_timer is None:
            self._inline_timer = loop.call_later(self.timeout, self._expire_inline, loop)

    def _expire_inline(self, loop: asyncio.AbstractEventLoop) -> None:
        self._inline_timer = None
        calls = self._inline
        timeout = self.timeout
        now = time.perf_counter()
        while calls and (calls[0].answered or calls[0].started + timeout <= now):
            calls.popleft().expire()
        if calls:
            self._inline_timer = loop.call_later(calls[0].started + timeout - now,
                                                 self._expire_inline, loop)

    async def _batch_parts(self, items: list[Any], grant: Grant = Grant.NONE) -> list[bytes]:
        """The replies of a batch, between ``[``, ``", "`` and ``]``."""
        parts: list[bytes] = []
        async for chunk in self.batch_chunks(items, grant):
            parts += chunk
        parts.append(b"]")
        return parts

    def dispatch_batch(self, items: list[Any], grant: Grant = Grant.NONE) -> AsyncIterator[list[bytes]]:
        """Answer a batch a chunk of calls at a time (HttpProtocol sends a large one as it
        comes); see batch_chunks."""
        self.requests += 1
        return self.batch_chunks(items, grant)

    async def batch_chunks(self, items: list[Any],
                           grant: Grant = Grant.NONE) -> AsyncIterator[list[bytes]]:
        """The replies of a batch, a chunk of calls at a time, each reply after its separator
        (``[`` then ``", "``); the closing ``]`` is the caller's.  BadRequest (before any
        call) when the batch is empty, too long or has an invalid request.

        Chunks whose calls all go to a backend that answers without a task are made inline
        (``_start_chunk``), and the next ones are made before the replies of those before
        came, up to BATCH_AHEAD chunks: their writes gather into the next commit while one is
        in flight (awaiting each chunk's replies before the next made a batch of 500 writes
        wait for some 16 commits one after the other).  What is held stays bounded: at most
        BATCH_AHEAD chunks of at most BATCH_SLICE of CPU each."""
        if not items or len(items) > BATCH_MAX:
            raise BadRequest
        requests = [parse_request(item) for item in items]
        loop = asyncio.get_running_loop()
        done = 0  # calls made
        given = 0  # replies given out
        ahead: deque[_InlineChunk] = deque()  # made inline, replies not given out yet
        while True:
            made = None
            if done < len(requests):
                if done:
                    await asyncio.sleep(0)  # the engine and other clients between chunks
                made = self._start_chunk(requests, done, grant, loop)
                if made is not None:
                    ahead.append(made)
                    done += len(made.replies)
            # all made, or the next call is the task path's: what was made before goes first
            drain = made is None or done == len(requests)
            while ahead and (drain or ahead[0].done.done() or len(ahead) >= BATCH_AHEAD):
                chunk = ahead.popleft()
                await chunk.done
                yield _separated(chunk.replies, given)
                given += len(chunk.replies)
            if done == len(requests):
                return
            if made is None:
                bodies = await self._call_chunk(requests, done, grant)
                yield _separated(bodies, given)
                given += len(bodies)
                done += len(bodies)

    async def _call_chunk(self, requests: list[tuple[str, list[Any], int]], start: int,
                          grant: Grant) -> list[bytes]:
        """The replies of a chunk of calls from ``requests[start]`` on, each a task (up to
        the next call that can be made inline), its size adapted to the CPU it held (see
        BATCH_CHUNK)."""
        size = self._batch_chunk
        chunk = requests[start:start + size]
        for k in range(1, len(chunk)):  # up to the next call made inline
            if self._nowait(chunk[k][0], grant) is not None:
                chunk = chunk[:k]
                break
        started = time.thread_time()
        replies = await asyncio.gather(*(self._call(m, p, i, grant) for m, p, i in chunk))
        took = time.thread_time() - started
        if took > BATCH_SLICE:
            size = max(1, size // 2)
        elif took < BATCH_SLICE / 4:
            size = min(BATCH_CHUNK, size * 2)
        self._batch_chunk = size  # the next batch starts from what this one learned
        return [jsonfmt.error_body(SERVICE_UNAVAILABLE, GENERIC_MESSAGES[SERVICE_UNAVAILABLE],
                                   req_id) if status == 500 else body
                for (status, body), (_, _, req_id) in zip(replies, chunk, strict=True)]

    def _start_chunk(self, requests: list[tuple[str, list[Any], int]], start: int,
                     grant: Grant, loop: asyncio.AbstractEventLoop) -> _InlineChunk | None:
        """Make calls from ``requests[start]`` on as ``call_inline`` does (no task, future or
        timeout per call: a call not answered in ``timeout`` is answered 504), until they
        have held this thread's CPU for BATCH_SLICE or INLINE_BATCH_CHUNK are made; None (and
        nothing made) when ``requests[start]`` is not such a call.  Stops before a call that
        is not (404, 403, another backend): the task path answers that one."""
        made: _InlineChunk | None = None
        started = time.thread_time()
        for method, params, req_id in requests[start:start + INLINE_BATCH_CHUNK]:
            nowait = self._nowait(method, grant)
            if nowait is None:
                break
            if made is None:
                made = _InlineChunk(loop)
            call = _InlineCall(method, req_id, time.perf_counter(), made.slot())
            body = nowait(method, params, req_id, call.reply)
            if body is not None:
                call.reply(body)
            else:
                self._expire_later(call, loop)
            if time.thread_time() - started > BATCH_SLICE:
                break
        if made is not None:
            made.finish()
        return made

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


#: Lengths of the header names HttpProtocol.on_header reads (host, content-length,
#: x-forwarded-proto).
_WATCHED_SIZES = frozenset((4, 14, 17))


class _Refused(Exception):
    """Raised from a parser callback to stop reading a request over a limit (``status``)."""


class _NotQuick(Exception):
    """Raised from a _QuickReader callback: a request the quick parse does not take."""


class _QuickReader:
    """The callbacks of a connection's second parser, which reads a slice of plain calls
    (HttpProtocol._feed_quick) with three Python callbacks per request instead of eight.

    Why a second parser: httptools makes only the callbacks its protocol object has, chosen
    when the parser is made; the limits need on_url and on_header (a call each per header),
    but a slice too short to break any of them (``HttpProtocol._quick_max``) needs neither.
    Why it is safe: nothing is done while it parses; its requests are answered after, and only
    when the slice held whole requests, each a keep-alive POST whose body is a JSON object.
    Anything else (an error, a request not ended in the slice, another method, a batch, a
    close) is read again, from the same bytes, by the connection's full parser: the same
    answers as if the quick parse had not been tried.  The reader is replaced after that (its
    parser may be within a request)."""

    __slots__ = ("parser", "open", "parts", "bodies")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        #: a request began and did not end
        self.open = False
        #: the body of the request being read, as it came
        self.parts: list[bytes] = []
        #: the bodies of the requests read in full, in order
        self.bodies: list[bytes] = []

    def on_message_begin(self) -> None:
        self.open = True

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        body = b"".join(self.parts)
        if (body[:1] != b"{" or parser.get_method() != b"POST"
                or not parser.should_keep_alive()):
            raise _NotQuick  # the full parser reads this slice (no answer was made yet)
        self.parts.clear()
        self.open = False
        self.bodies.append(body)


class _Request:
    """A request read in full and not answered yet: ``status`` to answer without dispatching
    (0: dispatch ``data``, the parsed body), or the answer to a GET (``page``, pages.py)."""

    __slots__ = ("status", "data", "keep_alive", "page", "grant", "weight", "http10")

    def __init__(self, status: int, data: Any, keep_alive: bool,
                 page: pages.Answer | None = None, grant: Grant = Grant.NONE,
                 weight: int = 1, http10: bool = False) -> None:
        self.status = status
        self.data = data
        self.keep_alive = keep_alive
        self.page = page
        self.grant = grant
        self.weight = weight
        #: an HTTP/1.0 request (a batch's reply streamed without chunked encoding)
        self.http10 = http10


class HttpProtocol(asyncio.Protocol):
    """One client connection.  Requests are answered in order (pipelining allowed).

    What a client may cost is bounded (limits.py): the request line, headers and body while
    they are read (pieces kept in lists, refused as soon as a limit is passed, the body from its
    Content-Length before it is read); the requests read ahead (``max_pipeline``, a batch counts
    as its N requests: beyond it the socket is not read, ``pause_reading``); the replies waiting
    to be sent (no request is worked on while the transport is above its high-water mark,
    ``pause_writing``; a large batch reply is sent as it is built, so one connection holds a
    bounded part of it); what the parser reads without a callback (line ends between requests,
    chunk size lines, trailers: _feed_piece); time (``keep_alive`` when idle,
    ``request_timeout`` to send a request or to take a reply); and a client that went while
    its connection was not read gets no more work (_peer_gone)."""

    #: what the request being read may call (set by AdminHttpProtocol)
    _grant = Grant.NONE
    #: whether short slices of plain calls are read by a _QuickReader (not when a header
    #: can change the answer: AdminHttpProtocol)
    _reads_quick = True

    def __init__(self, app: AccessHttp) -> None:
        self.app = app
        self.limits = app.limits
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        limits = self.limits
        #: the longest slice the quick parse reads (_feed_quick): no request in it can pass
        #: the URL, header or body limit (a header counts its name and value plus 4 bytes
        #: and takes at least 3 on the wire, ``x:`` and a line end: its count is at most 5/3
        #: of its bytes, and the slice's at most twice its length)
        self._quick_max = min(limits.max_url_size, limits.max_header_size // 2,
                              limits.max_body_size, FEED_SLICE) if self._reads_quick else -1
        self._quick: _QuickReader | None = None
        self.transport: asyncio.Transport | None = None
        self._url: list[bytes] = []
        self._url_size = 0
        self._head_size = 0
        #: bytes read, not body data, since a request began or ended (see _feed_piece)
        self._stray = 0
        self._in_head = False
        self._began = False
        #: a request began in the slice being parsed: arm its read timer after (_feed_piece)
        self._arm_due = False
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
        #: not ``_writable.is_set()`` (kept with it: a plain attribute where each request
        #: looks, _start_inline; the event's method is a Python call)
        self._write_paused = False
        self._worker: asyncio.Task[None] | None = None
        #: the request at the head of the queue is being answered inline (_start_inline)
        self._inline = False
        self._closing = False
        self._read_timer: asyncio.TimerHandle | None = None
        #: when reading times out (loop time); None: it does not (see _arm_read)
        self._read_deadline: float | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._peer_timer: asyncio.TimerHandle | None = None

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
        for timer in (self._read_timer, self._write_timer, self._peer_timer):
            if timer is not None:
                timer.cancel()
        self._queue.clear()
        self._body = []
        self._url = []
        self._unparsed = None
        self._writable.set()
        self._write_paused = False
        if self._worker is not None:
            self._worker.cancel()

    def _linger(self, size: int) -> None:
        """Data after a refused request is dropped, up to LINGER_BYTES (then: reset)."""
        if self._lingering and self.transport is not None:
            self._lingered += size
            if self._lingered > LINGER_BYTES:
                self.transport.abort()

    def eof_received(self) -> bool:
        """The client closed its side: replies already written are still sent (close), no
        more are made; a client that was not taking them is gone (reset at once)."""
        transport = self.transport
        if not self._writable.is_set():
            self._abort()
        elif self._lingering and transport is not None:
            transport.close()
        elif transport is not None and not self._closing:
            self._close(transport)  # reset if what was written is not taken in request_timeout
        return True

    def pause_writing(self) -> None:
        self._writable.clear()
        self._write_paused = True
        self._watch_writes(-1)
        self._watch_peer()

    def _watch_peer(self) -> None:
        """While writing is paused, look every PEER_CHECK whether a client that is not read
        went (a reset is seen by the pending write; its FIN is not)."""
        self._peer_timer = None
        if self._writable.is_set() or self._closing:
            return
        if not self._reading and self._peer_gone():
            self._abort()
            return
        self._peer_timer = self.loop.call_later(PEER_CHECK, self._watch_peer)

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
        self._write_paused = False
        if self._peer_timer is not None:
            self._peer_timer.cancel()
            self._peer_timer = None
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def data_received(self, data: bytes) -> None:
        if self._closing or self._refused:
            self._linger(len(data))
            return
        if len(data) <= FEED_SLICE and self._pending < self.limits.max_pipeline:
            # one slice (a request or a few): as _feed, without slicing; whole plain calls in a
            # short one by the quick parser (_feed_quick)
            if len(data) > self._quick_max or self._in_message or self._feed_quick(data) is None:
                self._feed_piece(data)
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

    def _feed_piece(self, piece: memoryview | bytes) -> bool:
        """Parse one slice; False when a request was refused.

        The parser reads some things without a callback: a request line or header not ended,
        the empty lines before a request, a chunk's size line and extensions, a trailer not
        ended.  So a slice in which no request began or ended and that brought no body data
        counts as "stray" bytes, bounded: while in the head by the URL and header limits
        (431), between requests by the URL limit (400), in a body by the header limit plus
        FRAMING_PER_BYTE per byte of body data (400)."""
        self._began = False
        body_before = self._body_size
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            self._refuse(400)
            return False
        except httptools.HttpParserError:
            self._refuse(self._limit_status or 400)
            return False
        if self._arm_due:  # a request began in this slice: reading it is timed from now
            self._arm_due = False
            if self._in_message and self._reading:
                self._arm_read(self.limits.request_timeout)
        if not self._began:
            self._stray += len(piece) - (self._body_size - body_before)
            if self._stray > self._stray_limit():
                self._refuse(431 if self._in_head else 400)
                return False
        return True

    def _feed_quick(self, piece: memoryview | bytes) -> bool | None:
        """Read a short slice (no request being read before it) with the quick parser
        (_QuickReader) and answer its requests, as _feed_piece; None (nothing done) when it
        does not hold only whole plain calls: the full parser then reads it.  What the full
        parser's callbacks would have done is done here: no request is being read after the
        slice, its read timer is off, no stray bytes; a request whose answering fails (which
        on_message_complete would raise through the parser) is refused."""
        reader = self._quick
        if reader is None:
            reader = self._quick = _QuickReader()
        try:
            reader.parser.feed_data(piece)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._quick = None
            return None
        bodies = reader.bodies
        if reader.open or not bodies:
            self._quick = None
            return None
        reader.bodies = []
        self._stray = 0
        grant = self._grant
        try:
            for body in bodies:
                self._read_deadline = None  # _cancel_read_timer(), as on_message_complete
                try:
                    data = parse_body(body)
                except BadRequest:
                    self._enqueue(_Request(400, None, False))
                    continue
                self._enqueue(_Request(0, data, True, None, grant))
        except Exception:  # as an exception out of a parser callback (on_message_complete)
            self._refuse(self._limit_status or 400)
            return False
        return True

    def _stray_limit(self) -> int:
        limits = self.limits
        if self._in_head:
            return limits.max_url_size + limits.max_header_size + HEAD_SLACK
        if self._in_message:
            return limits.max_header_size + HEAD_SLACK + FRAMING_PER_BYTE * self._body_size
        return limits.max_url_size + HEAD_SLACK

    # -- httptools callbacks ----------------------------------------------------------------------

    def _over(self, status: int) -> _Refused:
        self._limit_status = status
        return _Refused(status)

    def on_message_begin(self) -> None:
        self._url = []
        self._url_size = 0
        self._head_size = 0
        self._stray = 0
        self._in_head = True
        self._in_message = True
        self._began = True
        self._body = []
        self._body_size = 0
        self._host = self._proto = None
        # the read timer is armed once the slice is parsed (_feed_piece), if the request is not
        # complete by then: most come whole in one read, and arming costs a clock read
        self._arm_due = self._reading

    def on_url(self, url: bytes) -> None:
        self._url_size += len(url)
        if self._url_size > self.limits.max_url_size:
            raise self._over(414)
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name)
        self._head_size += size + len(value) + 4
        if self._head_size > self.limits.max_header_size:  # headers, then trailers too
            raise self._over(431)
        if size not in _WATCHED_SIZES:  # most headers: one set lookup
            return
        lowered = name.lower()
        if lowered == b"content-length":
            try:
                too_large = int(value) > self.limits.max_body_size
            except ValueError:
                too_large = False  # the parser refuses it
            if too_large:
                raise self._over(413)
        elif lowered == b"host":
            self._host = value
        elif lowered == b"x-forwarded-proto":
            self._proto = value

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
        self._began = True  # the rest of this slice is not counted as stray
        self._stray = 0
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        self._read_deadline = None  # _cancel_read_timer()
        if not keep_alive:
            # the parser refuses whatever comes after (the quick one, made anew, would not)
            self._quick_max = -1
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
        if isinstance(data, list) and data:
            self._enqueue(_Request(0, data, keep_alive, grant=self._grant, weight=len(data),
                                   http10=self.parser.get_http_version() == "1.0"))
            return
        self._enqueue(_Request(0, data, keep_alive, None, self._grant))

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
        """Time out reading in ``seconds``.  Lazily: a timer already due no later stays and, when
        it fires, waits on for the rest (a keep-alive client re-arms twice per request; making
        and cancelling two timers each time cost more than the rest of the HTTP handling)."""
        deadline = self.loop.time() + seconds
        self._read_deadline = deadline
        timer = self._read_timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self._read_timer = self.loop.call_at(deadline, self._read_due)

    def _read_due(self) -> None:
        self._read_timer = None
        deadline = self._read_deadline
        if deadline is None:
            return  # cancelled meanwhile
        if self.loop.time() < deadline:  # re-armed for later meanwhile
            self._read_timer = self.loop.call_at(deadline, self._read_due)
            return
        self._read_deadline = None
        self._read_timeout()

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
        self._read_deadline = None  # the timer, if any, fires and finds nothing to do

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
        if self._worker is None and not self._inline and not self._closing:
            if len(self._queue) == 1 and self._start_inline(request):
                return
            self._worker = self.loop.create_task(self._work())

    def _start_inline(self, request: _Request) -> bool:
        """Answer a plain call with nothing ahead of it without a task (AccessHttp.call_inline:
        the engine runs it now, the reply is written once it is durable); False when it is
        not such a call, for the worker task to answer."""
        transport = self.transport
        if (request.status or request.page is not None or not self._reading
                or self._write_paused or transport is None or transport.is_closing()):
            return False
        self._inline = True
        try:
            answer = self.app.call_inline(request.data, request.grant, self._inline_answered,
                                          self.loop)
        except Exception:  # as _answer: never out through the parser (it would say 400)
            log.exception("request failed")
            self._inline = False
            self._respond(500, b"", close=True)
            return True
        if answer is False:
            self._inline = False
            return False
        if answer is not None:
            self._inline_answered(*answer)
        return True

    def _inline_answered(self, status: int, body: bytes) -> None:
        """The reply to the call made inline: send it, then go on as the worker would."""
        self._inline = False
        if self._closing or not self._queue:
            return  # the connection went meanwhile
        request = self._queue.popleft()
        self._pending -= request.weight
        self._respond(status, body, close=not request.keep_alive)
        if self._closing:
            return
        if not self._reading and self._pending < self.limits.max_pipeline:
            self._resume_reading()  # may start the next call inline
        if self._inline or self._worker is not None or self._closing:
            return
        if self._queue:
            self._worker = self.loop.create_task(self._work())
        elif self._reading and not self._in_message:
            self._arm_read(self.limits.keep_alive)

    async def _work(self) -> None:
        try:
            while self._queue and not self._closing:
                if not self._writable.is_set():
                    await self._writable.wait()
                    continue
                if self._peer_gone():  # no work for a client that went
                    if not self._reading:
                        self._abort()  # its end was not read: nothing more will go out
                    return
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
        content_type = _JSON
        reply: Body
        try:
            if request.page is not None:
                status, reply, content_type = await pages.resolve(request.page)
            elif isinstance(request.data, list):
                return await self._answer_batch(request)
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

    async def _answer_batch(self, request: _Request) -> bool:
        """A batch: its replies held up to STREAM_AFTER bytes and answered as one body; past
        that sent as they come, a chunk of calls at a time, each only once the transport is
        below its high-water mark (the write watchdog closes a client that takes nothing)."""
        held: list[bytes] = []
        held_size = 0
        streaming = False
        replies = self.app.dispatch_batch(request.data, request.grant)
        while True:
            try:
                parts = await anext(replies)
            except StopAsyncIteration:
                break
            except Exception:
                if not streaming:
                    raise  # answered 400 / 500 by _answer
                log.exception("request failed")
                self._abort()  # a head was sent: nothing else can tell the client
                return False
            held += parts
            held_size += sum(map(len, parts))
            if held_size >= STREAM_AFTER:
                if not streaming:
                    streaming = True
                    self._start_stream(request)
                self._send_part(request, held)
                held, held_size = [], 0
            if not await self._ready_for_more():
                self._abort()
                return False
        held.append(b"]")
        if not streaming:
            self._respond(200, held, close=not request.keep_alive)
            return request.keep_alive
        self._send_part(request, held)
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if request.http10:
            self._close(transport)
            return False
        transport.write(b"0\r\n\r\n")
        if not request.keep_alive:
            self._close(transport)
        return request.keep_alive

    def _start_stream(self, request: _Request) -> None:
        """The head of a batch reply sent as it comes: chunked (HTTP/1.0: closed at the end)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        head = _date.head(200) + b"Content-Type: application/json\r\n"
        if request.http10:
            head += b"Connection: close\r\n"
        else:
            head += b"Transfer-Encoding: chunked\r\n"
            if not request.keep_alive:
                head += b"Connection: close\r\n"
        transport.write(head + b"\r\n")

    def _send_part(self, request: _Request, parts: list[bytes]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if request.http10:
            transport.writelines(parts)
        else:
            transport.writelines([b"%x\r\n" % sum(map(len, parts)), *parts, b"\r\n"])

    async def _ready_for_more(self) -> bool:
        """Wait until the transport is below its high-water mark; False when the client is
        gone (closed while it was not read, or the connection was lost)."""
        while not self._writable.is_set():
            await self._writable.wait()
        return not (self._closing or self._peer_gone())

    def _peer_gone(self) -> bool:
        """The connection is closing or, while the socket is not read (the pipeline is full)
        and so its end is not seen, the client shut its side or reset it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return True
        if self._reading:
            return False  # eof_received / connection_lost tell
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        try:
            poller.register(sock.fileno(), select.POLLRDHUP)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def _respond(self, status: int, body: Body, close: bool,
                 content_type: bytes = _JSON) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if type(body) is bytes and body and not close and content_type is _JSON:
            # a keep-alive JSON reply (every order placed): one format, one write
            transport.write(_JSON_REPLY % (_date.head(status), len(body), body))
            return
        size = len(body) if isinstance(body, bytes) else sum(map(len, body))
        head = _date.head(status) + b"Content-Length: %d\r\n" % size
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

    _reads_quick = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._grant = _NO_GRANT

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)  # sizes: every header counts
        if len(name) == 13 and name.lower() == b"authorization":
            self._grant = self.app.grant(value)
