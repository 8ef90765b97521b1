"""Python clients of exchange-server's APIs.

* :class:`HttpClient` / :class:`AsyncHttpClient`: JSON-RPC over HTTP, one typed method per API
  method (``order_put_limit``, ``market_kline``...) plus ``call(method, *params)`` and
  ``batch``;
* :class:`WsClient` (async) / :class:`SyncWsClient` (blocking): the WebSocket API with
  subscriptions that survive reconnects;
* errors: :class:`ApiError` subclasses per code family, :class:`TransportError` when no
  answer came.

Decimal params are sent as strings; decimal strings in results come back as Decimal wherever
the API registry (exchange_server.api) documents a decimal.
"""

from typing import TYPE_CHECKING, Any

from exchange_server.client.errors import (
    ApiError,
    AuthenticationRequired,
    BusinessError,
    ClientError,
    InternalError,
    InvalidArgument,
    MethodNotFound,
    ServiceTimeout,
    ServiceUnavailable,
    TransportError,
)

if TYPE_CHECKING:
    from exchange_server.client.http_client import AsyncHttpClient, HttpClient
    from exchange_server.client.ws_client import Subscription, WsClient
    from exchange_server.client.ws_sync import SyncSubscription, SyncWsClient

#: The clients, imported on first use: ``exchange-server`` builds its ``call`` sub-command from
#: this package, and every ``exchange-server run`` would otherwise load them (aiohttp's client
#: side, the typed methods) before its first order.
_LAZY = {"AsyncHttpClient": "http_client", "HttpClient": "http_client",
         "Subscription": "ws_client", "WsClient": "ws_client",
         "SyncSubscription": "ws_sync", "SyncWsClient": "ws_sync"}

__all__ = [
    "ApiError",
    "AsyncHttpClient",
    "AuthenticationRequired",
    "BusinessError",
    "ClientError",
    "HttpClient",
    "InternalError",
    "InvalidArgument",
    "MethodNotFound",
    "ServiceTimeout",
    "ServiceUnavailable",
    "Subscription",
    "SyncSubscription",
    "SyncWsClient",
    "TransportError",
    "WsClient",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
