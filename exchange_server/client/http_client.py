"""JSON-RPC over HTTP clients: :class:`HttpClient` (blocking) and :class:`AsyncHttpClient`.

::

    from decimal import Decimal
    from exchange_server.client import HttpClient, BusinessError

    with HttpClient("http://127.0.0.1:8080/") as api:
        api.balance_update(1, "BTC", "deposit", 1, Decimal("10"), {})
        order = api.order_put_limit(1, "BTCBCH", 1, Decimal("1"), Decimal("100"),
                                    Decimal("0.002"), Decimal("0.001"), "api")
        order["left"]            # Decimal('1')
        api.call("order.depth", "BTCBCH", 10, "0")   # any method, typed or not

Decimal params are sent as strings; decimal strings in results come back as Decimal wherever
the registry's result schema says so (``decode=False`` keeps the raw JSON).  Errors raise
:mod:`exchange_server.client.errors` exceptions.  The typed methods
(:mod:`exchange_server.client.methods`, generated from the registry) call :meth:`call`.
"""

from __future__ import annotations

import http.client
import itertools
import socket
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from exchange_server.client import codec, schemas
from exchange_server.client.errors import ApiError, TransportError, error_for
from exchange_server.client.methods import AsyncHttpMethods, HttpMethods

DEFAULT_URL = "http://127.0.0.1:8080/"


def _headers(admin_token: str | None) -> dict[str, str]:
    """Request headers; ``admin_token`` unlocks accesshttp's admin methods (config.*)."""
    headers = {"Content-Type": "application/json"}
    if admin_token:
        headers["Authorization"] = f"Bearer {admin_token}"
    return headers


def _reply(method: str, status: int, body: bytes, decode: bool) -> Any:
    if not body:
        raise TransportError(f"{method}: HTTP {status} without a body", status)
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise TransportError(f"{method}: HTTP {status}: not JSON: {body[:200]!r}", status) \
            from None
    return _result(method, reply, decode)


def _result(method: str, reply: Any, decode: bool) -> Any:
    if not isinstance(reply, dict):
        raise TransportError(f"{method}: unexpected reply {reply!r:.200}")
    error = reply.get("error")
    if error is not None:
        raise error_for(error, method)
    result = reply.get("result")
    return codec.decode(schemas.http_result(method), result) if decode else result


class _Batch:
    """Shared batch handling: replies in order; failures as exception objects."""

    @staticmethod
    def results(calls: list[tuple[str, list[Any]]], status: int, body: bytes,
                decode: bool) -> list[Any]:
        if status != 200 or not body:
            raise TransportError(f"batch: HTTP {status}", status)
        replies = orjson.loads(body)
        if not isinstance(replies, list) or len(replies) != len(calls):
            raise TransportError(f"batch: unexpected reply {body[:200]!r}")
        out: list[Any] = []
        for (method, _), reply in zip(calls, replies, strict=True):
            try:
                out.append(_result(method, reply, decode))
            except ApiError as e:
                out.append(e)
        return out


class HttpClient(HttpMethods):
    """Blocking client on one keep-alive connection (not thread-safe: one per thread)."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 10.0, decode: bool = True,
                 admin_token: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url}: expected an http:// or https:// URL")
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.https = parts.scheme == "https"
        self.path = parts.path or "/"
        self.timeout = timeout
        self.decode = decode
        self.headers = _headers(admin_token)
        self._ids = itertools.count(1)
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        if self._conn is not None:
            return self._conn, True
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        self._conn = cls(self.host, self.port, timeout=self.timeout)
        return self._conn, False

    def _post(self, body: bytes, retry: bool) -> tuple[int, bytes]:
        while True:
            conn, reused = self._connection()
            try:
                conn.request("POST", self.path, body=body, headers=self.headers)
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                # a kept-alive connection the server had closed: try once more on a new one
                # (never for writes, which might have been applied)
                if reused and retry:
                    retry = False
                    continue
                raise TransportError(f"connection to {self.url} failed: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if isinstance(e, socket.timeout):
                    raise TransportError(f"no answer from {self.url} in {self.timeout}s") from e
                raise TransportError(f"connection to {self.url} failed: {e}") from e

    def call(self, method: str, *params: Any) -> Any:
        """Call any method with positional params; the result or an exception."""
        req_id = next(self._ids)
        status, body = self._post(codec.encode_request(method, params, req_id),
                                  retry=not schemas.is_write(method))
        return _reply(method, status, body, self.decode)

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several calls in one request (extension); each item is a result or an ApiError."""
        body = codec.encode([{"method": m, "params": list(p), "id": i}
                             for i, (m, p) in enumerate(calls, 1)])
        status, data = self._post(body, retry=False)
        return _Batch.results(calls, status, data, self.decode)


class AsyncHttpClient(AsyncHttpMethods):
    """asyncio client (aiohttp); use ``async with`` or call :meth:`close`."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 10.0, decode: bool = True,
                 session: aiohttp.ClientSession | None = None,
                 admin_token: str | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.decode = decode
        self.headers = _headers(admin_token)
        self._ids = itertools.count(1)
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> AsyncHttpClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._own_session = True
        return self._session

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        try:
            async with self._get_session().post(
                    self.url, data=body, headers=self.headers) as resp:
                return resp.status, await resp.read()
        except TimeoutError as e:
            raise TransportError(f"no answer from {self.url} in {self.timeout}s") from e
        except aiohttp.ClientError as e:
            raise TransportError(f"connection to {self.url} failed: {e}") from e

    async def call(self, method: str, *params: Any) -> Any:
        req_id = next(self._ids)
        status, body = await self._post(codec.encode_request(method, params, req_id))
        return _reply(method, status, body, self.decode)

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        body = codec.encode([{"method": m, "params": list(p), "id": i}
                             for i, (m, p) in enumerate(calls, 1)])
        status, data = await self._post(body)
        return _Batch.results(calls, status, data, self.decode)
