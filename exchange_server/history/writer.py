"""The history writer: an :class:`EventSink` that stores trade history rows in the background.

``on_events`` (event loop thread) only counts the rows one operation's events will make and
queues the events (about 1 us per operation); it never touches the database.  A single flusher
thread wakes every ``flush_interval`` (0.1 s, the original's timer) — or at once when
``batch_rows`` rows are waiting — takes whole operations from the queue (up to ``batch_rows``
rows), turns their events into rows (the store's ``rows_of``; events are immutable snapshots, so
this is safe off the loop) and writes them in ONE transaction together with the ``history_offset``
mark (= the id of the last operation in the batch).  Rows and mark commit
atomically, so after a crash the stored mark says exactly which operations' rows are stored:
``durable_mark()`` reports it, the matchengine replays its log, and ``on_events`` drops every
id at or below it.  Nothing is lost (the operation log is durable before events are delivered)
and nothing is doubled.

On a database error the batch is kept and retried every ``retry_delay`` seconds (1 s) forever,
in order; new operations queue behind it.  An operation whose events cannot be turned into rows
is different: retrying cannot help and skipping would lose its history, so the writer logs one
fatal line naming the operation id, stops, sets ``failure`` and reports ``overloaded()`` from
then on (the follower exits on it: see matchprocess/follower.py).

While ``pending_rows`` (queued + in flight) is at or above ``max_pending_rows`` the writer
reports ``overloaded()`` and the matchengine refuses writes with code 3, as the original does
when 1000 SQL jobs are pending.  The default bound, 100 000 rows, is about 10 s of a busy
engine's history and some 50 MB of memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from exchange_server.history.store import HistoryStore, HistoryStoreError, Operation, StoreRows
from exchange_server.matchengine.core.model import BalanceChanged, Deal, Event, OrderFinished, StopChanged

log = logging.getLogger("exchange_server.history")

DEFAULT_MAX_PENDING_ROWS = 100_000
#: Most rows in one flush.  A flush takes what queued while the previous one ran, so a writer
#: that falls behind writes bigger transactions; on MySQL each touches up to 600 table shards
#: (one INSERT each) whatever its size, so bigger ones cost less per row and let it catch up.
#: (20 000 capped a busy engine's flushes and the writer could not catch up on MariaDB.)
DEFAULT_BATCH_ROWS = 50_000
FLUSH_INTERVAL = 0.1
RETRY_DELAY = 1.0
#: While failing, a log line every this many seconds (the first failure is always logged).
ERROR_LOG_INTERVAL = 30.0


#: Rows each event becomes (rows.rows_of, so any store's rows_of): counted in on_events, built
#: by the flusher.
#: (StopChanged: at most one; a PUT makes none, counted anyway: it only weighs backpressure;
#: Deal: four deal rows and four to six balance rows, counted as ten)
ROWS_PER_EVENT: dict[type, int] = {BalanceChanged: 1, Deal: 10, OrderFinished: 2, StopChanged: 1}


class _Op:
    """One operation in the queue: its events until the flusher turns them into rows (then its
    rows, kept for a retry: ``_operations``)."""

    __slots__ = ("oper_id", "count", "events", "rows")

    def __init__(self, oper_id: int, count: int, events: list[Event]) -> None:
        self.oper_id = oper_id
        self.count = count
        self.events: list[Event] | None = events
        self.rows: StoreRows | None = None


class HistoryWriter:
    def __init__(
        self,
        store: HistoryStore,
        *,
        max_pending_rows: int = DEFAULT_MAX_PENDING_ROWS,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        flush_interval: float = FLUSH_INTERVAL,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self.store = store
        self.max_pending_rows = max_pending_rows
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self.retry_delay = retry_delay
        #: Guards the queue and counters; ``_cond`` waits on it.  A plain lock, taken directly
        #: (``with self._lock``) where nothing waits: the Condition's own ``with`` is two
        #: Python calls per operation queued.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        #: Serialises writes (the flusher thread, or flush_now without a thread).
        self._write_lock = threading.Lock()
        self._queue: deque[_Op] = deque()
        self._queued_rows = 0
        self._inflight_rows = 0
        #: Highest operation id accepted (queued or stored) / known stored.
        self._last_id: int | None = None
        self._durable_id = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stop_deadline: float | None = None
        self._flush_requested = False
        self._last_flush = 0.0
        self._failing_since: float | None = None
        self._last_error_log = 0.0
        #: Counters (for stats and tests).
        self.rows_written = 0
        self.flushes = 0
        self.errors = 0
        #: Why the writer stopped for good (an operation it cannot turn into rows), or None.
        self.failure: str | None = None

    # -- EventSink --------------------------------------------------------------------------------

    def durable_mark(self) -> int:
        """Open the store (creating tables if needed) and read its mark; operations at or below
        it are dropped from now on."""
        self.store.open()
        mark = self.store.read_mark()
        with self._cond:
            self._durable_id = max(self._durable_id, mark)
            if self._last_id is None or self._last_id < mark:
                self._last_id = mark
        return mark

    def start_after(self, oper_id: int) -> None:
        """Rows up to ``oper_id`` were written by an original ViaBTC matchengine whose databases
        are taken over (matchengine/original.py): raise the stored mark to it, by storing an
        empty operation there.  Before ``start()``; a no-op once the mark is that far."""
        if self.durable_mark() >= oper_id:
            return
        with self._write_lock:
            self.store.write([(oper_id, [])])
        log.warning("history mark raised to operation %d (rows written by the original)",
                    oper_id)
        self.durable_mark()

    def on_events(self, oper_id: int, events: list[Event]) -> None:
        if self._last_id is None:
            self.durable_mark()
        assert self._last_id is not None
        if oper_id <= self._last_id:
            return  # already stored (replay after restart) or delivered twice
        per_event = ROWS_PER_EVENT
        n = 0
        for e in events:
            n += per_event.get(type(e), 0)
        with self._lock:
            self._queue.append(_Op(oper_id, n, events))
            self._queued_rows += n
            self._last_id = oper_id
            if len(self._queue) == 1 or self._queued_rows >= self.batch_rows:
                self._cond.notify()

    def overloaded(self) -> bool:
        return (self.failure is not None
                or self._queued_rows + self._inflight_rows >= self.max_pending_rows)

    # -- state ------------------------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        """Rows not yet stored (queued and in flight)."""
        return self._queued_rows + self._inflight_rows

    @property
    def durable_id(self) -> int:
        """Highest operation id whose rows are stored (as far as this writer knows)."""
        return self._durable_id

    @property
    def last_id(self) -> int:
        return self._last_id or 0

    @property
    def failing(self) -> bool:
        """True while the database refuses the current batch."""
        return self._failing_since is not None

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the flusher thread (after ``durable_mark()``; restore may queue events
        before, they are written once the thread runs)."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Write what is queued (retrying for up to ``timeout`` seconds if the database fails),
        stop the thread, close the store.  Returns True if everything was stored.  Whatever is
        not stored is not lost: its operations are above the stored mark, so the next start
        replays them."""
        thread = self._thread
        if thread is not None:
            with self._cond:
                self._stopping = True
                self._stop_deadline = None if timeout is None else time.monotonic() + timeout
                self._cond.notify_all()
            thread.join(None if timeout is None else timeout + 5.0)
            if thread.is_alive():
                log.error("history writer thread did not stop")
                return False
            self._thread = None
        else:
            try:
                self.flush_now()
            except Exception as e:
                log.error("history flush at stop failed: %s", e)
        done = self.pending_rows == 0
        if not done:
            log.error("history writer stopped with %d rows not stored (operations after %d are"
                      " replayed at the next start)", self.pending_rows, self._durable_id)
        self.store.close()
        return done

    async def aclose(self, timeout: float | None = 10.0) -> bool:
        """``stop()`` without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.stop, timeout)

    def flush_now(self, timeout: float | None = None) -> None:
        """Store everything queued so far before returning.

        With the thread running, asks it to flush and waits (up to ``timeout``; TimeoutError
        after).  Without it, writes in the calling thread, once: a database error is raised and
        the rows stay queued."""
        target = self.last_id
        if self._thread is not None and self._thread.is_alive():
            deadline = None if timeout is None else time.monotonic() + timeout
            with self._cond:
                while self._durable_id < target:
                    self._flush_requested = True
                    self._cond.notify_all()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"history not flushed up to operation {target}")
                    self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
            return
        while self._durable_id < target:
            batch = self._take()
            if not batch:
                break
            self._write(batch)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait (without blocking the loop) until everything queued so far is stored."""
        target = self.last_id
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._durable_id < target:
            if self._thread is None:
                await asyncio.get_running_loop().run_in_executor(None, self.flush_now)
                continue
            with self._cond:
                self._flush_requested = True
                self._cond.notify_all()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"history not flushed up to operation {target}")
            await asyncio.sleep(0.005)

    # -- flushing ---------------------------------------------------------------------------------

    def _take(self) -> list[_Op]:
        """Whole operations from the queue, up to ``batch_rows`` rows (at least one op)."""
        with self._cond:
            batch: list[_Op] = []
            rows = 0
            queue = self._queue
            while queue and (not batch or rows + queue[0].count <= self.batch_rows):
                op = queue.popleft()
                batch.append(op)
                rows += op.count
            self._queued_rows -= rows
            self._inflight_rows += rows
            return batch

    def _write(self, batch: list[_Op]) -> None:
        """One attempt; on success the batch is done, on error it goes back to the queue's
        head and the error is raised.  Events become rows here, off the event loop."""
        rows = sum(op.count for op in batch)
        with self._write_lock:
            try:
                written = self.store.write(_operations(batch, self.store.rows_of))
            except BaseException:
                with self._cond:
                    self._queue.extendleft(reversed(batch))
                    self._queued_rows += rows
                    self._inflight_rows -= rows
                raise
        with self._cond:
            self._inflight_rows -= rows
            self._durable_id = max(self._durable_id, batch[-1].oper_id)
            self.rows_written += written
            self.flushes += 1
            self._cond.notify_all()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while True:
                    if self._queue:
                        if (self._stopping or self._flush_requested
                                or self._queued_rows >= self.batch_rows):
                            break
                        wait = self._last_flush + self.flush_interval - time.monotonic()
                        if wait <= 0:
                            break
                        cond.wait(wait)
                    elif self._stopping:
                        return
                    else:
                        self._flush_requested = False
                        cond.wait()
                self._flush_requested = False
            self._last_flush = time.monotonic()
            batch = self._take()
            while True:
                try:
                    self._write_retrying(batch)
                    break
                except _Stopped:
                    return

    def _write_retrying(self, batch: list[_Op]) -> None:
        """Write one batch, retrying every ``retry_delay`` s until it is stored.  When the writer
        is stopping and its deadline has passed, raises _Stopped (the batch stays queued)."""
        while True:
            try:
                self._write(batch)
            except HistoryRecordError as e:
                self.failure = str(e)
                log.critical("history writer stopped: %s; history stays before it until this is "
                             "repaired and the service restarted", e)
                raise _Stopped() from None
            except Exception as e:
                self.errors += 1
                now = time.monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                    self._last_error_log = now
                    log.error("history write of %d operations failed, retrying every %s s: %s",
                              len(batch), self.retry_delay, e,
                              exc_info=not isinstance(e, HistoryStoreError))
                elif now - self._last_error_log >= ERROR_LOG_INTERVAL:
                    self._last_error_log = now
                    log.error("history write still failing for %.0f s (%d rows pending): %s",
                              now - self._failing_since, self.pending_rows, e)
                self._retry_wait()
                batch = self._take()  # the same operations (back at the queue's head), maybe more
                continue
            if self._failing_since is not None:
                log.warning("history write recovered after %.1f s",
                            time.monotonic() - self._failing_since)
                self._failing_since = None
            return


    def _retry_wait(self) -> None:
        """Sleep ``retry_delay`` (new events do not shorten it); _Stopped once the stop deadline
        has passed."""
        with self._cond:
            until = time.monotonic() + self.retry_delay
            while True:
                if self._stopping and self._stop_deadline is not None:
                    if time.monotonic() >= self._stop_deadline:
                        raise _Stopped()
                    until = min(until, self._stop_deadline)
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)


class _Stopped(Exception):
    pass


class HistoryRecordError(Exception):
    """An operation whose events cannot be turned into history rows (fatal, never retried)."""


def _operations(batch: list[_Op], rows_of: Callable[[list[Event]], StoreRows]) -> list[Operation]:
    """The batch's (id, rows), each operation's rows made by ``rows_of`` (the store's) once and
    kept for a retry (``_Op.operation``, written out: one call per batch, not two per
    operation); an operation whose events cannot be turned into rows is a HistoryRecordError
    naming it."""
    operations: list[Operation] = []
    for op in batch:
        rows = op.rows
        if rows is None:
            try:
                rows = rows_of(op.events)  # type: ignore[arg-type]
            except Exception as e:
                raise HistoryRecordError(f"operation {op.oper_id}: its events cannot be turned "
                                         f"into history rows: {e!r}") from e
            op.rows, op.events = rows, None
        operations.append((op.oper_id, rows))
    return operations

