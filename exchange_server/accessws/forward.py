"""The one way accessws talks to its backends: look up, check, time out, call, parse, log.

Why: forwarded requests, the market-data feeds and the balance pushes all ask a backend the same
way, and each used to spell the sequence out with the whole server at hand.  A
:class:`Forwarder` holds only what that needs (the backends by service name and
``backend_timeout``), so the feeds depend on it instead of on the server, and a change to the
sequence (a log line, the timeout's error) is made once.

Two flavours over the same call:

* :meth:`Forwarder.call` for a client's request: the reply body is relayed as it is (the client
  gets the backend's own answer, error or not); a timeout raises error 5 "service timeout", any
  other failure error 2 "internal error" (fresh :class:`RpcError` instances);
* :meth:`Forwarder.ask` for accessws' own queries (feeds, balance pushes): ``(error, result)`` of
  the parsed reply, or None when the backend is missing, not connected, slow or broken (the
  caller just tries again later).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from exchange_server.accessws.protocol import parse_reply
from exchange_server.common.backend import Backend
from exchange_server.common.errors import RpcError, internal_error, service_timeout

log = logging.getLogger("exchange_server.accessws.forward")

Reply = tuple[Any, Any]


class Forwarder:
    """The backends by service name ("matchengine", "marketprice", "readhistory") and the time
    one call may take.  ``backends`` is shared, not copied: a backend added or removed later is
    seen at once."""

    def __init__(self, backends: dict[str, Backend], timeout: float) -> None:
        self.backends = backends
        self.timeout = timeout

    def available(self, name: str) -> Backend | None:
        """The backend if it is configured and connected."""
        backend = self.backends.get(name)
        if backend is None or not backend.connected():
            return None
        return backend

    def backend(self, name: str) -> Backend:
        """The backend, or error 2 when it is missing or not connected."""
        backend = self.available(name)
        if backend is None:
            raise internal_error()
        return backend

    async def call(self, backend: Backend, method: str, params: list[Any],
                   req_id: int | None = None) -> bytes:
        """The reply body; error 5 on timeout, error 2 on any other failure (both logged)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await backend.call(method, params, req_id)
        except TimeoutError:
            log.error("%s %r timed out", method, params[:10])
            raise service_timeout() from None
        except Exception as e:
            log.error("%s %r failed: %s", method, params[:10], e)
            raise internal_error() from e

    async def ask(self, name: str, method: str, params: list[Any]) -> Reply | None:
        """``(error, result)`` of the reply, or None if there is none to use (logged)."""
        backend = self.available(name)
        if backend is None:
            return None
        try:
            body = await self.call(backend, method, params)
        except RpcError:
            return None
        try:
            return parse_reply(body)
        except ValueError as e:
            log.error("%s %r: bad reply: %s", method, params[:10], e)
            return None
