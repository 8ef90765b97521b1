"""Market-data pushes: kline, depth, price, state, today and deals (websocket.md 6).

As in the original, each kind polls its backend every ``*_interval`` seconds once per
subscription key (a market, or market + parameters), however many connections share the key,
and broadcasts only what changed.  A key whose last subscriber left is deleted on the next
tick (its cached data with it); a key the backend answers with an error (an unknown market,
say) is dropped with all its subscribers, silently.  Difference: a new key is polled at once
instead of on the next tick, so the first update follows a subscription without waiting for
the interval.

A broadcast is serialised and framed once, then written to every subscriber
(``Connection.send_frame``), so its cost per subscriber is one buffered socket write.

The feeds depend on a :class:`Forwarder` (backends + timeout), not on the server, and name their
notifications after the declared push table (:mod:`exchange_server.common.methods`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from decimal import Decimal
from typing import Any

from exchange_server.accessws.config import AccessWsConfig
from exchange_server.accessws.depth import depth_diff
from exchange_server.accessws.forward import Forwarder
from exchange_server.accessws.protocol import notify_frame
from exchange_server.accessws.session import Connection
from exchange_server.common import decimals, jsonfmt
from exchange_server.common.methods import (
    DEALS_UPDATE,
    DEPTH_UPDATE,
    KLINE_UPDATE,
    MARKETPRICE,
    MATCHENGINE,
    PRICE_UPDATE,
    STATE_UPDATE,
    TODAY_UPDATE,
)

log = logging.getLogger("exchange_server.accessws.market")

#: A depth key sends a full snapshot (clean=true) instead of a diff at least this often.
DEPTH_CLEAN_INTERVAL = 60.0
#: Deals kept per market for new subscribers (and asked of market.deals per poll).
DEALS_CACHE = 100
#: market.status period of state.update.
STATE_PERIOD = 86400

ZERO = Decimal(0)


class Topic:
    """One subscription key: its subscribers and what was last sent for it."""

    __slots__ = ("key", "sessions", "busy", "data", "text", "last_id", "clean_time")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.sessions: set[Connection] = set()
        self.busy = False
        #: the last result broadcast (depth snapshot, price text, state object...)
        self.data: Any = None
        #: comparison text / value of the last result
        self.text: Any = None
        self.last_id = 0
        self.clean_time = 0.0


class PollFeed:
    """Polls ``backend.method`` for every key every ``interval`` seconds and broadcasts
    ``push`` (``<name>.update``, from the declared push table) to the key's subscribers."""

    name = ""
    push = ""
    backend = ""
    method = ""

    def __init__(self, forwarder: Forwarder, interval: float) -> None:
        self.forwarder = forwarder
        self.interval = interval
        self.topics: dict[Hashable, Topic] = {}
        self.polls = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- subscribers ------------------------------------------------------------------------------

    def add(self, conn: Connection, key: Hashable) -> Topic:
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic(key)
            self._kick(topic)
        topic.sessions.add(conn)
        return topic

    def remove(self, conn: Connection, key: Hashable) -> None:
        topic = self.topics.get(key)
        if topic is not None:
            topic.sessions.discard(conn)

    def forget(self, conn: Connection, key: Hashable) -> None:
        """The key was dropped: remove it from the connection's own record."""
        raise NotImplementedError

    def subscribers(self) -> int:
        return sum(len(t.sessions) for t in self.topics.values())

    # -- polling ----------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.interval
            delay = due - loop.time()
            if delay < 0:  # fell behind (a long pause): do not try to catch up
                due = loop.time()
                delay = 0
            await asyncio.sleep(delay)
            self.tick()

    def tick(self) -> None:
        for key, topic in list(self.topics.items()):
            if not topic.sessions:
                del self.topics[key]
            elif not topic.busy:
                self._kick(topic)

    def _kick(self, topic: Topic) -> None:
        topic.busy = True
        task = asyncio.get_running_loop().create_task(self._poll(topic))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def params(self, key: Any) -> list[Any]:
        raise NotImplementedError

    def on_result(self, topic: Topic, result: Any) -> None:
        raise NotImplementedError

    async def _poll(self, topic: Topic) -> None:
        try:
            self.polls += 1
            reply = await self.forwarder.ask(self.backend, self.method, self.params(topic.key))
            if reply is None:  # no backend, or no usable answer (logged): next tick
                return
            error, result = reply
            if self.topics.get(topic.key) is not topic:
                return
            if error is not None:
                log.info("%s %r: %s answered %s: key dropped", self.name, topic.key,
                         self.method, error)
                self._drop(topic)
                return
            try:
                self.on_result(topic, result)
            except Exception:
                log.exception("%s %r: cannot use the reply of %s", self.name, topic.key,
                              self.method)
        finally:
            topic.busy = False

    def _drop(self, topic: Topic) -> None:
        del self.topics[topic.key]
        for conn in topic.sessions:
            self.forget(conn, topic.key)
        topic.sessions.clear()

    def broadcast(self, topic: Topic, params: Any) -> None:
        if not topic.sessions:
            return
        frame = notify_frame(self.push, params)
        for conn in topic.sessions:
            conn.send_frame(frame)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class ListFeed(PollFeed):
    """Kinds whose subscription is a list of markets (price, state, today, deals)."""

    attr = ""

    def forget(self, conn: Connection, key: Hashable) -> None:
        markets: list[str] | None = getattr(conn, self.attr)
        if markets is not None and key in markets:
            markets.remove(key)

    def append(self, conn: Connection, market: str) -> None:
        markets: list[str] | None = getattr(conn, self.attr)
        if markets is None:
            markets = []
            setattr(conn, self.attr, markets)
        if market not in markets:
            markets.append(market)
        self.add(conn, market)

    def clear(self, conn: Connection) -> None:
        markets: list[str] | None = getattr(conn, self.attr)
        if markets:
            for market in markets:
                self.remove(conn, market)
        setattr(conn, self.attr, None)

    def send_last(self, conn: Connection, market: str) -> None:
        """What a new subscriber gets at once when the key has data."""
        raise NotImplementedError


class KlineFeed(PollFeed):
    name = "kline"
    push = KLINE_UPDATE
    backend = MARKETPRICE
    method = "market.kline"

    def __init__(self, forwarder: Forwarder, interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(forwarder, interval)
        self.clock = clock
        self.window = int(interval + 1)

    def forget(self, conn: Connection, key: Hashable) -> None:
        if conn.kline == key:
            conn.kline = None

    def set(self, conn: Connection, key: tuple[str, int]) -> None:
        self.clear(conn)
        conn.kline = key
        self.add(conn, key)

    def clear(self, conn: Connection) -> None:
        if conn.kline is not None:
            self.remove(conn, conn.kline)
            conn.kline = None

    def params(self, key: Any) -> list[Any]:
        market, interval = key
        now = int(self.clock())
        return [market, now - self.window, now, interval]

    def on_result(self, topic: Topic, result: Any) -> None:
        if type(result) is not list or not result:
            return
        last = jsonfmt.dumps(result[-1])
        if last != topic.text:
            topic.text = last
            self.broadcast(topic, result)


class DepthFeed(PollFeed):
    name = "depth"
    push = DEPTH_UPDATE
    backend = MATCHENGINE
    method = "order.depth"

    def forget(self, conn: Connection, key: Hashable) -> None:
        if conn.depth == key:
            conn.depth = None

    def set(self, conn: Connection, key: tuple[str, int, str]) -> None:
        self.clear(conn)
        conn.depth = key
        self.add(conn, key)

    def clear(self, conn: Connection) -> None:
        if conn.depth is not None:
            self.remove(conn, conn.depth)
            conn.depth = None

    def params(self, key: Any) -> list[Any]:
        market, limit, interval = key
        return [market, limit, interval]

    def on_result(self, topic: Topic, result: Any) -> None:
        if type(result) is not dict:
            return
        key: tuple[str, int, str] = topic.key  # type: ignore[assignment]
        market, limit = key[0], key[1]
        now = time.monotonic()
        if topic.data is None:
            topic.data = result
            topic.clean_time = now
            self.broadcast(topic, [True, result, market])
            return
        diff = depth_diff(topic.data, result, limit)
        if diff is None:
            return
        topic.data = result
        if now - topic.clean_time >= DEPTH_CLEAN_INTERVAL:
            topic.clean_time = now
            self.broadcast(topic, [True, result, market])
        else:
            self.broadcast(topic, [False, diff, market])

    def send_clean(self, conn: Connection, key: tuple[str, int, str]) -> None:
        topic = self.topics.get(key)
        if topic is not None and topic.data is not None:
            conn.send_frame(notify_frame(self.push, [True, topic.data, key[0]]))


class PriceFeed(ListFeed):
    name = "price"
    push = PRICE_UPDATE
    attr = "price"
    backend = MARKETPRICE
    method = "market.last"

    def params(self, key: Any) -> list[Any]:
        return [key]

    def on_result(self, topic: Topic, result: Any) -> None:
        value = decimals.parse(result)
        if value is None:
            return
        if topic.text is None:
            topic.text = ZERO
        if value != topic.text:
            topic.text = value
            topic.data = result
            self.broadcast(topic, [topic.key, result])

    def send_last(self, conn: Connection, market: str) -> None:
        topic = self.topics.get(market)
        if topic is not None and topic.data is not None and topic.text != ZERO:
            conn.send_frame(notify_frame(self.push, [market, topic.data]))


class _ObjectFeed(ListFeed):
    """state and today: broadcast the result object when its (sorted-keys) text changes."""

    def on_result(self, topic: Topic, result: Any) -> None:
        if type(result) is not dict:
            return
        text = jsonfmt.dumps(dict(sorted(result.items())))
        if text != topic.text:
            topic.text = text
            topic.data = result
            self.broadcast(topic, [topic.key, result])

    def send_last(self, conn: Connection, market: str) -> None:
        topic = self.topics.get(market)
        if topic is not None and topic.data is not None:
            conn.send_frame(notify_frame(self.push, [market, topic.data]))


class StateFeed(_ObjectFeed):
    name = "state"
    push = STATE_UPDATE
    attr = "state"
    backend = MARKETPRICE
    method = "market.status"

    def params(self, key: Any) -> list[Any]:
        return [key, STATE_PERIOD]


class TodayFeed(_ObjectFeed):
    name = "today"
    push = TODAY_UPDATE
    attr = "today"
    backend = MARKETPRICE
    method = "market.status_today"

    def params(self, key: Any) -> list[Any]:
        return [key]


class DealsFeed(ListFeed):
    name = "deals"
    push = DEALS_UPDATE
    attr = "deals"
    backend = MARKETPRICE
    method = "market.deals"

    def params(self, key: Any) -> list[Any]:
        # the topic object is looked up again: its last_id moves with every reply
        topic = self.topics.get(key)
        return [key, DEALS_CACHE, topic.last_id if topic is not None else 0]

    def on_result(self, topic: Topic, result: Any) -> None:
        if type(result) is not list or not result:
            return
        first = result[0]
        if type(first) is not dict or type(first.get("id")) is not int:
            return
        topic.last_id = first["id"]
        cache: deque[Any] | None = topic.data
        if cache is None:
            cache = topic.data = deque(maxlen=DEALS_CACHE)
        cache.extendleft(reversed(result))
        self.broadcast(topic, [topic.key, result])

    def send_last(self, conn: Connection, market: str) -> None:
        topic = self.topics.get(market)
        if topic is not None and topic.data:
            conn.send_frame(notify_frame(self.push, [market, list(topic.data)]))


class MarketFeeds:
    """The six market-data feeds, started and stopped together (one polling task each)."""

    def __init__(self, forwarder: Forwarder, config: AccessWsConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.kline = KlineFeed(forwarder, config.kline_interval, clock)
        self.depth = DepthFeed(forwarder, config.depth_interval)
        self.price = PriceFeed(forwarder, config.price_interval)
        self.state = StateFeed(forwarder, config.state_interval)
        self.today = TodayFeed(forwarder, config.today_interval)
        self.deals = DealsFeed(forwarder, config.deals_interval)
        self.lists: tuple[ListFeed, ...] = (self.price, self.state, self.today, self.deals)
        self.all: list[PollFeed] = [self.kline, self.depth, *self.lists]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(feed.run()) for feed in self.all]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for feed in self.all:
            await feed.stop()

    def clear(self, conn: Connection) -> None:
        """Drop every market-data subscription of the connection (it is gone)."""
        self.kline.clear(conn)
        self.depth.clear(conn)
        for feed in self.lists:
            feed.clear(conn)
