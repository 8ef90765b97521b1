"""A blocking WebSocket client: :class:`WsClient` on an event loop in a background thread.

For scripts and tests that are not async.  Everything :class:`WsClient` does (reconnects,
re-auth, resubscription) keeps working; calls block until answered.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from exchange_server.client.ws_client import DEFAULT_WS_URL, Subscription, WsClient

T = TypeVar("T")


class SyncSubscription:
    """The pushes of one kind, taken one at a time with :meth:`get`."""

    def __init__(self, client: SyncWsClient, subscription: Subscription) -> None:
        self._client = client
        self.subscription = subscription

    @property
    def kind(self) -> str:
        return self.subscription.kind

    def get(self, timeout: float | None = None) -> list[Any]:
        """The next push's params (TimeoutError after ``timeout`` s)."""
        return self._client._run(self.subscription.get(timeout))


class SyncWsClient:
    def __init__(self, url: str = DEFAULT_WS_URL, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ws-client",
                                        daemon=True)
        self._thread.start()
        self.client: WsClient = self._run(self._make(url, options))

    @staticmethod
    async def _make(url: str, options: dict[str, Any]) -> WsClient:
        return WsClient(url, **options)  # created on the loop it will run on

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncWsClient:
        self.connect()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        self._run(self.client.connect())

    def close(self) -> None:
        try:
            self._run(self.client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def call(self, method: str, *params: Any) -> Any:
        return self._run(self.client.call(method, *params))

    def auth(self, token: str, source: str = "client") -> None:
        self._run(self.client.auth(token, source))

    def subscribe(self, kind: str, *params: Any) -> SyncSubscription:
        return SyncSubscription(self, self._run(self.client.subscribe(kind, *params)))

    def unsubscribe(self, kind: str) -> None:
        self._run(self.client.unsubscribe(kind))
