"""The follower: trade history written by a second process that tails the operation log.

The engine is deterministic, so a replica fed the same log produces exactly the events the
matching engine produced.  The follower is such a replica: a process of its own that restores
from the newest slice its history has caught up with, replays the log, and from then on reads
each newly committed operation, re-executes it and hands its events to the history writer.
Building and inserting history rows then costs the matching process nothing (it used to take
about as long as matching itself, under the same GIL), and the rows are still derived from the
durable log only, so a crash of either process loses or doubles nothing.

The matching process watches the follower through two shared counters (its last applied
operation and its unwritten history rows) for backpressure, and restarts it if it dies.  A third
counter, set by the matching process, is the last operation acknowledged durable: the follower
never applies a record beyond it, so a commit that was refused (timed out, then landed after
all, and deleted again by the engine's recovery) never reaches the history.  A store that
cannot be opened (full disk, database down) is one error line and an ordinary exit: the
matching process restarts the follower a second later.

A log record the follower cannot decode or apply is fatal (docs/operations.md, "A log record
that cannot be replayed"), and so is a gap in the log (the service's ``replay_from`` raises the
same ``OperLogGap`` for it as at restore): retrying cannot help and skipping would lose history.  The
follower logs one fatal line naming the operation id and exits with :data:`FATAL_EXIT`; the
matching process logs the fatal alert and does NOT restart it.  History then stops at the
operation before, and the engine refuses writes with code 3 once it is ``max_lag`` operations
ahead (the ordinary backpressure), until an operator repairs the cause and restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exchange_server.common import gctune, logs
from exchange_server.common.config import load_matchengine
from exchange_server.common.names import Storage
from exchange_server.matchengine.store import StoreError

log = logging.getLogger("exchange_server.follower")

#: Seconds between looks at the shared counters when nothing new was acknowledged.
POLL_INTERVAL = 0.002
#: Shortest time between two reads of the log.  The log is only read when the matching process
#: has acknowledged operations the follower has not applied (the shared ``limit`` counter), and
#: then at most this often: under load a read takes tens of operations instead of a few, and
#: an idle engine costs the log's database no queries at all.  (History is flushed every 0.1 s
#: anyway, so this delays it by nothing that shows.)
READ_INTERVAL = 0.01
#: Operations the follower may lag behind before the engine refuses writes (code 3).
DEFAULT_MAX_LAG = 200_000
#: Exit status of a follower stopped by a log record it cannot decode or apply (not restarted).
FATAL_EXIT = 75


@dataclass(frozen=True)
class FollowerSpec:
    """What the follower process needs to build its replica (picklable)."""

    config: dict[str, Any]
    embedded: bool
    data_dir: str
    storage: Storage
    log_level: int = logging.INFO


def history_store(spec: FollowerSpec) -> Any:
    """The follower's history database (SQLite under the data dir, or the config's
    ``db_history``)."""
    # Imported here: the follower is started with "spawn" and builds everything itself; and
    # MySQL's client only for MySQL (the engine checks the schema on its start-up path).
    if spec.storage == Storage.MYSQL:
        from exchange_server.history.store_mysql import MysqlHistoryStore

        config = load_matchengine(spec.config, embedded=spec.embedded)
        assert config.db_history is not None
        return MysqlHistoryStore(config.db_history)
    from exchange_server.history.store_sqlite import SqliteHistoryStore

    return SqliteHistoryStore(Path(spec.data_dir))


def _build(spec: FollowerSpec) -> tuple[Any, Any, Any]:
    from exchange_server.history.writer import HistoryWriter
    from exchange_server.matchengine.service import MatchEngineService
    from exchange_server.matchengine.store import EngineStore

    config = load_matchengine(spec.config, embedded=spec.embedded)
    store: EngineStore
    if spec.storage == Storage.MYSQL:
        from exchange_server.matchengine.store_mysql import MysqlEngineStore

        assert config.db_log is not None
        store = MysqlEngineStore(config.db_log)
    else:
        from exchange_server.matchengine.store_sqlite import SqliteEngineStore

        store = SqliteEngineStore(Path(spec.data_dir))
    history = HistoryWriter(history_store(spec), max_pending_rows=config.history_max_pending)
    service = MatchEngineService(config, store)
    service.add_sink(history)
    # the replica only writes history: no bus events, no replies (Engine.set_history_only)
    service.set_history_only(True)
    return store, service, history


def follower_main(spec: FollowerSpec, applied: Any, pending: Any,
                  stop: multiprocessing.synchronize.Event, parent: int, limit: Any) -> None:
    """The follower process: restore, then apply every new log record until told to stop;
    on stop, apply what is left and write all history before exiting.  A record that cannot
    be decoded or applied ends it with FATAL_EXIT after one fatal log line."""
    logs.setup(spec.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _follow(spec, applied, pending, stop, parent, limit)
    except StoreError as e:
        log.critical("history follower stopped: %s; history stays at operation %d until this is "
                     "repaired and the service restarted", e, applied.value)
        logging.shutdown()
        os._exit(FATAL_EXIT)


def _follow(spec: FollowerSpec, applied: Any, pending: Any,
            stop: multiprocessing.synchronize.Event, parent: int, limit: Any) -> None:
    store, service, history = _build(spec)
    try:
        store.open()
    except StoreError as e:
        # e.g. a full disk: one line, and the parent restarts us a second later
        log.error("history follower cannot start: %s", e)
        sys.exit(1)
    gctune.tune()
    service.restore(limit.value, freeze_loaded=True)
    gctune.freeze_startup_state()
    history.start()
    applied.value = service.oper_id

    def report() -> None:
        applied.value = service.oper_id
        pending.value = history.pending_rows

    last_read = 0.0
    try:
        while True:
            # A parent killed without a word (SIGKILL) leaves us orphaned: finish and go; the
            # next matching process starts its own follower from the history mark.
            stopping = stop.is_set() or os.getppid() != parent
            count = 0
            if stopping or limit.value > service.oper_id:
                # something acknowledged that we have not applied: read it, at most every
                # READ_INTERVAL (bigger reads, fewer queries on the log's database)
                wait = last_read + READ_INTERVAL - time.monotonic()
                if wait > 0 and not stopping:
                    time.sleep(wait)
                last_read = time.monotonic()
                count = service.replay_from(store, limit.value, report)
            report()
            if history.failure is not None:
                raise StoreError(history.failure)
            if stopping:
                break
            if not count:
                time.sleep(POLL_INTERVAL)
    finally:
        # what was applied before a bad record is still written
        applied.value = service.oper_id
        history.stop(timeout=30)
        pending.value = history.pending_rows
        store.close()


class FollowerProcess:
    """The matching process's handle on its follower."""

    def __init__(self, spec: FollowerSpec, max_lag: int = DEFAULT_MAX_LAG,
                 max_pending_rows: int | None = None) -> None:
        self.spec = spec
        self.max_lag = max_lag
        self.max_pending_rows = max_pending_rows
        self._ctx = multiprocessing.get_context("spawn")
        self.applied = self._ctx.Value("q", 0, lock=False)
        self.pending = self._ctx.Value("q", 0, lock=False)
        #: the last operation the engine acknowledged durable: the follower reads no further
        self.limit = self._ctx.Value("q", 0, lock=False)
        self._stop = self._ctx.Event()
        self._process: Any = None
        self.restarts = 0
        #: Set when the follower stopped on a record it cannot apply (it is not restarted).
        self.failed = False
        #: :meth:`create_schema` running in a thread (:meth:`check_schema_soon`), if started
        self._schema: asyncio.Future[None] | None = None

    def create_schema(self) -> None:
        """Create the history tables now: the follower does too, but readhistory may be asked
        before it has run.  And start ``applied`` at the history's stored mark: the follower
        reports only once it has restored (a second or more for a large slice), and until then
        a lag counted from 0 would refuse every write (code 3) of an engine more than
        ``max_lag`` operations old, whatever its history's real lag."""
        store = history_store(self.spec)
        store.open()
        try:
            mark = store.read_mark()
        finally:
            store.close()
        self.applied.value = max(self.applied.value, mark)

    async def check_schema_soon(self) -> None:
        """Start :meth:`create_schema` in a thread and return: :meth:`running` waits for it.
        Why: opening the history database after a SIGKILL checkpoints the WAL its killed
        follower left (megabytes, then an fsync: 0.05-0.3 s on the shared machine), I/O that
        SQLite does without the GIL, so it can go on while the engine restores."""
        self._schema = asyncio.get_running_loop().run_in_executor(None, self.create_schema)

    async def forget_schema_check(self) -> None:
        """Wait for a check :meth:`running` never took (the start failed before it), so no
        thread outlives the stop; its error was the start's to report, not the stop's."""
        schema, self._schema = self._schema, None
        if schema is not None:
            with contextlib.suppress(Exception):
                await schema

    async def watch(self) -> None:
        """Run for the matching process's life: restart the follower whenever it dies."""
        while True:
            await asyncio.sleep(1.0)
            self.check()

    @contextlib.asynccontextmanager
    async def running(self, stop_timeout: Callable[[], float]) -> AsyncIterator[FollowerProcess]:
        """The follower for the block: schema, process and its watchdog; stopped after, in a
        thread, waiting at most ``stop_timeout()`` seconds (asked then: shorter when failing).
        The schema is the check :meth:`check_schema_soon` started, if any (its error, if it
        failed, is raised here), else checked now."""
        schema, self._schema = self._schema, None
        if schema is not None:
            await schema
        else:
            self.create_schema()
        self.start()
        watch = asyncio.create_task(self.watch())
        try:
            yield self
        finally:
            watch.cancel()
            await asyncio.get_running_loop().run_in_executor(None, self.stop, stop_timeout())

    def start(self) -> None:
        self._stop.clear()
        self._process = self._ctx.Process(
            target=follower_main, name="exchange-server-follower", daemon=True,
            # the parent's pid, not our getppid(): the parent may die before we look
            args=(self.spec, self.applied, self.pending, self._stop, os.getpid(), self.limit))
        self._process.start()

    def check(self) -> None:
        """Restart the follower if it died (it resumes from its own history mark), unless it
        stopped on a log record it cannot apply: that is alerted once and left stopped."""
        if self.failed or self._process is None or self._process.is_alive():
            return
        code = self._process.exitcode
        if code == FATAL_EXIT:
            self.failed = True
            log.critical("history follower stopped on operation %d, a log record it cannot "
                         "decode or apply (its reason is logged above); history stays at "
                         "operation %d and writes are refused with code 3 once %d operations "
                         "behind; repair the cause and restart the service", self.applied.value + 1,
                         self.applied.value, self.max_lag)
            return
        log.error("history follower exited with %s: restarting", code)
        self.restarts += 1
        self.start()

    def set_durable(self, oper_id: int) -> None:
        """The engine's hook: operations up to ``oper_id`` are durable and acknowledged."""
        self.limit.value = oper_id

    def overloaded(self, oper_id: int) -> bool:
        """Backpressure for the engine: too far behind, or too much history unwritten."""
        if oper_id - self.applied.value > self.max_lag:
            return True
        return self.max_pending_rows is not None and self.pending.value >= self.max_pending_rows

    def caught_up(self, oper_id: int) -> bool:
        return self.applied.value >= oper_id and self.pending.value == 0

    def stop(self, timeout: float = 60.0) -> None:
        """Let the follower apply the rest of the log and write its history, then end it."""
        process = self._process
        if process is None:
            return
        self._stop.set()
        process.join(timeout)
        if process.is_alive():
            log.error("history follower did not stop in %ss: killed", timeout)
            process.kill()
            process.join()
        self._process = None
