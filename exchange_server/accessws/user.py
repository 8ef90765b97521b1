"""User pushes from the bus: ``order.update`` and ``asset.update`` (websocket.md 6).

Both topics are read from their end (only what happens after start-up), as the original does
with Kafka.

* ``orders`` message ``{"event", "order", "stock", "money"}``: ``order.update [event, order]``
  goes to every connection of ``order.user`` subscribed to the order's market; then, for the
  order's stock and money, if a connection of that user subscribes the asset, its balance is
  asked of the matchengine (``balance.query [user, asset]``) and pushed as
  ``asset.update [{asset: {"available", "freeze"}}]`` to those connections.  Every order
  involved in a trade (taker and makers) has a message, so both sides of a trade get their
  asset updates.
* ``balances`` message ``[time, user, asset, business, change]``: the same balance push.
* ``stops`` message (the CoinEx fork's stop orders) ``{"event", "order", "order_id", "stock",
  "money"}``: ``order.update_stop [event, stop]`` to the user's connections subscribed to the
  stop's market (``order.subscribe``), then the stock and money balance pushes (a stop freezes
  funds while it waits).

Balance queries are coalesced: the (user, asset) pairs of one batch of messages are asked once,
and a pair that changes again while its query is in flight is asked again when it returns, so
the last push always shows the balance after the last message.

A connection is indexed under the user it authenticated as, and only while it has order or
asset subscriptions; pushes are looked up by the message's user, so no connection ever gets
another user's data.

Messages a publisher sends again (at-least-once: after its restart or a failover to a standby
matchengine it republishes from its mark) are dropped by their operation id
(bus/dedup.py), so no push is sent twice.

Balances are asked through a :class:`Forwarder` (backends + timeout), not the server; the
notification names come from the declared push table (:mod:`exchange_server.common.methods`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from exchange_server.accessws.config import AccessWsConfig
from exchange_server.accessws.forward import Forwarder
from exchange_server.accessws.protocol import notify_frame
from exchange_server.accessws.session import Connection
from exchange_server.bus.base import BALANCES, ORDERS, STOPS, BusReader, Message, Subscription
from exchange_server.bus.dedup import ReplayFilter
from exchange_server.common.methods import (
    ASSET_UPDATE,
    MATCHENGINE,
    ORDER_UPDATE,
    ORDER_UPDATE_STOP,
)

log = logging.getLogger("exchange_server.accessws.user")

#: Seconds before reading a topic again after its subscription failed.
RETRY_DELAY = 1.0


def stops_topic(config: AccessWsConfig) -> str:
    """The ``stops`` topic: the config's ``stops`` block, else ``stops`` with the prefix of the
    ``orders`` topic (``<prefix>orders`` -> ``<prefix>stops``, the matchengine's
    ``kafka_topic_prefix``)."""
    if config.stops is not None:
        return str(config.stops.topic)
    if config.orders is not None and config.orders.topic.endswith(ORDERS):
        return config.orders.topic[:-len(ORDERS)] + STOPS
    return STOPS


def bus_topics(config: AccessWsConfig) -> tuple[str, str, str]:
    """The ``orders``, ``balances`` and ``stops`` topics (names from the config's Kafka blocks
    if any)."""
    orders = config.orders.topic if config.orders else ORDERS
    balances = config.balances.topic if config.balances else BALANCES
    return orders, balances, stops_topic(config)


class UserFeeds:
    """``topics``: the ``orders``, ``balances`` and ``stops`` topics read by :meth:`start`."""

    def __init__(self, forwarder: Forwarder, topics: tuple[str, str, str]) -> None:
        self.forwarder = forwarder
        self.topics = topics
        #: user id -> that user's connections with order or asset subscriptions
        self.users: dict[int, set[Connection]] = {}
        #: (user, asset) being queried -> asked again when the query returns
        self._inflight: dict[tuple[int, str], bool] = {}
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._queries: set[asyncio.Task[None]] = set()
        #: per topic read: the messages already handled (republished ones are dropped)
        self.replays: list[ReplayFilter] = []
        #: newest order id (and its mtime) in the orders messages processed (metrics: lag)
        self.last_order_id = 0
        self.last_order_time = 0.0

    # -- subscriptions ----------------------------------------------------------------------------

    def set_orders(self, conn: Connection, markets: set[str] | None) -> None:
        conn.orders = markets or None
        self._index(conn)

    def set_assets(self, conn: Connection, assets: dict[str, None] | None) -> None:
        conn.assets = assets or None
        self._index(conn)

    def clear(self, conn: Connection) -> None:
        """Drop the connection's order and asset subscriptions (close, re-auth as another user)."""
        conn.orders = None
        conn.assets = None
        self._index(conn)

    def _index(self, conn: Connection) -> None:
        user = conn.user_id
        if not user:
            return
        conns = self.users.get(user)
        if conn.orders or conn.assets:
            if conns is None:
                conns = self.users[user] = set()
            conns.add(conn)
        elif conns is not None:
            conns.discard(conn)
            if not conns:
                del self.users[user]

    # -- bus --------------------------------------------------------------------------------------

    def start(self, bus: BusReader) -> None:
        """Read the three topics from their end."""
        orders, balances, stops = (bus.subscribe(topic) for topic in self.topics)
        self._subscriptions = [orders, balances, stops]
        self.replays = [ReplayFilter() for _ in self._subscriptions]
        self._tasks = [
            asyncio.create_task(self._consume(orders, self.on_orders, self.replays[0])),
            asyncio.create_task(self._consume(balances, self.on_balances, self.replays[1])),
            asyncio.create_task(self._consume(stops, self.on_stops, self.replays[2])),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._queries):
            task.cancel()
        for task in self._tasks + list(self._queries):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.close()
        self._subscriptions = []

    async def _consume(self, sub: Subscription, handle: Callable[[list[Message]], None],
                       replays: ReplayFilter) -> None:
        while True:
            try:
                batch = await sub.next_batch(1000)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("bus read failed (retrying in %.0f s): %s", RETRY_DELAY, e)
                await asyncio.sleep(RETRY_DELAY)
                continue
            if not batch:
                return
            batch = replays.fresh(batch)
            if not batch:
                continue
            try:
                handle(batch)
            except Exception:
                log.exception("bus batch failed")

    def on_orders(self, batch: list[Message]) -> None:
        if batch[0].event is None:  # a batch is of one bus: all carry their event or none
            self._order_messages(batch, ORDER_UPDATE)
            return
        # From the in-process bus: each message's OrderChanged event is at hand, so the text
        # is parsed only for a user with a connection (most orders have none watching).
        users = self.users
        wanted: dict[tuple[int, str], None] = {}
        newest = self.last_order_id
        newest_time = self.last_order_time
        for msg in batch:
            order = msg.event.order
            oid = order.id
            if oid > newest:  # ``_seen``, inline (once per order message)
                newest = oid
                newest_time = float(order.mtime)
            if order.user in users:
                self._order_message(msg, ORDER_UPDATE, wanted)
        self.last_order_id = newest
        self.last_order_time = newest_time
        for user, asset in wanted:
            self.refresh_asset(user, asset)

    def _order_messages(self, batch: list[Message], notify: str) -> None:
        """``orders`` messages, or ``stops`` messages, which have the same shape."""
        wanted: dict[tuple[int, str], None] = {}
        for msg in batch:
            self._order_message(msg, notify, wanted)
        for user, asset in wanted:
            self.refresh_asset(user, asset)

    def _order_message(self, msg: Message, notify: str,
                       wanted: dict[tuple[int, str], None]) -> None:
        """Push one ``orders`` or ``stops`` message to its user's connections; the balances
        they watch that it touches go to ``wanted``."""
        try:
            data = orjson.loads(msg.value)
            event = data["event"]
            order = data["order"]
            user = order["user"]
            market = order["market"]
            stock = data["stock"]
            money = data["money"]
            if notify == ORDER_UPDATE:
                self._seen_order(order)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            # fatal level (alerted): our publisher never writes one
            log.critical("orders message at offset %d is malformed, skipped: %r",
                         msg.offset, msg.value[:200])
            return
        conns = self.users.get(user)
        if not conns:
            return
        frame: bytes | None = None
        for conn in conns:
            if conn.orders is not None and market in conn.orders and conn.user_id == user:
                if frame is None:
                    frame = notify_frame(notify, [event, order])
                conn.send_frame(frame)
        for asset in (stock, money):
            if any(c.assets is not None and asset in c.assets for c in conns):
                wanted[(user, asset)] = None

    def _seen_order(self, order: dict[str, Any]) -> None:
        self._seen(order.get("id"), order.get("mtime"))

    def _seen(self, oid: Any, mtime: Any) -> None:
        """The newest order id in the orders messages, and its time (the status gauges)."""
        if type(oid) is int and oid > self.last_order_id:
            self.last_order_id = oid
            self.last_order_time = float(mtime) if isinstance(mtime, (int, float)) else 0.0

    def on_stops(self, batch: list[Message]) -> None:
        self._order_messages(batch, ORDER_UPDATE_STOP)

    def on_balances(self, batch: list[Message]) -> None:
        wanted: dict[tuple[int, str], None] = {}
        users = self.users
        for msg in batch:
            try:
                data = orjson.loads(msg.value)
                user = data[1]
                asset = data[2]
            except (orjson.JSONDecodeError, IndexError, TypeError, KeyError):
                # fatal level (alerted): our publisher never writes one
                log.critical("balances message at offset %d is malformed, skipped: %r",
                             msg.offset, msg.value[:200])
                continue
            conns = users.get(user)
            if conns and any(c.assets is not None and asset in c.assets for c in conns):
                wanted[(user, asset)] = None
        for user, asset in wanted:
            self.refresh_asset(user, asset)

    # -- balance pushes ---------------------------------------------------------------------------

    def refresh_asset(self, user: int, asset: str) -> None:
        key = (user, asset)
        if key in self._inflight:
            self._inflight[key] = True  # ask again when the current query returns
            return
        self._inflight[key] = False
        task = asyncio.get_running_loop().create_task(self._push_asset(user, asset))
        self._queries.add(task)
        task.add_done_callback(self._queries.discard)

    async def _push_asset(self, user: int, asset: str) -> None:
        key = (user, asset)
        try:
            while True:
                self._inflight[key] = False
                result = await self._query_balance(user, asset)
                if result is not None:
                    self._send_asset(user, asset, result)
                if not self._inflight.get(key):
                    return
        finally:
            self._inflight.pop(key, None)

    async def _query_balance(self, user: int, asset: str) -> Any:
        reply = await self.forwarder.ask(MATCHENGINE, "balance.query", [user, asset])
        if reply is None:  # no matchengine, or no usable answer (logged)
            return None
        error, result = reply
        if error is not None or type(result) is not dict:
            log.error("balance.query [%d, %r] answered %s", user, asset, error)
            return None
        return result

    def _send_asset(self, user: int, asset: str, result: dict[str, Any]) -> None:
        conns = self.users.get(user)
        if not conns:
            return
        frame: bytes | None = None
        for conn in conns:
            if conn.assets is not None and asset in conn.assets and conn.user_id == user:
                if frame is None:
                    frame = notify_frame(ASSET_UPDATE, [result])
                conn.send_frame(frame)
