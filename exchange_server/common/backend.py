"""What a gateway (accesshttp, accessws) needs from a backend service.

In embedded mode the service object itself is the backend; in production it is an RPC client
connected to the service's process.  Either way a call returns the reply body bytes that the
service produced, so gateways can pass them through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

#: ``call`` without a task (MatchEngineService.call_nowait): the reply body now, or None and
#: the callback gets it once it may be sent.
NowaitCall = Callable[[str, list[Any], int | None, Callable[[bytes], None]], bytes | None]


class Backend(Protocol):
    def connected(self) -> bool:
        """False while the service cannot be reached (the gateway answers without calling)."""
        ...

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        """The service's reply body: ``{"error": ..., "result": ..., "id": req_id}``."""
        ...


class LocalBackend:
    """A service running in this process."""

    def __init__(self, service: Any) -> None:
        self.service = service
        #: set when the service can answer without a task (the gateway's hot path)
        self.call_nowait: NowaitCall | None = getattr(service, "call_nowait", None)

    def connected(self) -> bool:
        return True

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        body: bytes = await self.service.call(method, params, req_id)
        return body
