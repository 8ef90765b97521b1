"""BusPublisher: the matchengine's event sink that feeds the three topics.

* Every event of an operation becomes its original message (``bus.messages``) on ``deals``,
  ``orders`` or ``balances``, in event order, tagged with the operation id (a Kafka header, so
  bodies stay byte-identical to the original's).
* ``on_events`` never blocks: messages join a per-topic queue and are handed to the transport
  in order.  Nothing is dropped or reordered within a topic: a message stays queued until the
  transport acknowledges it, and when a transport loses what it had in flight (producer
  rebuilt after an error, new brokers) everything unacknowledged is sent again in order
  (at-least-once: a consumer may see a message twice, never miss one or see them out of
  order).
* Bound: ``overloaded()`` is True while any topic holds ``max_pending`` unacknowledged
  messages (default 100 000 per topic, about what the original buffers: librdkafka's default
  100 000-message queue plus its own 1000-message backlog).  The matchengine then refuses
  writes with error 3, so a long outage costs bounded memory and no lost message.
* Durable mark: the highest operation id all of whose messages are acknowledged (every
  operation before it too).  It is written to its store (``bus.mark``: a small file in
  embedded mode, a row of the log database in production) at most every 0.5 s and on stop,
  and read back synchronously by the first ``durable_mark()`` (or ``load_mark()``) in a fresh
  process: not at construction, so that a standby reads the mark its predecessor left when
  it takes over, not the one of its own start.  On restart the matchengine replays from a
  slice at or before the mark and hands every replayed operation to ``on_events`` again: ids
  at or below the mark are dropped, the others are published (again, if they had partly
  been acknowledged before the crash).

  Why a mark store rather than Kafka itself: the last message of each topic does carry its
  operation id, but an operation publishes on some topics only (balances are rare), so the
  only safe value derivable from the topics is the minimum over topics, which can be
  arbitrarily old and would force a long replay with mass re-publication.  A mark written
  after acknowledgements is exact (to 0.5 s) and costs one small write per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path

from exchange_server.bus.base import ALL_TOPICS, Transport
from exchange_server.bus.mark import Mark, MarkFile, MarkStore
from exchange_server.bus.messages import ENCODERS, published_events
from exchange_server.matchengine.core.model import Event
from exchange_server.matchengine.orderjson import keep_order_texts

log = logging.getLogger("exchange_server.bus")

#: Unacknowledged messages per topic at which writes are refused (see module docstring).
DEFAULT_MAX_PENDING = 100_000
#: Seconds between two writes of the durable mark.
MARK_INTERVAL = 0.5
#: Seconds before retrying a send the transport could not take.
RETRY_DELAY = 0.1

_INDEX = {t: i for i, t in enumerate(ALL_TOPICS)}
#: event type -> (its topic, the topic's index): the published events (bus.messages.ENCODERS)
_ROUTES: dict[type, tuple[str, int]] = {kind: (topic, _INDEX[topic])
                                        for kind, (topic, _) in ENCODERS.items()}
#: a message waiting or in flight: (operation id, body, the event it was written from); the body
#: is None for a transport with ``lazy_bodies`` (written from the event when read)
_Queued = tuple[int, bytes | None, Event]


class _Oper:
    """An operation whose messages are not all acknowledged yet."""

    __slots__ = ("oper_id", "remaining", "counts")

    def __init__(self, oper_id: int, remaining: int, counts: tuple[int, ...]) -> None:
        self.oper_id = oper_id
        self.remaining = remaining
        #: messages published on each topic (ALL_TOPICS order) before this operation's.
        self.counts = counts


class BusPublisher:
    def __init__(self, transport: Transport, mark: MarkStore | str | Path | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING,
                 mark_interval: float = MARK_INTERVAL) -> None:
        self.transport = transport
        self.mark_file: MarkStore = MarkFile(mark) if mark is None or isinstance(
            mark, (str, Path)) else mark
        self.max_pending = max_pending
        self.mark_interval = mark_interval
        #: the transport writes bodies itself when they are read (the in-process bus)
        self._lazy = bool(getattr(transport, "lazy_bodies", False)) and hasattr(
            transport, "send_all")
        if not self._lazy:
            keep_order_texts()  # the taker's orders message takes the reply's text
        self._loaded = Mark()
        self._is_loaded = False
        self._base = tuple(0 for _ in ALL_TOPICS)
        #: last operation id handed to on_events (or covered by the loaded mark).
        self._last_oper_id = 0
        #: per topic: messages with the transport, awaiting acknowledgement (oldest first)...
        #: (oper_id, body, the event the body was written from: for in-process consumers)
        self._inflight: dict[str, deque[_Queued]] = {t: deque() for t in ALL_TOPICS}
        #: ...and messages not handed to the transport yet.
        self._waiting: dict[str, deque[_Queued]] = {t: deque() for t in ALL_TOPICS}
        self._published = [0] * len(ALL_TOPICS)
        #: messages that can still be queued before some topic could reach max_pending: a
        #: lower bound (acknowledgements only raise it), measured again when it runs out
        #: (see overloaded)
        self._room = 0
        self._opers: deque[_Oper] = deque()
        self._by_id: dict[int, _Oper] = {}
        self._saved = Mark()
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._pump_scheduled = False
        self._mark_task: asyncio.Task[None] | None = None
        self._saving: asyncio.Future[None] | None = None

    def load_mark(self) -> Mark:
        """Read the mark from its store (once; later calls return what was read).  Raises
        the store's error (``MarkStoreError``, an OSError) when it cannot be read."""
        if not self._is_loaded:
            loaded = self.mark_file.load()
            self._loaded = self._saved = loaded
            self._base = tuple(loaded.offsets.get(t, 0) for t in ALL_TOPICS)
            self._last_oper_id = max(self._last_oper_id, loaded.oper_id)
            self._is_loaded = True
        return self._loaded

    def reload_mark(self) -> Mark:
        """Read the mark again (a standby taking over: its restore at start read the mark of
        that time; the active it replaces has published more since).  Only before ``start``
        and with nothing queued: what this publisher was handed must not depend on a mark it
        no longer holds."""
        if self._started or self._opers or self.pending_total():
            raise RuntimeError("reload_mark: the publisher is started or holds messages")
        self._is_loaded = False
        self._last_oper_id = 0
        return self.load_mark()

    def start_after(self, oper_id: int) -> None:
        """Operations up to ``oper_id`` were published by someone else (an original ViaBTC
        matchengine taken over, matchengine/original.py): raise the mark to it, in the file
        too.  Call before any ``on_events``; a no-op when the mark is already there."""
        if self.load_mark().oper_id >= oper_id:
            return
        mark = Mark(oper_id, dict(self._loaded.offsets))
        self.mark_file.save(mark)
        log.warning("bus mark raised to operation %d (published by the original)", oper_id)
        self._loaded = self._saved = mark
        self._last_oper_id = max(self._last_oper_id, oper_id)

    # -- EventSink --------------------------------------------------------------------------------

    def durable_mark(self) -> int:
        return self.load_mark().oper_id

    def on_events(self, oper_id: int, events: list[Event]) -> None:
        if not self._is_loaded:
            self.load_mark()
        if oper_id <= self._last_oper_id:
            return  # replayed and already acknowledged before the restart
        self._last_oper_id = oper_id
        published = self._published
        waiting = self._waiting
        if self._lazy:
            # no bodies (LazyMessage), and no list of them: the events routed as they come
            oper: _Oper | None = None
            routes = _ROUTES
            for e in events:
                route = routes.get(type(e))
                if route is not None:
                    if oper is None:
                        oper = self._add_oper(oper_id, 0)
                    waiting[route[0]].append((oper_id, None, e))
                    published[route[1]] += 1
                    oper.remaining += 1
            if oper is None:
                return
            self._room -= oper.remaining
        else:
            messages = published_events(events)
            if not messages:
                return
            self._room -= len(messages)
            self._add_oper(oper_id, len(messages))
            for topic, body, event in messages:
                waiting[topic].append((oper_id, body, event))
                published[_INDEX[topic]] += 1
        if self._started:
            if self._lazy:
                self._pump_soon()
            else:
                self._pump()

    def _add_oper(self, oper_id: int, count: int) -> _Oper:
        oper = _Oper(oper_id, count, tuple(self._published))
        self._opers.append(oper)
        self._by_id[oper_id] = oper
        return oper

    def overloaded(self) -> bool:
        """Whether a topic holds ``max_pending`` messages or more.  Checked before every write:
        while the room measured last is not used up no topic can have reached it (each message
        queued since took one from it), and the topics are not counted."""
        if self._room > 0:
            return False
        return self._measure_room()

    def _measure_room(self) -> bool:
        """``overloaded()`` counted topic by topic (a plain loop: no generator); the room left
        is kept for the next checks."""
        limit = self.max_pending
        inflight = self._inflight
        waiting = self._waiting
        most = 0
        for t in ALL_TOPICS:
            held = len(inflight[t]) + len(waiting[t])
            if held > most:
                most = held
        self._room = limit - most
        return self._room <= 0

    # -- state ------------------------------------------------------------------------------------

    def pending(self, topic: str) -> int:
        """Messages of ``topic`` not acknowledged yet (the CLI's "message X pending")."""
        return len(self._inflight[topic]) + len(self._waiting[topic])

    def pending_total(self) -> int:
        return sum(self.pending(t) for t in ALL_TOPICS)

    def current_mark(self) -> Mark:
        """The durable mark as of now (what the next write of the mark file will hold)."""
        if self._opers:
            first = self._opers[0]
            oper_id, counts = first.oper_id - 1, first.counts
        else:
            oper_id, counts = self._last_oper_id, tuple(self._published)
        offsets: dict[str, int] = {}
        if self.transport.stable_offsets:
            offsets = {t: self._base[i] + counts[i] for i, t in enumerate(ALL_TOPICS)}
        return Mark(oper_id, offsets)

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the transport and send what on_events queued so far (e.g. during replay)."""
        self._loop = asyncio.get_running_loop()
        self.load_mark()
        self.transport.open(self._on_acked, self._on_reset)
        self._started = True
        self._pump()
        self._mark_task = asyncio.create_task(self._mark_loop())

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message is acknowledged; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending_total():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def stop(self, timeout: float = 5.0, final_mark: bool = True) -> None:
        """Give the transport up to ``timeout`` seconds to deliver, then store the mark
        (``final_mark=False``: leave the mark file as the last periodic write left it, as a
        crash would)."""
        start = time.monotonic()
        if self._started:
            self._pump()  # what waits for the end of the current callback too (_pump_soon)
            await self.flush(timeout)
        if self._mark_task is not None:
            self._mark_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mark_task
            self._mark_task = None
        if self._saving is not None:
            with contextlib.suppress(OSError):
                await self._saving
            self._saving = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._started:
            await self.transport.close(max(0.0, timeout - (time.monotonic() - start)))
            self._started = False
        if final_mark:
            self._save_mark()
        self.mark_file.close()
        left = self.pending_total()
        if left:
            log.warning("bus stopped with %d unacknowledged messages: they are published again "
                        "after the restart (operations after %d)", left, self._saved.oper_id)

    # -- internals --------------------------------------------------------------------------------

    def _pump(self) -> None:
        send = self.transport.send
        # a transport that takes every message at once (the in-process bus): handed over a
        # topic at a time
        send_all = getattr(self.transport, "send_all", None)
        for topic in ALL_TOPICS:
            waiting = self._waiting[topic]
            if not waiting:
                continue
            inflight = self._inflight[topic]
            if send_all is not None:
                inflight.extend(waiting)
                send_all(topic, waiting)
                waiting.clear()
                continue
            while waiting:
                item = waiting[0]
                body = item[1]
                assert body is not None  # bodies are left unwritten only for send_all
                inflight.append(item)
                if not send(topic, body, item[0]):
                    inflight.pop()
                    self._schedule_retry()
                    break
                waiting.popleft()

    def _pump_soon(self) -> None:
        """``_pump`` once the current callback is done (the in-process bus).  Why: the
        matchengine hands over a group commit's operations one after the other in one
        callback; handed to the bus together, they cost one wake-up, acknowledgement check and
        trim per topic instead of one per operation, and no consumer could have run in between
        anyway."""
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump_now)

    def _pump_now(self) -> None:
        self._pump_scheduled = False
        if self._started:
            self._pump()

    def _schedule_retry(self) -> None:
        if self._retry is None and self._loop is not None:
            self._retry = self._loop.call_later(RETRY_DELAY, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if self._started:
            self._pump()

    def _on_acked(self, topic: str, count: int) -> None:
        inflight = self._inflight[topic]
        if count > len(inflight):
            log.error("bus: %d acknowledgements on %s for %d messages in flight", count, topic,
                      len(inflight))
            count = len(inflight)
        by_id = self._by_id
        for _ in range(count):
            oper_id = inflight.popleft()[0]
            oper = by_id.get(oper_id)
            if oper is not None:
                oper.remaining -= 1
        opers = self._opers
        while opers and opers[0].remaining <= 0:
            del by_id[opers.popleft().oper_id]

    def _on_reset(self) -> None:
        """The transport lost what was in flight: send it all again, in order."""
        for topic in ALL_TOPICS:
            inflight = self._inflight[topic]
            if inflight:
                waiting = self._waiting[topic]
                inflight.extend(waiting)
                self._waiting[topic] = inflight
                self._inflight[topic] = deque()
        if self._started:
            self._pump()

    async def _mark_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.mark_interval)
            mark = self.current_mark()
            if mark != self._saved:
                self._saving = loop.run_in_executor(None, self.mark_file.save, mark)
                try:
                    await asyncio.shield(self._saving)
                    self._saved = mark
                except OSError as e:
                    log.error("cannot store the bus mark: %s", e)
                self._saving = None

    def _save_mark(self) -> None:
        if not self._is_loaded:
            return  # never read: storing now would overwrite it with 0
        mark = self.current_mark()
        try:
            self.mark_file.save(mark)
            self._saved = mark
        except OSError as e:
            log.error("cannot store the bus mark: %s", e)
