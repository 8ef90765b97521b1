"""The WebSocket API's methods (websocket.md 2-5): checking params, answering, subscribing.

Why apart from the server: a method needs the backends (through the :class:`Forwarder`), the
query cache, the feeds and the auth client, never the listener, the connection set or the read
loop; the server only needs the table.  Each handler gets ``(conn, req_id, params)`` and either
answers at once (returns None) or returns an awaitable that answers later (the server runs it as
a task, counted against the connection's ``max_pending``).  Bad params raise :class:`RpcError`,
which the server turns into the error reply.

Checks come in the original's order: a forwarded user method checks its backend before the
authentication (error 2 before error 6), except ``asset.query``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from exchange_server.accessws.auth import AuthClient
from exchange_server.accessws.cache import QueryCache, cache_key
from exchange_server.accessws.config import AccessWsConfig
from exchange_server.accessws.forward import Forwarder
from exchange_server.accessws.market import ListFeed, MarketFeeds
from exchange_server.accessws.protocol import SUCCESS, byte_len, error_body, result_body
from exchange_server.accessws.session import Connection
from exchange_server.accessws.user import UserFeeds
from exchange_server.common.backend import Backend
from exchange_server.common.errors import RpcError, invalid_argument, require_authentication
from exchange_server.common.methods import MARKETPRICE, MATCHENGINE, READHISTORY

Handler = Callable[[Connection, int, list[Any]], Awaitable[None] | None]

#: The original's MARKET_NAME_MAX_LEN / ASSET_NAME_MAX_LEN / INTERVAL_MAX_LEN / SOURCE_MAX_LEN:
#: names must be shorter (in bytes).
NAME_MAX = 16
INTERVAL_MAX = 16
SOURCE_MAX = 32


def name_param(value: Any, max_len: int = NAME_MAX) -> str:
    """A market, asset or interval name: a string shorter than ``max_len`` bytes."""
    if type(value) is not str or byte_len(value) >= max_len:
        raise invalid_argument()
    return value


def user_of(conn: Connection) -> int:
    """The authenticated user, or error 6."""
    if not conn.user_id:
        raise require_authentication()
    return conn.user_id


class Handlers:
    """The method table (``table``: method -> handler) and the handlers behind it."""

    def __init__(self, config: AccessWsConfig, forwarder: Forwarder, cache: QueryCache,
                 market: MarketFeeds, users: UserFeeds, auth: AuthClient,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.forwarder = forwarder
        self.cache = cache
        self.market = market
        self.users = users
        self.auth = auth
        self.clock = clock
        self.table: dict[str, Handler] = self._table()

    def _table(self) -> dict[str, Handler]:
        market = self.market
        return {
            "server.ping": self.server_ping,
            "server.time": self.server_time,
            "server.auth": self.server_auth,
            "server.sign": self.server_sign,
            "kline.query": self._cached_query(MARKETPRICE, "market.kline"),
            "kline.subscribe": self.kline_subscribe,
            "kline.unsubscribe": self.kline_unsubscribe,
            "depth.query": self._cached_query(MATCHENGINE, "order.depth"),
            "depth.subscribe": self.depth_subscribe,
            "depth.unsubscribe": self.depth_unsubscribe,
            "price.query": self._cached_query(MARKETPRICE, "market.last"),
            "price.subscribe": self._list_subscribe(market.price),
            "price.unsubscribe": self._list_unsubscribe(market.price),
            "state.query": self._cached_query(MARKETPRICE, "market.status"),
            "state.subscribe": self._list_subscribe(market.state),
            "state.unsubscribe": self._list_unsubscribe(market.state),
            "today.query": self._cached_query(MARKETPRICE, "market.status_today"),
            "today.subscribe": self._list_subscribe(market.today),
            "today.unsubscribe": self._list_unsubscribe(market.today),
            "deals.query": self._cached_query(MARKETPRICE, "market.deals"),
            "deals.subscribe": self._list_subscribe(market.deals),
            "deals.unsubscribe": self._list_unsubscribe(market.deals),
            "order.query": self.order_query,
            "order.query_stop": self.order_query_stop,
            "order.history": self.order_history,
            "order.subscribe": self.order_subscribe,
            "order.unsubscribe": self.order_unsubscribe,
            "asset.query": self.asset_query,
            "asset.history": self.asset_history,
            "asset.subscribe": self.asset_subscribe,
            "asset.unsubscribe": self.asset_unsubscribe,
        }

    # -- forwarding -------------------------------------------------------------------------------

    async def _forward(self, conn: Connection, req_id: int, backend: Backend, method: str,
                       params: list[Any], key: bytes | None = None) -> None:
        """Relay the backend's reply; keep its result under ``key`` when given."""
        try:
            body = await self.forwarder.call(backend, method, params, req_id)
        except RpcError as e:
            conn.send(error_body(e.code, e.message, req_id))
            return
        conn.send(body)
        if key is not None:
            self.cache.put_reply(key, body)

    def _cached_query(self, backend_name: str, method: str) -> Handler:
        prefix = method.encode() + b"-"

        def handler(conn: Connection, req_id: int, params: list[Any]) -> Awaitable[None] | None:
            backend = self.forwarder.backend(backend_name)
            key = cache_key(prefix, params)
            hit, result = self.cache.get(key)
            if hit:
                conn.send(result_body(result, req_id))
                return None
            return self._forward(conn, req_id, backend, method, params, key)

        return handler

    # -- server.* ---------------------------------------------------------------------------------

    def server_ping(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        conn.send(result_body("pong", req_id))

    def server_time(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        conn.send(result_body(int(self.clock()), req_id))

    def server_auth(self, conn: Connection, req_id: int,
                    params: list[Any]) -> Awaitable[None] | None:
        if len(params) != 2:
            raise invalid_argument()
        token, source = params
        if type(token) is not str or type(source) is not str or byte_len(source) >= SOURCE_MAX:
            raise invalid_argument()
        return self._authenticate(conn, req_id, self.auth.auth(token), source)

    def server_sign(self, conn: Connection, req_id: int,
                    params: list[Any]) -> Awaitable[None] | None:
        if len(params) != 3:
            raise invalid_argument()
        access_id, authorisation, tonce = params
        if (type(access_id) is not str or type(authorisation) is not str
                or type(tonce) is not int or tonce == 0):
            raise invalid_argument()
        return self._authenticate(conn, req_id, self.auth.sign(access_id, authorisation, tonce),
                                  "api")

    async def _authenticate(self, conn: Connection, req_id: int, ask: Awaitable[int],
                            source: str) -> None:
        try:
            user_id = await ask
        except RpcError as e:
            conn.send(error_body(e.code, e.message, req_id))
            return
        if conn.closed:
            return
        if conn.user_id and conn.user_id != user_id:
            self.users.clear(conn)  # the previous user's order and asset subscriptions
        conn.user_id = user_id
        conn.source = source
        conn.send(result_body(SUCCESS, req_id))

    # -- market data ------------------------------------------------------------------------------

    def kline_subscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        if len(params) != 2:
            raise invalid_argument()
        market = name_param(params[0])
        interval = params[1]
        if type(interval) is not int or interval <= 0:
            raise invalid_argument()
        self.market.kline.set(conn, (market, interval))
        conn.send(result_body(SUCCESS, req_id))

    def kline_unsubscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        self.market.kline.clear(conn)
        conn.send(result_body(SUCCESS, req_id))

    def depth_subscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        if len(params) != 3:
            raise invalid_argument()
        market = name_param(params[0])
        limit = params[1]
        interval = name_param(params[2], INTERVAL_MAX)
        if type(limit) is not int or limit <= 0:
            raise invalid_argument()
        depth = self.market.depth
        depth.clear(conn)
        if limit not in self.config.depth_limit or not self.config.allowed_merge(interval):
            raise invalid_argument()
        key = (market, limit, interval)
        depth.set(conn, key)
        conn.send(result_body(SUCCESS, req_id))
        depth.send_clean(conn, key)

    def depth_unsubscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        self.market.depth.clear(conn)
        conn.send(result_body(SUCCESS, req_id))

    def _list_subscribe(self, feed: ListFeed) -> Handler:
        def handler(conn: Connection, req_id: int, params: list[Any]) -> None:
            if len(params) > self.config.max_subscribe_list:
                raise invalid_argument()
            feed.clear(conn)
            for market in params:
                feed.append(conn, name_param(market))
            conn.send(result_body(SUCCESS, req_id))
            for market in params:
                feed.send_last(conn, market)

        return handler

    def _list_unsubscribe(self, feed: ListFeed) -> Handler:
        def handler(conn: Connection, req_id: int, params: list[Any]) -> None:
            feed.clear(conn)
            conn.send(result_body(SUCCESS, req_id))

        return handler

    # -- user data --------------------------------------------------------------------------------

    def order_query(self, conn: Connection, req_id: int,
                    params: list[Any]) -> Awaitable[None] | None:
        backend = self.forwarder.backend(MATCHENGINE)
        user = user_of(conn)
        if len(params) != 3:
            raise invalid_argument()
        market, offset, limit = params
        if type(market) is not str or type(offset) is not int or type(limit) is not int:
            raise invalid_argument()
        return self._forward(conn, req_id, backend, "order.pending", [user, market, offset, limit])

    def order_query_stop(self, conn: Connection, req_id: int,
                         params: list[Any]) -> Awaitable[None] | None:
        """The CoinEx fork's ``[market (null = all), side (0 = both), offset, limit]`` ->
        order.pending_stop ``[user_id, market, side, offset, limit]``."""
        backend = self.forwarder.backend(MATCHENGINE)
        user = user_of(conn)
        if len(params) != 4:
            raise invalid_argument()
        market, side, offset, limit = params
        if (market is not None and type(market) is not str) or type(side) is not int or \
                type(offset) is not int or type(limit) is not int:
            raise invalid_argument()
        return self._forward(conn, req_id, backend, "order.pending_stop",
                             [user, market, side, offset, limit])

    def order_history(self, conn: Connection, req_id: int,
                      params: list[Any]) -> Awaitable[None] | None:
        backend = self.forwarder.backend(READHISTORY)
        user = user_of(conn)
        if len(params) != 6:
            raise invalid_argument()
        return self._forward(conn, req_id, backend, "order.finished", [user, *params])

    def order_subscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        user_of(conn)
        if len(params) > self.config.max_subscribe_list:
            raise invalid_argument()
        markets: set[str] = set()
        try:
            for value in params:
                markets.add(name_param(value))
        finally:  # elements before a bad one stay subscribed, as in the original
            self.users.set_orders(conn, markets)
        conn.send(result_body(SUCCESS, req_id))

    def order_unsubscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        user_of(conn)
        self.users.set_orders(conn, None)
        conn.send(result_body(SUCCESS, req_id))

    def asset_query(self, conn: Connection, req_id: int,
                    params: list[Any]) -> Awaitable[None] | None:
        user = user_of(conn)
        backend = self.forwarder.backend(MATCHENGINE)
        return self._forward(conn, req_id, backend, "balance.query", [user, *params])

    def asset_history(self, conn: Connection, req_id: int,
                      params: list[Any]) -> Awaitable[None] | None:
        backend = self.forwarder.backend(READHISTORY)
        user = user_of(conn)
        if len(params) != 6:
            raise invalid_argument()
        return self._forward(conn, req_id, backend, "balance.history", [user, *params])

    def asset_subscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        user_of(conn)
        if len(params) > self.config.max_subscribe_list:
            raise invalid_argument()
        assets: dict[str, None] = {}
        try:
            for value in params:
                assets[name_param(value)] = None
        finally:
            self.users.set_assets(conn, assets)
        conn.send(result_body(SUCCESS, req_id))

    def asset_unsubscribe(self, conn: Connection, req_id: int, params: list[Any]) -> None:
        user_of(conn)
        self.users.set_assets(conn, None)
        conn.send(result_body(SUCCESS, req_id))
