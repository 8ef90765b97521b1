"""The in-process bus (embedded mode): topics kept in memory, Kafka-like offsets.

Each topic is an append-only log of ``Message(offset, value, oper_id, event)``.  Consumers in the
same process (marketprice, accessws) subscribe from an offset and get an async iterator.  The
publisher hands messages over without their text (``lazy_bodies``): each is a ``LazyMessage``
whose JSON is written from its engine event only if a consumer reads ``value``.

Acknowledgement = durability.  A consumer that keeps its own state (marketprice, in SQLite)
subscribes with a ``durable`` name and calls ``commit(offset)`` once that state is stored; a
message is acknowledged to the publisher only when every durable consumer of its topic has
committed it (immediately when a topic has none).  The publisher's durable mark therefore
never passes what those consumers stored, and after a restart the matchengine replays and
re-publishes exactly what they may have missed.

Offsets survive restarts: the publisher stores, with its mark, the offset the next message
of each topic gets, and this bus starts each topic there (``mark_file``).  Replay is
deterministic, so re-published messages get back the offsets they had, and a consumer simply
resumes from its stored offset + 1, as with Kafka.

Messages are kept until every durable consumer committed them and every live subscriber read
them, and at least the last ``retain`` messages of each topic.  A live subscriber (accessws)
holds messages back by at most ``max_behind`` messages: one that falls further behind skips
ahead (with a warning), as a Kafka consumer would past the retention.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from exchange_server.bus.base import (
    ALL_TOPICS,
    AckCallback,
    BatchIterator,
    Message,
    ResetCallback,
)
from exchange_server.bus.mark import MarkFile
from exchange_server.bus.messages import LazyMessage

log = logging.getLogger("exchange_server.bus")

#: Messages always kept per topic (for subscribers starting slightly in the past).
DEFAULT_RETAIN = 1_000
#: How far a live (non-durable) subscriber may fall behind before it skips ahead.
DEFAULT_MAX_BEHIND = 100_000


class _Topic:
    def __init__(self, name: str, base: int) -> None:
        self.name = name
        #: offset of items[0]
        self.first = base
        self.items: list[Message] = []
        self.waiters: list[asyncio.Future[None]] = []
        #: durable consumer name -> last committed offset
        self.durable: dict[str, int] = {}
        #: highest offset acknowledged to the publisher
        self.acked = base - 1
        #: open live (non-durable) subscriptions
        self.live: set[InProcessSubscription] = set()

    @property
    def end(self) -> int:
        """The offset the next message gets."""
        return self.first + len(self.items)

    def committed(self) -> int:
        """Offset up to which every durable consumer has committed (end - 1 if none)."""
        if not self.durable:
            return self.end - 1
        return min(self.durable.values())

    def wake(self) -> None:
        waiters = self.waiters
        if waiters:
            self.waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)


class InProcessBus:
    """Transport (producer side) and reader (consumer side) of the embedded bus."""

    stable_offsets = True
    #: the publisher hands messages over without their bodies (value None): each becomes a
    #: ``LazyMessage``, its text written from its event only if a consumer reads it
    lazy_bodies = True

    def __init__(self, mark_file: MarkFile | None = None, retain: int = DEFAULT_RETAIN,
                 max_behind: int = DEFAULT_MAX_BEHIND) -> None:
        base = mark_file.load().offsets if mark_file is not None else {}
        self.topics: dict[str, _Topic] = {t: _Topic(t, base.get(t, 0)) for t in ALL_TOPICS}
        self.retain = retain
        self.max_behind = max_behind
        self._on_acked: AckCallback | None = None
        self._ack_counts: dict[str, int] = {}
        self._ack_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _topic(self, name: str) -> _Topic:
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = _Topic(name, 0)
        return topic

    # -- transport --------------------------------------------------------------------------------

    def open(self, on_acked: AckCallback, on_reset: ResetCallback) -> None:
        self._on_acked = on_acked
        self._loop = asyncio.get_running_loop()

    def send(self, topic: str, value: bytes, oper_id: int) -> bool:
        t = self._topic(topic)
        offset = t.end
        t.items.append(Message(offset, value, oper_id))
        t.wake()
        if t.committed() >= offset:
            self._ack(t, offset)
        self._trim(t)
        return True

    def send_all(self, topic: str, messages: Iterable[tuple[int, bytes | None, Any]]) -> None:
        """``send`` for each (oper_id, value, event) of ``messages``, in order; always taken.
        Why: the publisher hands over an operation's (or a commit's) messages together, and
        the waking, acknowledging and trimming are done once for them all.  The event goes
        with the message (``Message.event``); a value None makes a ``LazyMessage``."""
        t = self._topic(topic)
        items = t.items
        offset = t.first + len(items)
        new = tuple.__new__
        for oper_id, value, event in messages:
            items.append(new(LazyMessage if value is None else Message,
                             (offset, value, oper_id, event)))
            offset += 1
        t.wake()
        if t.committed() >= offset - 1:
            self._ack(t, offset - 1)
        self._trim(t)

    async def close(self, timeout: float) -> None:
        self._deliver_acks()
        self._on_acked = None

    def _ack(self, t: _Topic, upto: int) -> None:
        """Acknowledge every message up to offset ``upto`` (deferred to the loop)."""
        upto = min(upto, t.end - 1)
        if upto <= t.acked:
            return
        self._ack_counts[t.name] = self._ack_counts.get(t.name, 0) + upto - t.acked
        t.acked = upto
        if not self._ack_scheduled and self._loop is not None:
            self._ack_scheduled = True
            self._loop.call_soon(self._deliver_acks)

    def _deliver_acks(self) -> None:
        self._ack_scheduled = False
        counts, self._ack_counts = self._ack_counts, {}
        if self._on_acked is not None:
            for topic, n in counts.items():
                self._on_acked(topic, n)

    def _trim(self, t: _Topic) -> None:
        """Drop the oldest messages nobody needs (in chunks of at least half the kept list, so
        the cost per message stays constant)."""
        items = t.items
        size = len(items)
        # at most size - retain can go, and only when that is half the list: nothing to do
        # below twice retain (checked first: this runs for every message sent)
        if size < 2 * self.retain or size <= self.retain + 16:
            return
        end = t.end
        keep_from = min(t.committed() + 1, end - self.retain)  # durable consumers: always
        if t.live:
            slowest = min(s.position for s in t.live)
            keep_from = min(keep_from, max(slowest, end - self.max_behind))
        drop = keep_from - t.first
        if drop > 0 and drop * 2 >= len(items):
            del items[:drop]
            t.first += drop

    # -- reader -----------------------------------------------------------------------------------

    def subscribe(self, topic: str, from_offset: int | None = None,
                  durable: str | None = None) -> InProcessSubscription:
        t = self._topic(topic)
        start = t.end if from_offset is None else from_offset
        if durable is not None:
            previous = t.durable.get(durable, -1)
            t.durable[durable] = max(previous, start - 1)
        subscription = InProcessSubscription(self, t, start, durable)
        if durable is None:
            t.live.add(subscription)
        return subscription

    def commit(self, topic: str, durable: str, offset: int) -> None:
        t = self._topic(topic)
        if offset > t.durable.get(durable, -1):
            t.durable[durable] = offset
        self._ack(t, t.committed())
        self._trim(t)

    def forget(self, topic: str, durable: str) -> None:
        """Stop holding messages for a durable consumer that is gone for good."""
        t = self._topic(topic)
        t.durable.pop(durable, None)
        self._ack(t, t.committed())

    def end_offset(self, topic: str) -> int:
        return self._topic(topic).end


class InProcessSubscription(BatchIterator):
    def __init__(self, bus: InProcessBus, topic: _Topic, start: int, durable: str | None) -> None:
        self.bus = bus
        self.topic = topic
        self.position = start
        self.durable = durable
        self._buffer: list[Message] = []
        self._index = 0
        self._closed = False

    async def next_batch(self, max_messages: int = 1000) -> list[Message]:
        """At least one message (an empty list only once the subscription is closed)."""
        t = self.topic
        while True:
            if self._closed:
                return []
            if self.position < t.first:
                log.warning("bus %s: subscriber at offset %d is behind the oldest kept message "
                            "%d: skipping ahead", t.name, self.position, t.first)
                self.position = t.first
            if self.position < t.end:
                i = self.position - t.first
                batch = t.items[i:i + max_messages]
                self.position += len(batch)
                return batch
            fut = asyncio.get_running_loop().create_future()
            t.waiters.append(fut)
            await fut

    def commit(self, offset: int) -> None:
        if self.durable is not None:
            self.bus.commit(self.topic.name, self.durable, offset)

    async def close(self) -> None:
        self._closed = True
        self.topic.live.discard(self)
        self.topic.wake()
