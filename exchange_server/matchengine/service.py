"""The matchengine service: the engine in an event loop, with a durable operation log.

Journal before effect.  A write is applied to the in-memory engine at once (so the next command
sees it), its log record joins the batch being collected, and its reply is held back until the
batch is committed.  Replies to reads wait likewise when they were computed after a write that
is not yet durable, so no client can observe an effect that a crash could take back.  Only one
commit is in flight at a time: whatever arrives meanwhile forms the next batch, so the commit
cost is shared by every operation that arrived during the previous one (group commit).  With no
commit in flight, the next one starts once the event loop has run the round it is in, so every
request read in that round joins it.  The HTTP gateway's hot path (``call_nowait``) needs no
task or future per request: the reply is handed to a callback once durable.

Events produced by each operation are handed to the registered sinks (history writer, bus) in
log order once the operation is durable, tagged with its operation id.  On start-up the latest
slice is loaded and the log after it is replayed; replayed operations produce their events
again, and each sink skips the ids it has already processed.

Slices are written by a forked child (copy-on-write gives it a consistent view without stopping
the engine); the child publishes the slice only after every operation it covers is durable.

Storage failures (full disk, database down or hanging).  A commit that fails, or does not finish
within ``commit_timeout`` seconds, counts as refused: every operation not yet durable is answered
code 3 "service unavailable" (as is every read that waited on them), their events are dropped (no
sink ever sees them), slice children that cover them are killed, and the service enters the
*degraded* state, which refuses writes at once with code 3.  The engine then still holds the
refused operations' effects, so reads are refused with code 3 too until it is rebuilt: a replica
restored in the writer's thread from the newest slice and the log up to the last acknowledged
operation, which needs only reads (a full disk still answers them at once; a stopped database
as soon as it is back), replaces the engine.  From then on reads
are answered again, from the durable state.  Once the storage takes a probe write (after log rows
beyond the last acknowledged id are deleted, since a timed-out commit may have landed after all,
and slices covering them), writes are accepted again.  Nothing acknowledged is lost and nothing
refused ever takes effect.  Storage is probed every ``PROBE_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import decimal
import functools
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter
from typing import Any

from exchange_server.common import gctune, jsonfmt, metrics
from exchange_server.common.config import MatchEngineConfig
from exchange_server.common.decimals import CONTEXT
from exchange_server.common.errors import (
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    RpcError,
    internal_error,
    method_not_found,
    service_unavailable,
)
from exchange_server.common.jsondepth import check_params_depth
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import Event, OrderSnapshot
from exchange_server.matchengine.methods import MatchEngineMethods, present
from exchange_server.matchengine.orderjson import kept_order_json
from exchange_server.matchengine.original import OriginalState, apply_load_rules, original_params
from exchange_server.matchengine.sink import EventSink
from exchange_server.matchengine.store import (
    EngineStore,
    OperLogGap,
    OperRecord,
    SliceInfo,
    StoreError,
)
from exchange_server.process.inherited import (
    die_with_parent,
    prepare_die_with_parent,
    release_in_child,
)

log = logging.getLogger("exchange_server.matchengine")

#: How long a slice child waits for its operations to become durable before giving up.
SLICE_DURABLE_TIMEOUT = 600.0
#: Seconds after its fork by which a slice child is dead whatever happens (its SIGALRM).
SLICE_CHILD_LIFETIME = int(SLICE_DURABLE_TIMEOUT) + 600
#: Unpublished slice tables this much older than a child's lifetime are abandoned: nobody can
#: still be writing them, even on another engine whose clock is off by up to a minute.
SLICE_ABANDONED_AFTER = SLICE_CHILD_LIFETIME + 60
#: Fewest seconds from one slice's start to the next by operation count.  Why: the count
#: (``slice_oper_interval``) bounds a restart's tail; at a high rate it would also fork and
#: write a slice every second or two, costing the live load (a fork's pause, a core writing).
#: With this floor a slice by count comes every max(slice_oper_interval operations, 3 s):
#: at bench_e2e's 6,000-8,000 operations/s as often as 20,000 operations did.
SLICE_OPER_MIN_GAP = 3
#: Seconds between attempts to rebuild the engine / probe the storage while degraded.
PROBE_INTERVAL = 1.0
#: How long stop() waits for the last commit before giving up on it.
STOP_FLUSH_TIMEOUT = 3.0
#: replay_from() reports its progress after this many records.
PROGRESS_EVERY = 1000

_record_id = itemgetter(0)


#: A reply held until operation ``id`` is durable: ``(id, reply, body, req_id)``.  Durable:
#: ``reply(body)``.  Refused: ``reply`` is given the error, as a reply body to request ``req_id``
#: (``call_nowait``), or itself when ``body`` is None (``_wait_durable``'s future, whose
#: ``reply(None)`` says durable).  Why a tuple of the reply's parts and not a closure: one is
#: held per order placed, and a closure per order cost its making and a call in between.
_Waiter = tuple[int, Callable[[Any], None], bytes | None, int | None]

#: an operation log record made from its fields' tuple in C (``OperRecord(...)`` calls the
#: NamedTuple's ``__new__``, a Python function, once per write)
_new_record = functools.partial(tuple.__new__, OperRecord)


def _settle(fut: asyncio.Future[None], error: RpcError | None) -> None:
    """A durability waiter's future: done, or refused with ``error``."""
    if not fut.done():
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


def _unreplayable(oper_id: int, method: str, error: RpcError) -> StoreError:
    """A logged operation that the engine refuses now (see ``_apply_logged``)."""
    hint = (" (is a market or asset it uses no longer configured? restore the "
            "configuration it was logged under)" if error.code == INVALID_ARGUMENT else "")
    return StoreError(f"operation {oper_id} ({method}) cannot be replayed: "
                      f"{error.code} {error.message}{hint}")


def _unknown_method(oper_id: int, method: str) -> StoreError:
    return StoreError(f"operation {oper_id}: unknown method {method!r}; the log was written by "
                      "another program or version")


def _within(page: list[tuple[int, float, str, list[Any]]],
            limit: int) -> list[tuple[int, float, str, list[Any]]]:
    """The records of ``page`` (in id order) up to ``limit``."""
    return page[:bisect.bisect_right(page, limit, key=_record_id)]


def _unavailable() -> tuple[int, str]:
    error = service_unavailable()
    return error.code, error.message


class MatchEngineService:
    def __init__(self, config: MatchEngineConfig, store: EngineStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.engine = Engine.from_config(config)
        self.methods = MatchEngineMethods(self.engine)
        self.debug = config.debug
        self.sinks: list[EventSink] = []
        #: More reasons to refuse writes with code 3 (e.g. a follower that lags too far).
        self.pressure: list[Callable[[], bool]] = []
        #: id of the last operation applied to the engine / known durable in the log.
        self.oper_id = 0
        self.durable_id = 0
        self._pending: list[OperRecord] = []
        self._pending_events: deque[tuple[int, list[Event]]] = deque()
        #: replies held until an operation is durable, in id order (see _Waiter)
        self._waiters: deque[_Waiter] = deque()
        self._flushing = False
        self._kick_scheduled = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="operlog")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slice_requested = False
        self._slice_children: set[int] = set()
        self._last_slice_time = 0
        #: operation id and time of the last slice started (the operation-count trigger)
        self._sliced_oper = 0
        self._sliced_time = 0
        self._timer: asyncio.Task[None] | None = None
        self.commit_count = 0
        #: metrics: when the commit in flight started; the newest published slice
        self._commit_started = 0.0
        self.commit_seconds_total = 0.0
        self.refused_writes = 0
        self.last_slice: SliceInfo | None = None
        self._slice_pending: dict[int, SliceInfo] = {}
        self.restored_from: SliceInfo | None = None
        #: records at or below this id were written by an original ViaBTC (original.py)
        self.original_end = 0
        self.replayed = 0
        #: every sink has processed the operations up to here (``restore`` reads their marks):
        #: a replay builds no events for them
        self.sinks_mark = 0
        #: the history follower's replica (``set_history_only``)
        self.history_only = False
        #: seconds a commit may take before it counts as failed
        self.commit_timeout = config.commit_timeout
        #: called with the new durable id whenever it advances (the follower's read limit)
        self.durable_hooks: list[Callable[[int], None]] = []
        #: writes refused: a commit failed and the storage has not taken a probe write since
        self.degraded = False
        #: the engine holds refused operations: reads refused until it is rebuilt
        self.tainted = False
        self._commit_gen = 0
        self._commit_timer: asyncio.TimerHandle | None = None
        self._recovery: asyncio.Task[None] | None = None
        self.refused_commits = 0

    # -- life cycle -------------------------------------------------------------------------------

    def add_sink(self, sink: EventSink) -> None:
        self.sinks.append(sink)

    def set_history_only(self, history_only: bool) -> None:
        """The history follower's replica: its engine makes only the events the history writer
        turns into rows (``Engine.set_history_only``), and its replay hands them over without
        the general loop (``_replay_history_page``).  Only for a service whose sinks are
        history writers and which takes no requests (no replies, no bus)."""
        self.history_only = history_only
        self.engine.set_history_only(history_only)

    def restore(self, limit: int | None = None, *, freeze_loaded: bool = False) -> None:
        """Load a slice, then replay the log after it (engine.md 12), up to ``limit`` if given
        (the history follower: no further than the matching process has acknowledged, so a
        commit that landed after it was refused is never applied).

        ``freeze_loaded``: a process's start-up restore, which freezes its state out of the
        collector's reach afterwards anyway (``gctune.freeze_startup_state``), freezes what it
        has right after the slice load too.  Why: the load runs with the collector paused, so
        every object it made (100,000 orders, their levels and user index) is still in the
        youngest generation, and the replay's first young collection walked all of them
        (0.08-0.1 s of CPU per restart of 100,000 open orders) to keep every one.  Not for a
        restore inside a running process (a standby's promotion): freezing there would keep
        whatever cycles its old state leaves out of every collection for good.

        The slice is the newest one that every sink has fully processed: a sink that was behind
        when the engine stopped (history database down, bus unreachable) gets the events of
        the operations it missed from the replay, since their events can only be rebuilt from
        the state before them.
        """
        store = self.store
        self.original_end = store.takeover_point()
        if self.original_end:
            # the original wrote the history and published the messages up to there
            for sink in self.sinks:
                sink.start_after(self.original_end)
        marks = [sink.durable_mark() for sink in self.sinks]
        self.sinks_mark = min(marks, default=0)
        last = store.last_oper_id()
        if marks and max(marks) > last:
            # A sink that has seen operations the log does not hold: the log was reset or
            # belongs to another system.  Everything new would be dropped as a duplicate.
            raise StoreError(f"a sink has processed operations up to {max(marks)} but the "
                             f"operation log ends at {last}: wrong or reset database")
        info = store.latest_slice()
        if marks and info is not None and info.end_oper_id > min(marks):
            usable = [s for s in store.list_slices() if s.end_oper_id <= min(marks)]
            if usable:
                info = usable[-1]
            else:
                log.warning("sinks are behind every slice (mark %d): replaying the whole log",
                            min(marks))
                info = None
        if info is not None:
            with gctune.paused():
                state = store.read_slice(info)
                if isinstance(state, OriginalState):
                    apply_load_rules(state, self.engine)
                warnings = self.engine.load_state(state)
                if freeze_loaded:
                    gctune.freeze_startup_state()
            for warning in warnings:
                log.warning("slice %d: %s", info.time, warning)
            self.oper_id = info.end_oper_id
            self._last_slice_time = self._sliced_time = info.time
            self._sliced_oper = info.end_oper_id
            self.restored_from = self.last_slice = info
        replayed = self.replay_from(store, limit)
        self.durable_id = self.oper_id
        self._durable_advanced()
        self.replayed = replayed
        log.info("restored: slice %s, %d operations replayed, last operation id %d",
                 info.time if info else "none", replayed, self.oper_id)

    def replay_from(self, store: EngineStore, limit: int | None = None,
                    progress: Callable[[], None] | None = None) -> int:
        """Apply the log records after ``oper_id`` (up to ``limit`` if given) again, in order;
        returns how many.  The one replay loop: restore, the rebuild after a storage failure and
        the history follower use it.  :class:`OperLogGap` when an id is skipped, StoreError when
        a record cannot be applied; ``progress`` is called every ``PROGRESS_EVERY`` records.

        Records come in pages of plain tuples (``read_operlog_rows``) and go straight to the
        methods' write functions: no request checks (they passed when the operation was
        accepted), no reply, and no events for the operations no sink takes: with no sink at
        all, or up to ``sinks_mark`` (the engine is quiet for them, see ``Engine.set_quiet``).
        In history-only mode (the follower, :meth:`set_history_only`) the operations the sinks
        take go the same way, their events straight to the sinks (``_replay_history_page``)."""
        count = 0
        engine = self.engine
        # the operations up to this one are replayed quiet (no sink: all of them)
        quiet_through: float = self.sinks_mark if self.sinks else float("inf")
        quiet = self.oper_id < quiet_through
        engine.set_quiet(quiet)
        # a quiet operation after the original's records needs nothing but its write function:
        # called here, without _apply_logged's lookups (replay is mostly this)
        runs = self.methods.quiet_replays()
        original_end = self.original_end
        # one context for the whole replay: the quiet write functions call the core without
        # its per-command context wrapper (MatchEngineMethods.quiet_replays)
        saved_context = decimal.getcontext()
        decimal.setcontext(CONTEXT)
        try:
            for page in store.read_operlog_rows(self.oper_id):
                if (page and quiet and progress is None and page[0][0] > original_end
                        and page[-1][0] <= quiet_through
                        and (limit is None or page[-1][0] <= limit)):
                    count += self._replay_quiet_page(page, runs)
                    continue
                if page and self.history_only and page[0][0] > max(original_end, quiet_through):
                    if quiet:
                        quiet = False
                        engine.set_quiet(False)
                    within = page if limit is None else _within(page, limit)
                    count = self._replay_history_pages(within, runs, count, progress)
                    if len(within) < len(page):
                        return count
                    continue
                for oper_id, when, method, params in page:
                    if limit is not None and oper_id > limit:
                        return count
                    if oper_id != self.oper_id + 1:
                        raise OperLogGap(self.oper_id + 1, oper_id)
                    if quiet and oper_id > quiet_through:
                        quiet = False
                        engine.set_quiet(False)
                    run = runs.get(method)
                    if not quiet or run is None or oper_id <= original_end:
                        self._apply_logged(oper_id, when, method, params)
                    else:
                        try:
                            run(when, params)
                        except RpcError as e:
                            raise _unreplayable(oper_id, method, e) from None
                    self.oper_id = oper_id
                    count += 1
                    if progress is not None and count % PROGRESS_EVERY == 0:
                        progress()
        finally:
            engine.set_quiet(False)
            decimal.setcontext(saved_context)
        return count

    def _replay_quiet_page(self, page: list[tuple[int, float, str, list[Any]]],
                           runs: dict[str, Callable[[float, list[Any]], Any]]) -> int:
        """Apply a page of records that are all quiet, after the original's and within the
        limit: ``replay_from``'s loop with only what such a record needs (its id is the next
        one, its write function runs).  Why: a restart replays mostly such pages, and the
        general loop's per-record tests were a few percent of replaying an order.  Returns how
        many were applied; ``oper_id`` is the last applied one however it ends."""
        expected = self.oper_id + 1
        try:
            for oper_id, when, method, params in page:
                if oper_id != expected:
                    raise OperLogGap(expected, oper_id)
                run = runs.get(method)
                if run is None:
                    self._apply_logged(oper_id, when, method, params)  # raises: unknown
                else:
                    try:
                        run(when, params)
                    except RpcError as e:
                        raise _unreplayable(oper_id, method, e) from None
                expected += 1
        finally:
            self.oper_id = expected - 1
        return len(page)

    def _replay_history_pages(self, page: list[tuple[int, float, str, list[Any]]],
                              runs: dict[str, Callable[[float, list[Any]], Any]], count: int,
                              progress: Callable[[], None] | None) -> int:
        """``_replay_history_page`` over ``page`` in pieces that end where ``count`` (the
        records replayed so far, returned updated) reaches a multiple of ``PROGRESS_EVERY``,
        calling ``progress`` there, as the general loop does."""
        if progress is None:
            return count + self._replay_history_page(page, runs)
        while page:
            take = PROGRESS_EVERY - count % PROGRESS_EVERY
            count += self._replay_history_page(page[:take], runs)
            page = page[take:]
            if count % PROGRESS_EVERY == 0:
                progress()
        return count

    def _replay_history_page(self, page: list[tuple[int, float, str, list[Any]]],
                             runs: dict[str, Callable[[float, list[Any]], Any]]) -> int:
        """Apply a page of records after the original's, within the limit and after the sinks'
        marks, in history-only mode: each record's write function, then its events (if any)
        to the sinks.  Why: the follower replays every operation for its history, and
        ``_apply_logged``'s lookups and an empty delivery per operation that makes no history
        (an order that rests without a deal) were a tenth of its replay.  An operation without
        events is not delivered, but for the page's last one (so the sinks' marks still reach
        the page's end); only history writers take a history-only replay's events, and a
        history mark may stand on any operation whose rows, and its predecessors', are stored.
        Returns how many were applied; ``oper_id`` is the last applied one however it ends."""
        events = self.engine.events
        deliver = self._deliver
        expected = self.oper_id + 1
        delivered = True
        try:
            for oper_id, when, method, params in page:
                if oper_id != expected:
                    raise OperLogGap(expected, oper_id)
                run = runs.get(method)
                if run is None:
                    raise _unknown_method(oper_id, method)
                try:
                    run(when, params)
                except RpcError as e:
                    events.clear()
                    raise _unreplayable(oper_id, method, e) from None
                if events:
                    taken = events[:]
                    events.clear()
                    deliver(oper_id, taken)
                    delivered = True
                else:
                    delivered = False
                expected += 1
        finally:
            self.oper_id = expected - 1
        if not delivered:
            deliver(self.oper_id, [])
        return len(page)

    def _apply_logged(self, oper_id: int, when: float, method: str, params: list[Any]) -> None:
        """Apply one logged operation again.  Every logged operation was applied once with the
        same state, time and params, so one that fails now means the configuration or the log
        changed under it: a StoreError, never a skip (skipping would drop its money)."""
        write = self.methods.by_log_name.get(method)
        if write is None:
            raise _unknown_method(oper_id, method)
        if oper_id <= self.original_end:  # written by an original ViaBTC: its integer rules
            params = original_params(method, params)
        try:
            write.run(when, params)
        except RpcError as e:
            self.engine.take_events()
            raise _unreplayable(oper_id, method, e) from None
        if not self.engine.quiet:
            events = self.engine.take_events()
            if self.sinks:
                self._deliver(oper_id, events)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = asyncio.create_task(self._tick())

    async def __aenter__(self) -> MatchEngineService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self, final_slice: bool = True) -> None:
        """Flush the log, then write a slice in-process so the next start replays nothing.

        Bounded whatever the storage does: a last commit that does not finish in
        STOP_FLUSH_TIMEOUT is refused like any failed one, and a degraded service writes no
        slice (its log holds every acknowledged operation)."""
        for task in (self._timer, self._recovery):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await asyncio.wait_for(self.flush(), STOP_FLUSH_TIMEOUT)
        except (TimeoutError, RpcError):
            if not self.degraded:
                self._fail(f"the last commit did not finish in {STOP_FLUSH_TIMEOUT}s at stop",
                           recover=False)
        if self.degraded:
            self._kill_children(0)
        self._reap_children(wait=True)
        if final_slice and self.oper_id and not self.degraded:
            try:
                latest = self.store.latest_slice()
                if latest is None or latest.end_oper_id < self.oper_id:
                    info = self._slice_info()
                    await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._write_slice_inline, info)
            except StoreError as e:
                log.error("no slice written at stop (the log holds every operation): %s", e)
        # A commit still hanging in the writer thread (its outcome no longer matters: it was
        # refused) must not keep the process alive.
        self._executor.shutdown(wait=not self.degraded, cancel_futures=True)

    async def flush(self) -> None:
        """Wait until every applied operation is durable (RpcError code 3 if refused)."""
        while self.durable_id < self.oper_id:
            await self._wait_durable(self.oper_id)

    # -- requests ---------------------------------------------------------------------------------

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        """Run one RPC and give its reply body, once the state it shows is durable."""
        body = self._run(method, params, req_id)
        if self.durable_id < self.oper_id:
            try:
                await self._wait_durable(self.oper_id)
            except RpcError as e:  # the operations it was computed after were refused
                body = jsonfmt.error_body(e.code, e.message, req_id, self.debug)
        return body

    def call_nowait(self, method: str, params: list[Any], req_id: int | None,
                    reply: Callable[[bytes], None]) -> bytes | None:
        """``call`` without a task or a future (the HTTP gateway's hot path): the reply body
        when the state it shows is durable already, else None and ``reply(body)`` is called
        once it is (or with the code 3 error once it was refused)."""
        body = self._run(method, params, req_id)
        if self.durable_id >= self.oper_id:
            return body
        if self.degraded:
            return jsonfmt.error_body(*_unavailable(), req_id, self.debug)
        self._waiters.append((self.oper_id, reply, body, req_id))
        # _apply scheduled the commit already (a write); a read of state not yet durable waits
        # for the commit in flight or scheduled (the flag read here saves a call per order)
        if not self._kick_scheduled:
            self._kick_soon()
        return None

    def _run(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        """Execute one RPC now and give its reply body (not durable yet, maybe)."""
        try:
            result = self._apply(method, params)
            if type(result) is OrderSnapshot and not self.debug:  # an order placed: templated
                return jsonfmt.reply_text(kept_order_json(result), req_id)
            return jsonfmt.reply_body(present(result), req_id, self.debug)
        except RpcError as e:
            return jsonfmt.error_body(e.code, e.message, req_id, self.debug)
        except Exception:
            log.exception("%s failed: params %r", method, params)
            return jsonfmt.error_body(INTERNAL_ERROR, "internal error", req_id, self.debug)

    def execute(self, method: str, params: list[Any]) -> Any:
        """Apply one command to the engine now; writes are queued for the log."""
        return present(self._apply(method, params))

    def _apply(self, method: str, params: list[Any]) -> Any:
        """``execute`` with a write's result as the engine gave it (not ``present``-ed)."""
        read = self.methods.reads.get(method)
        if read is not None:
            self._check_depth(params)
            if self.tainted:
                raise service_unavailable()
            return read(params)
        write = self.methods.writes.get(method)
        if write is None:
            raise method_not_found()
        self._check_depth(params)
        if self.degraded or len(self._pending) >= self.config.operlog_max_pending or (
                self._backpressure()):
            self.refused_writes += 1  # metrics: code 3 refusals
            raise service_unavailable()
        if write.check is not None:
            write.check(params)
        now = self.clock()
        try:
            result = write.run(now, params)
        except RpcError:
            self.engine.take_events()
            raise
        except Exception:
            log.exception("%s failed: params %r", method, params)
            self.engine.take_events()
            raise internal_error() from None
        self.oper_id += 1
        self._pending.append(_new_record((self.oper_id, now, write.log_name, params)))
        self._pending_events.append((self.oper_id, self.engine.take_events()))
        if not self._kick_scheduled:  # _kick_soon's first test, without a call per write
            self._kick_soon()
        return result

    def _backpressure(self) -> bool:
        """A sink or another pressure source (the history follower) cannot take more now.
        Plain loops: ``any()`` over generators made two generator objects per write."""
        for sink in self.sinks:
            if sink.overloaded():
                return True
        for pressing in self.pressure:  # noqa: SIM110 - any() builds a generator
            if pressing():
                return True
        return False

    def _check_depth(self, params: list[Any]) -> None:
        """Code 1 for params nested deeper than ``max_json_depth``, before anything is applied:
        such a value could not be logged, replayed or written to history.  Only params holding
        a container are walked (most calls have none)."""
        for param in params:
            kind = type(param)
            if kind is dict or kind is list:
                check_params_depth(params, self.config.max_json_depth)
                return

    # -- group commit -----------------------------------------------------------------------------

    def _kick_soon(self) -> None:
        """Start the next commit once the loop has run what it is running now (every request
        read in this round of the loop then joins the batch: started at once, the commit would
        take the first one alone and leave the others for the next)."""
        if not self._kick_scheduled and not self._flushing and self._loop is not None:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick_scheduled_now)

    def _kick_scheduled_now(self) -> None:
        self._kick_scheduled = False
        self._kick()

    def _kick(self) -> None:
        if self._flushing or not self._pending or self._loop is None or self.degraded:
            return
        batch = self._pending
        self._pending = []
        self._flushing = True
        self._commit_gen += 1
        gen = self._commit_gen
        self._commit_started = time.monotonic()
        # The writer thread hands its outcome straight to the loop (run_in_executor would wrap
        # it in an asyncio future whose callback runs one loop iteration later).
        loop = self._loop
        future = self._executor.submit(self.store.append, batch)
        future.add_done_callback(lambda f: self._call_in_loop(loop, self._committed, batch, f, gen))
        self._commit_timer = self._loop.call_later(self.commit_timeout, self._commit_timed_out,
                                                   gen)

    @staticmethod
    def _call_in_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., None],
                      *args: Any) -> None:
        """From the writer thread: run ``callback`` in the loop, unless it is closed already (a
        commit that ends after the service stopped: its outcome no longer matters)."""
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    def _commit_timed_out(self, gen: int) -> None:
        if gen == self._commit_gen and self._flushing:
            self._fail(f"commit did not finish in {self.commit_timeout}s")

    def _committed(self, batch: list[OperRecord], future: Future[None], gen: int) -> None:
        if future.cancelled():
            return  # the service stopped before this commit ran: nothing of it is durable
        error = future.exception()
        if gen != self._commit_gen or not self._flushing:
            # Given up on already (timed out): its operations were refused; if it landed after
            # all, the recovery deletes its rows before anything else is logged.
            log.warning("a refused commit of operations %d..%d finished late (%s)",
                        batch[0].id, batch[-1].id, error or "it landed")
            return
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        if error is not None:
            self._fail(f"commit failed: {error}")
            return
        self._flushing = False
        self.commit_count += 1
        took = time.monotonic() - self._commit_started
        self.commit_seconds_total += took
        metrics.COMMIT_SECONDS.observe(took)
        self.durable_id = batch[-1].id
        if self._slice_requested:  # forked while no commit is in flight (see request_slice)
            self._slice_requested = False
            self._fork_slice()
        # The next batch's commit starts now: its fsync overlaps this batch's replies and events
        # instead of waiting for them (the commit latency bounds the throughput).
        self._kick()
        self._durable_advanced()
        durable = self.durable_id
        waiters = self._waiters
        while waiters and waiters[0][0] <= durable:
            _, reply, body, _ = waiters.popleft()
            reply(body)
        pending_events = self._pending_events
        while pending_events and pending_events[0][0] <= self.durable_id:
            oper_id, events = pending_events.popleft()
            self._deliver(oper_id, events)

    def _durable_advanced(self) -> None:
        for hook in self.durable_hooks:
            hook(self.durable_id)

    async def _wait_durable(self, oper_id: int) -> None:
        assert self._loop is not None
        if self.degraded:
            raise service_unavailable()
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((oper_id, functools.partial(_settle, fut), None, None))
        self._kick_soon()
        await fut

    # -- storage failures -------------------------------------------------------------------------

    def _fail(self, reason: str, recover: bool = True) -> None:
        """Refuse every operation that is not durable, and refuse writes until the storage
        answers again (see the module docstring)."""
        first, last = self.durable_id + 1, self.oper_id
        log.error("operation log %s: operations %d..%d refused (code 3); refusing writes until "
                  "the storage takes writes again", reason, first, last)
        self.refused_commits += 1
        self.refused_writes += max(0, last - first + 1)  # metrics: code 3 refusals
        self._commit_gen += 1
        self._flushing = False
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        self.degraded = True
        self.tainted = self.tainted or last >= first
        self._pending = []
        self._pending_events.clear()
        self._slice_requested = False
        self._kill_children(self.durable_id)
        waiters, self._waiters = self._waiters, deque()
        for _, reply, body, req_id in waiters:
            error = service_unavailable()
            reply(error if body is None else jsonfmt.error_body(error.code, error.message,
                                                                req_id, self.debug))
        if recover and self._loop is not None and (self._recovery is None
                                                   or self._recovery.done()):
            self._recovery = self._loop.create_task(self._recover())

    def step_down(self, reason: str) -> None:
        """Refuse every operation not durable yet, and every write from now on, for good (code
        3; no recovery): another matchengine holds the log now (matchprocess/leader.py)."""
        if not self.degraded:
            self._fail(reason, recover=False)
        if self._recovery is not None:
            self._recovery.cancel()

    def _kill_children(self, durable_id: int) -> None:
        """Kill slice children whose slice covers refused operations: they would publish it
        as soon as the log reaches its end id again, with other operations under those ids."""
        for pid, info in list(self._slice_pending.items()):
            if info.end_oper_id > durable_id:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    log.warning("slice child %d killed: its slice holds refused operations", pid)

    async def _recover(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            # the first failure of each kind is logged, then one a minute
            quiet = attempt % int(60 / PROBE_INTERVAL) != 0
            attempt += 1
            if self.tainted:
                try:
                    replica = await loop.run_in_executor(self._executor, self._load_durable,
                                                         self.durable_id)
                    self._adopt(replica)
                except Exception as e:
                    log.log(logging.DEBUG if quiet else logging.WARNING,
                            "engine not rebuilt yet (reads refused): %s", e)
            if not self.tainted:
                try:
                    await loop.run_in_executor(self._executor, self.store.reset_to,
                                               self.durable_id)
                except Exception as e:
                    log.log(logging.DEBUG if quiet else logging.WARNING,
                            "storage still refuses writes: %s", e)
                else:
                    self.degraded = False
                    log.warning("storage takes writes again: accepting writes after operation %d",
                                self.durable_id)
                    return
            await asyncio.sleep(PROBE_INTERVAL)

    def _load_durable(self, limit: int) -> MatchEngineService:
        """A replica restored from the newest slice and the log up to ``limit``, built in the
        writer's thread (the event loop goes on refusing requests meanwhile).  It has no sinks:
        nothing sees these operations' events again."""
        replica = MatchEngineService(self.config, self.store, self.clock)
        replica._executor.shutdown()
        slices = [s for s in self.store.list_slices() if s.end_oper_id <= limit]
        if slices:
            info = slices[-1]
            for warning in replica.engine.load_state(self.store.read_slice(info)):
                log.warning("slice %d: %s", info.time, warning)
            replica.oper_id = info.end_oper_id
        replica.replay_from(self.store, limit)
        if replica.oper_id != limit:
            raise StoreError(f"the log ends at {replica.oper_id}, before the last acknowledged"
                             f" operation {limit}")
        return replica

    def _adopt(self, replica: MatchEngineService) -> None:
        """Take the rebuilt engine over (on the event loop)."""
        self.engine, self.methods = replica.engine, replica.methods
        self.oper_id = replica.oper_id
        # a slice started after the last durable operation was killed or deleted
        self._sliced_oper = min(self._sliced_oper, self.oper_id)
        self.tainted = False
        log.warning("engine rebuilt from the durable state (operation %d): reads answered again",
                    self.oper_id)

    def _deliver(self, oper_id: int, events: list[Event]) -> None:
        for sink in self.sinks:
            try:
                sink.on_events(oper_id, events)
            except Exception:
                log.exception("event sink failed at operation %d", oper_id)

    # -- slices -----------------------------------------------------------------------------------

    async def _tick(self) -> None:
        """Once a second: reap slice children, and take a slice when one is due."""
        interval = self.config.slice_interval
        while True:
            await asyncio.sleep(1.0)
            self._reap_children()
            if self.degraded:
                continue
            now = int(self.clock())
            if (now - self._last_slice_time >= interval and now % interval <= 5
                    and now > self._sliced_time):
                self._last_slice_time = now
                self.request_slice()
            elif self._oper_slice_due(now):
                self.request_slice()

    def _oper_slice_due(self, now: int) -> bool:
        """A slice by operation count (``slice_oper_interval``): due once that many operations
        were applied since the last slice was started, unless one is still being written (the
        next follows it, so children never pile up under a sustained load) or one was started
        less than SLICE_OPER_MIN_GAP seconds ago (also: a slice's tables are named by its
        second).  A slice that failed is retried after as many operations again, not every
        second."""
        every = self.config.slice_oper_interval
        if every <= 0 or self._slice_requested or self._slice_children:
            return False
        return (self.oper_id - self._sliced_oper >= every
                and now - self._sliced_time >= SLICE_OPER_MIN_GAP)

    def request_slice(self) -> None:
        """Take a slice as soon as no commit is in flight (so the forked child inherits no
        half-used database connection)."""
        if self.degraded:
            return
        if self._flushing:
            self._slice_requested = True
        else:
            self._fork_slice()

    def _slice_info(self) -> SliceInfo:
        return SliceInfo(int(self.clock()), self.oper_id, self.engine.order_id,
                         self.engine.deal_id)

    def _fork_slice(self) -> None:
        info = self._slice_info()
        self._sliced_oper, self._sliced_time = info.end_oper_id, info.time
        # taken before the fork: a child first scheduled after its engine died would read the
        # reaper's pid as its parent, and never notice the death (_child_wait_durable)
        parent = os.getpid()
        prepare_die_with_parent()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                # killed with its engine: an orphan would write for nothing on a core the
                # restart needs, and what it leaves is dropped by the next slice
                if not die_with_parent(parent):
                    raise StoreError("the engine died before its slice child started")
                release_in_child()  # the parent's ports and locks die with the parent
                self._child_write_slice(info, parent)
                code = 0
            except BaseException:
                log.exception("slice %d failed", info.time)
            finally:
                os._exit(code)
        self._slice_children.add(pid)
        self._slice_pending[pid] = info
        log.info("slice %d: child %d dumping up to operation %d", info.time, pid, info.end_oper_id)

    def _child_write_slice(self, info: SliceInfo,
                           parent: int) -> None:  # pragma: no cover - forked child
        # A child that hangs for any reason dies by SIGALRM instead of living on.
        signal.alarm(SLICE_CHILD_LIFETIME)
        store = self.store.clone()
        store.open()
        try:
            self._drop_unpublished(store, info)
            store.write_slice_data(info, self.engine.dump_state())
            self._child_wait_durable(store, info, parent)
            store.publish_slice(info)
            self._prune_slices(store, info.time)
        finally:
            store.close()

    @staticmethod
    def _drop_unpublished(store: EngineStore, info: SliceInfo) -> None:
        """Drop what slice writers killed before publishing left (their engine was killed, and
        they with it): the tables of slices ``slice_history`` does not list, once older than
        ``SLICE_ABANDONED_AFTER``.  By age, because only age proves nobody writes them any
        more: this engine has one slice child at a time and no other engine runs on its data
        (the data directory's lock, the ports), but an orphaned child where the kernel does
        not kill it, or two engines under a leader lease (a deposed one slices until it
        notices), may be at work, and tables dropped under a writer about to publish would
        make a published slice without them.  Here, when a slice begins, so that a restart
        does not pay for it; housekeeping, so a failure is logged and the slice goes on."""
        try:
            dropped = store.drop_unpublished_slices(before=info.time - SLICE_ABANDONED_AFTER)
        except StoreError as e:
            log.warning("slice %d: unpublished slices not dropped: %s", info.time, e)
            return
        if dropped:
            log.info("slice %d: dropped the tables of unpublished slice(s) %s", info.time,
                     ", ".join(map(str, dropped)))

    @staticmethod
    def _child_wait_durable(store: EngineStore, info: SliceInfo,
                            parent: int) -> None:  # pragma: no cover - forked child
        """Return once the log holds the slice's last operation, written by the engine that
        forked this child; else delete the slice and raise.  The engine must be alive *after*
        the log was seen that far: an engine killed before committing the slice's last
        operations lost them, and a restarted engine may since have logged other operations
        under the same ids, which this slice does not hold."""
        deadline = time.monotonic() + SLICE_DURABLE_TIMEOUT
        while True:
            durable = store.last_oper_id() >= info.end_oper_id
            if os.getppid() != parent:
                store.delete_slice(info)
                raise StoreError("the engine died before the slice's operations were seen "
                                 "durable: not published")
            if durable:
                return
            if time.monotonic() > deadline:
                store.delete_slice(info)
                raise StoreError("operations of the slice never became durable")
            time.sleep(0.02)

    def _write_slice_inline(self, info: SliceInfo) -> None:
        self._drop_unpublished(self.store, info)
        self.store.write_slice_data(info, self.engine.dump_state())
        self.store.publish_slice(info)
        self._prune_slices(self.store, info.time)
        self.last_slice = info
        log.info("slice %d written (operation %d)", info.time, info.end_oper_id)

    def _prune_slices(self, store: EngineStore, now: int) -> None:
        """The original's retention (``slice_keeptime``) and, with slices by operation count,
        the thinning that keeps their number as with time slices alone."""
        store.delete_old_slices(now, self.config.slice_keeptime)
        if self.config.slice_oper_interval > 0:
            store.thin_slices(self.config.slice_interval)

    def _reap_children(self, wait: bool = False, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for pid in list(self._slice_children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
                while wait and not done and time.monotonic() < deadline:
                    time.sleep(0.02)
                    done, status = os.waitpid(pid, os.WNOHANG)
                if wait and not done:
                    log.error("slice child %d did not finish in %ss: killed", pid, timeout)
                    os.kill(pid, signal.SIGKILL)
                    done, status = os.waitpid(pid, 0)
            except ChildProcessError:
                self._slice_children.discard(pid)
                self._slice_pending.pop(pid, None)
                continue
            if done:
                self._slice_children.discard(pid)
                info = self._slice_pending.pop(pid, None)
                if os.waitstatus_to_exitcode(status) != 0:
                    log.error("slice child %d failed with status %d", pid, status)
                elif info is not None:
                    self.last_slice = info

    async def make_slice_now(self) -> None:
        """Take a slice and wait until it is published (CLI ``makeslice``, tests)."""
        self.request_slice()
        while self._slice_requested or self._slice_children:
            await asyncio.sleep(0.02)
            self._reap_children()
