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
from exchange_server.client.http_client import AsyncHttpClient, HttpClient
from exchange_server.client.ws_client import Subscription, WsClient
from exchange_server.client.ws_sync import SyncSubscription, SyncWsClient

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
