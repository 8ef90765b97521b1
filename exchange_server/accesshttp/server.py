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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import httptools

from exchange_server.accesshttp import pages
from exchange_server.accesshttp.routes import ROUTES
from exchange_server.accesshttp.trust import Grant, TrustPolicy
from exchange_server.common import exactjson, jsonfmt, metrics
from exchange_server.common.backend import Backend
from exchange_server.common.errors import (
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
    500: b"Internal Server Error",
    504: b"Gateway Timeout",
}

#: Most requests one batch may carry.
BATCH_MAX = 1000

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
                 max_body: int = 102400, admin_token: str | None = None,
                 api_token: str | None = None, public_only: bool = False) -> None:
        self.backends = backends
        #: which methods each request may call (trust.py)
        self.trust = TrustPolicy.of(admin_token, api_token, public_only)
        self.timeout = timeout
        self.max_body = max_body
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
        self.requests += 1
        try:
            # exact: integers beyond 64 bits stay integers (they reach the log and history)
            data = exactjson.loads(body, lenient_depth=True)
        except ValueError:
            raise BadRequest from None
        if isinstance(data, list):
            return await self._batch(data, grant)
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
            return 404, jsonfmt.error_body(METHOD_NOT_FOUND, "method not found", req_id)
        if not self.trust.allows(method, grant):
            return 403, jsonfmt.error_body(REQUIRE_AUTH, "require authentication", req_id)
        backend = self.backends.get(route[0])
        if backend is None or not backend.connected():
            return 500, b""
        try:
            reply = await asyncio.wait_for(backend.call(method, params, req_id), self.timeout)
        except TimeoutError:
            return 504, jsonfmt.error_body(SERVICE_TIMEOUT, "service timeout", req_id)
        except ConnectionError:
            return 500, b""
        return 200, reply

    async def _batch(self, items: list[Any], grant: Grant = Grant.NONE) -> tuple[int, bytes]:
        if not items or len(items) > BATCH_MAX:
            raise BadRequest
        requests = [parse_request(item) for item in items]
        replies = await asyncio.gather(*(self._call(m, p, i, grant) for m, p, i in requests))
        bodies = []
        for (status, body), (_, _, req_id) in zip(replies, requests, strict=True):
            if status == 500:
                body = jsonfmt.error_body(SERVICE_UNAVAILABLE, "service unavailable", req_id)
            bodies.append(body)
        return 200, b"[" + b", ".join(bodies) + b"]"

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        """Listen on one more address (``reuse_port``: several processes share the port)."""
        loop = asyncio.get_running_loop()
        protocol = AdminHttpProtocol if self.trust.reads_headers else HttpProtocol
        server = await loop.create_server(lambda: protocol(self), host, port,
                                          reuse_address=True, reuse_port=reuse_port or None,
                                          backlog=1024)
        self._servers.append(server)

    @property
    def port(self) -> int:
        return int(self._servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()


class HttpProtocol(asyncio.Protocol):
    """One client connection.  Requests are answered in order (pipelining allowed)."""

    #: what the request being read may call (only AdminHttpProtocol reads headers)
    _grant = Grant.NONE

    def __init__(self, app: AccessHttp) -> None:
        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._url = b""
        self._size = 0
        self._too_large = False
        #: the request's Host and X-Forwarded-Proto headers (pages.py: the OpenRPC servers)
        self._host: bytes | None = None
        self._proto: bytes | None = None
        #: complete requests not answered yet: (status to answer without dispatching or 0,
        #: body, keep-alive, the answer to a GET (pages.py) or None, what its ``Authorization``
        #: unlocks)
        self._queue: deque[tuple[int, bytes, bool, pages.Answer | None, Grant]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._respond(400, b"", close=True)
        except httptools.HttpParserError:
            self._respond(400, b"", close=True)

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._body = []
        self._url = b""
        self._size = 0
        self._too_large = False
        self._host = self._proto = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 4 and name.lower() == b"host":
            self._host = value
        elif len(name) == 17 and name.lower() == b"x-forwarded-proto":
            self._proto = value

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.app.max_body:
            self._too_large = True
            self._body = []
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        keep_alive = self.parser.should_keep_alive()
        if not self._too_large and not body and self.parser.get_method() == b"GET":
            # GET /, /openrpc.json, the market pages and their assets (pages.py); other GETs,
            # and any GET with a body (a request sent the wrong way): the original's 400
            page = pages.handle_get(self._url, self.app, self._host, self._proto)
            if page is not None:
                self._enqueue(0, b"", keep_alive, page)
                return
        if self._too_large:
            status = 413
        elif self.parser.get_method() != b"POST" or not body:
            status = 400
        else:
            status = 0
        self._enqueue(status, body, keep_alive)

    # -- answering --------------------------------------------------------------------------------

    def _enqueue(self, status: int, body: bytes, keep_alive: bool,
                 page: pages.Answer | None = None) -> None:
        self._queue.append((status, body, keep_alive, page, self._grant))
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._queue and not self._closing:
                status, body, keep_alive, page, grant = self._queue.popleft()
                if status:
                    self._respond(status, b"", close=True)
                    return
                content_type = b"application/json"
                try:
                    if page is not None:
                        status, reply, content_type = await pages.resolve(page)
                    else:
                        status, reply = await self.app.dispatch(body, grant)
                except BadRequest:
                    self._respond(400, b"", close=True)
                    return
                except Exception:
                    log.exception("request failed")
                    self._respond(500, b"", close=True)
                    return
                self._respond(status, reply, close=not keep_alive, content_type=content_type)
        finally:
            self._worker = None

    def _respond(self, status: int, body: bytes, close: bool,
                 content_type: bytes = b"application/json") -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %d\r\n" % (
            status, REASONS[status], _date.get(), len(body))
        if body:
            head += b"Content-Type: %s\r\n" % content_type
        if close:
            head += b"Connection: close\r\n"
        transport.write(head + b"\r\n" + body)
        if close:
            self._closing = True
            self._queue.clear()
            transport.close()


class AdminHttpProtocol(HttpProtocol):
    """A connection to a gateway with a token: also reads ``Authorization``."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._grant = Grant.NONE

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 13 and name.lower() == b"authorization":
            self._grant = self.app.grant(value)
        else:
            super().on_header(name, value)
