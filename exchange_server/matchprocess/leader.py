"""Active/standby matchengines: a leader lease in the log database, fenced log writes.

Why: one matchengine holds the whole exchange; when its machine dies, nothing takes over until
an operator starts one elsewhere.  With a ``leader`` block in their configs, several
``exchange-server matchengine`` processes share one log database and exactly one of them is
*active*: it holds the lease, keeps its RPC port open and writes the log.  The others are
*standbys*: their RPC port stays closed (so the gateways' address lists lead to the active),
and they keep a warm engine by tailing the committed log, ready to take over.

The lease is one row of ``leader_lease`` (name ``matchengine``): ``epoch``, ``holder``,
``expires`` in the database's own clock (``UNIX_TIMESTAMP(NOW(6))``, never a host's), and
``writer``, the connection id of the active's last fenced write.  Every change of leader is a
row of ``leader_history``.  Safety does not rest on clocks: once active, the process's log store
is fenced (store_mysql.set_fence), so every log append locks the lease row and refuses to
commit unless the epoch is still its own; a takeover bumps the epoch with a conditional UPDATE
(exactly one winner), which waits for that row lock, so a deposed leader can never commit
again, and the new one replays everything committed before the bump.

Speed: a standby takes over when the lease expired in the database's clock (a stopped or
partitioned active), or at once when the active's process is gone: the active's lease
connection holds the MariaDB named lock ``matchengine_leader_<epoch>_<database>`` (named
locks are server-wide: the database keeps exchanges sharing a server apart), and a connection
of a dead process is closed by its kernel, which frees the lock.  (A named lock alone cannot be the
lease: a stopped process's connection keeps it for hours.)  Before taking over an expired lease
the standby KILLs the old writer connection, whose open transaction would otherwise hold the
lease row's lock for as long as the old process is stopped.

The active renews the lease every ``renew`` seconds and refuses writes by itself (code 3) when
it could not renew for ``lease - renew`` seconds by its monotonic clock: only to fail fast, the
epoch check is the guarantee.  A deposed active (its renewal or a fenced write finds another
epoch) logs it at FATAL, refuses every waiting request and every write with code 3, closes its
RPC port and exits with ``daemon.RESTART_STATUS``: its watchdog starts a fresh worker, which
comes back as a standby.

Events: the standby's engine produces the events of what it replays.  History needs none of
them (the history follower of the new active resumes from its own mark in the history database:
exactly once).  Bus messages are at least once: the standby keeps the events of the operations
after the bus publisher's mark (:class:`HeldEvents`, trimmed as the mark moves) and hands them
to the new active's publisher.  The mark (a row of the log database, bus/mark.py) is read by
:func:`bus_mark_reader` and the publisher made by :func:`make_publisher`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pymysql

from exchange_server.bus.kafka import KafkaTransport
from exchange_server.bus.mark import publisher_mark
from exchange_server.bus.publisher import BusPublisher
from exchange_server.common import metrics
from exchange_server.common.config import LeaderConfig, MatchEngineConfig, MysqlConfig
from exchange_server.matchengine.core.model import Event
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.sink import EventSink
from exchange_server.matchengine.store import EngineStore, OperRecord, StoreError
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.storage import mysql as mysql_db

log = logging.getLogger("exchange_server.leader")

#: The lease's row in ``leader_lease``.
LEASE_NAME = "matchengine"
#: Seconds between two looks of a standby at the log and the lease.
POLL_INTERVAL = 0.1
#: Seconds a takeover waits for the lease row's lock (then tries again at the next poll).
LOCK_WAIT = 2
#: Socket timeouts of the lease connection.
CONNECT_TIMEOUT = 3
IO_TIMEOUT = 5
#: Seconds between two reads of the bus mark by a standby.
MARK_INTERVAL = 1.0

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS leader_lease ("
    " name VARCHAR(64) NOT NULL PRIMARY KEY,"
    " epoch BIGINT UNSIGNED NOT NULL,"
    " holder VARCHAR(255) NOT NULL,"
    " expires DOUBLE NOT NULL,"
    " writer BIGINT UNSIGNED NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS leader_history ("
    " epoch BIGINT UNSIGNED NOT NULL,"
    " name VARCHAR(64) NOT NULL,"
    " holder VARCHAR(255) NOT NULL,"
    " previous VARCHAR(255) NOT NULL,"
    " taken_at DOUBLE NOT NULL,"
    " PRIMARY KEY (name, epoch)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
]

_NOW = "UNIX_TIMESTAMP(NOW(6))"


def lock_name(database: str, lease: str, epoch: int) -> str:
    """The named lock the active of ``epoch`` holds while its process lives.

    Why the database in it: MariaDB's named locks are server-wide, so two exchanges whose log
    databases share a server (or two test runs) would otherwise hold each other's epochs.
    A name past MariaDB's 64 characters names the database by a digest instead."""
    name = f"{lease}_leader_{epoch}_{database}"
    if len(name) <= 64:
        return name
    return f"{lease}_leader_{epoch}_{hashlib.sha256(database.encode()).hexdigest()[:24]}"


def legacy_lock_name(lease: str, epoch: int) -> str:
    """The name versions before the database was part of it used (``lock_name``).

    Why it is still held (best effort, never required): a pair upgraded one engine at a time
    runs an old and a new engine side by side; each must see the other's active alive, or each
    would take over from a healthy active in turn (every takeover refuses writes, restarts a
    worker and replays).  To be dropped once no release before this one runs anywhere."""
    return f"{lease}_leader_{epoch}"


def holder_id(config: MatchEngineConfig) -> str:
    """The configured ``instance``, else ``host:rpc-port``."""
    assert config.leader is not None and config.svr is not None
    if config.leader.instance:
        return config.leader.instance
    port = config.svr.bind[0].rsplit(":", 1)[-1]
    return f"{socket.gethostname()}:{port}"


def check_config(leader: LeaderConfig) -> None:
    from exchange_server.common.config import ConfigError

    if leader.renew * 2 > leader.lease:
        raise ConfigError("leader.renew: must be at most half of leader.lease")


@dataclass(frozen=True)
class LeaseRow:
    epoch: int
    holder: str
    expires: float
    now: float
    writer: int | None

    @property
    def expired(self) -> bool:
        return self.expires < self.now


class LeaseStore:
    """The lease row, on a connection of its own (blocking: used from one thread)."""

    def __init__(self, cfg: MysqlConfig, name: str = LEASE_NAME) -> None:
        self.cfg = cfg
        self.name = name
        self._conn: pymysql.Connection | None = None
        #: the epoch whose named lock this connection holds
        self._locked: int | None = None

    def _lock_name(self, epoch: int) -> str:
        return lock_name(self.cfg.name, self.name, epoch)

    def _get_locks(self, epoch: int) -> bool:
        """Take ``epoch``'s named lock, and its legacy name when free (see ``legacy_lock_name``;
        another exchange on the server may hold that one, so it is never required)."""
        (got,), = self._run("SELECT GET_LOCK(%s, 0)", (self._lock_name(epoch),))
        if got == 1:
            self._run("SELECT GET_LOCK(%s, 0)", (legacy_lock_name(self.name, epoch),))
        return got == 1

    def _release_locks(self, epoch: int) -> None:
        self._run("SELECT RELEASE_LOCK(%s), RELEASE_LOCK(%s)",
                  (self._lock_name(epoch), legacy_lock_name(self.name, epoch)))

    def _legacy_holder_here(self, epoch: int) -> bool:
        """Whether a connection to this log database holds ``epoch``'s legacy lock: an active
        of a version before the database was in the name (one on another database is another
        exchange's)."""
        return bool(self._run(
            "SELECT 1 FROM information_schema.PROCESSLIST"
            " WHERE ID = IS_USED_LOCK(%s) AND DB = DATABASE()",
            (legacy_lock_name(self.name, epoch),)))

    def _connection(self) -> pymysql.Connection:
        if self._conn is None:
            self._locked = None
            self._conn = mysql_db.connect(self.cfg, connect_timeout=CONNECT_TIMEOUT,
                                          read_timeout=IO_TIMEOUT, write_timeout=IO_TIMEOUT)
            with self._conn.cursor() as cur:
                cur.execute("SET SESSION innodb_lock_wait_timeout = %s", (LOCK_WAIT,))
        return self._conn

    def _run(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """One statement in its own transaction; a connection error drops the connection."""
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                cur.execute(sql, args)
                rows = list(cur.fetchall())
            conn.commit()
            return rows
        except pymysql.MySQLError:
            self.close()
            raise

    def _execute(self, sql: str, args: Any = None) -> int:
        """One change in its own transaction: the rows it changed."""
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                changed = int(cur.execute(sql, args))
            conn.commit()
            return changed
        except pymysql.MySQLError:
            self.close()
            raise

    def open(self) -> None:
        mysql_db.ensure_database(self.cfg)
        for ddl in SCHEMA:
            self._run(ddl)
        self._run("INSERT IGNORE INTO leader_lease (name, epoch, holder, expires)"
                  " VALUES (%s, 0, '', 0)", (self.name,))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._locked = None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def read(self) -> LeaseRow:
        rows = self._run(f"SELECT epoch, holder, expires, {_NOW}, writer FROM leader_lease"
                         " WHERE name = %s", (self.name,))
        if not rows:
            raise StoreError(f"leader_lease has no row {self.name!r}")
        epoch, holder, expires, now, writer = rows[0]
        return LeaseRow(int(epoch), holder, float(expires), float(now),
                        None if writer is None else int(writer))

    def holder_gone(self, epoch: int) -> bool:
        """Whether no live connection holds the named lock of ``epoch`` (its holder's process
        ended).  The lock is let go again at once.  An active of an earlier version holds only
        the legacy name (``legacy_lock_name``): it counts as alive too."""
        (got,), = self._run("SELECT GET_LOCK(%s, 0)", (self._lock_name(epoch),))
        if got != 1:
            return False
        self._run("SELECT RELEASE_LOCK(%s)", (self._lock_name(epoch),))
        return not self._legacy_holder_here(epoch)

    def take(self, row: LeaseRow, holder: str, lease: float) -> int | None:
        """Try to become the holder after ``row``'s epoch: the new epoch, or None when another
        candidate was first or the row stays locked (then try again later)."""
        if row.expired and row.writer is not None:
            self._kill(row.writer)
        epoch = row.epoch + 1
        if not self._get_locks(epoch):
            return None
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                conn.begin()
                taken = cur.execute(
                    f"UPDATE leader_lease SET epoch = %s, holder = %s, expires = {_NOW} + %s,"
                    " writer = NULL WHERE name = %s AND epoch = %s",
                    (epoch, holder, lease, self.name, row.epoch))
                if taken == 1:
                    cur.execute("INSERT INTO leader_history (epoch, name, holder, previous,"
                                f" taken_at) VALUES (%s, %s, %s, %s, {_NOW})",
                                (epoch, self.name, holder, row.holder))
                    conn.commit()
                    self._locked = epoch
                    return epoch
                conn.rollback()
        except pymysql.err.OperationalError as e:
            if e.args[0] != 1205:  # lock wait timeout: the row stays locked; try again later
                self.close()
                raise
            conn.rollback()
            log.warning("lease row locked for %ss (a stopped leader's writer?)", LOCK_WAIT)
        except pymysql.MySQLError:
            self.close()
            raise
        self._release_locks(epoch)
        return None

    def _kill(self, connection_id: int) -> None:
        """End a stopped leader's writer connection (its open transaction may hold the lease
        row's lock); nothing if it is gone already."""
        # only a connection to this database: after a server restart the id may be another's
        if not self._run("SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s"
                         " AND DB = DATABASE()", (connection_id,)):
            return
        try:
            self._run(f"KILL CONNECTION {int(connection_id)}")
            log.warning("killed connection %d of the previous leader's writer", connection_id)
        except pymysql.err.OperationalError as e:
            if e.args[0] not in (1094,):  # unknown thread id
                raise

    def renew(self, epoch: int, holder: str, lease: float) -> bool:
        """Extend the lease of ``epoch``; False when the epoch is no longer ours."""
        if self._locked != epoch and self._get_locks(epoch):  # a new connection: lock back
            self._locked = epoch
        return self._execute(f"UPDATE leader_lease SET expires = {_NOW} + %s"
                             " WHERE name = %s AND epoch = %s AND holder = %s",
                             (lease, self.name, epoch, holder)) == 1


class HeldEvents:
    """A standby's event sink: keeps the events of the operations after the bus mark, for the
    publisher of the active it may become; trimmed as the current active's mark moves on.
    Bounded: past ``limit`` operations it drops them all and says so (``complete`` False)."""

    def __init__(self, mark: Callable[[], int], limit: int) -> None:
        self._mark = mark
        self.limit = limit
        self.events: deque[tuple[int, list[Event]]] = deque()
        self.floor = 0
        self.complete = True
        self.original_end = 0

    def durable_mark(self) -> int:
        self.floor = max(self.floor, self._mark())  # start_after may have raised it
        return self.floor

    def start_after(self, oper_id: int) -> None:
        self.original_end = oper_id
        self.floor = max(self.floor, oper_id)

    def on_events(self, oper_id: int, events: list[Event]) -> None:
        if oper_id <= self.floor or not self.complete:
            return
        self.events.append((oper_id, events))
        if len(self.events) > self.limit:
            log.error("standby: more than %d operations after the bus mark %d; the takeover "
                      "will restore from a slice instead", self.limit, self.floor)
            self.events.clear()
            self.complete = False

    def overloaded(self) -> bool:
        return False

    def reset(self) -> None:
        """Forget everything held (the engine is restored again, its replay refills it)."""
        self.events.clear()
        self.complete = True
        self.floor = self.original_end

    def trim(self) -> None:
        """Forget the operations the bus has (the mark moved on)."""
        self.floor = max(self.floor, self._mark())
        while self.events and self.events[0][0] <= self.floor:
            self.events.popleft()

    def covers(self, mark: int) -> bool:
        """Whether every operation after ``mark`` up to the engine's is held."""
        return self.complete and mark >= self.floor


def restore_into(service: MatchEngineService, store: EngineStore, sink: EventSink) -> None:
    """Restore a fresh engine (newest slice the sink allows, then the log; its replay feeds
    ``sink``) and give it to ``service``, which keeps its sinks, hooks and listeners."""
    fresh = MatchEngineService(service.config, store)
    fresh._executor.shutdown()
    fresh.add_sink(sink)
    fresh.restore()
    service.engine, service.methods = fresh.engine, fresh.methods
    service.oper_id = fresh.oper_id


class _Tail:
    """The log as ``replay_from`` reads it, remembering the last record it handed out."""

    def __init__(self, store: EngineStore) -> None:
        self.store = store
        self.last: OperRecord | None = None

    def read_operlog_rows(self, after_id: int) -> Any:
        for page in self.store.read_operlog_rows(after_id):
            if page:
                self.last = OperRecord(*page[-1])
            yield page


def bus_mark_reader(config: MatchEngineConfig) -> Callable[[], int]:
    """Reads the bus publisher's durable mark as the active left it, from the log database
    (one connection kept for the standby's periodic reads)."""
    mark = publisher_mark(config)
    return lambda: mark.load().oper_id


def make_publisher(config: MatchEngineConfig) -> BusPublisher:
    """The active's bus publisher, its mark read now (the seam, as :func:`bus_mark_reader`)."""
    assert config.brokers is not None
    return BusPublisher(KafkaTransport(config.brokers, config.kafka_topic_prefix),
                        publisher_mark(config), max_pending=config.kafka_max_pending)


class Leadership:
    """The lease's life in one process: standby (tail the log, poll the lease), takeover,
    active (renew), deposed.  ``activate`` starts the active's components once the lease is
    won and the log replayed; ``step_down`` stops taking requests when it is lost."""

    def __init__(self, config: MatchEngineConfig, store: MysqlEngineStore,
                 service: MatchEngineService, held: HeldEvents,
                 activate: Callable[[], Awaitable[None]],
                 step_down: Callable[[], Awaitable[None]]) -> None:
        assert config.leader is not None and config.db_log is not None
        self.leader = config.leader
        self.store = store
        self.service = service
        self.held = held
        self.activate = activate
        self.step_down = step_down
        self.holder = holder_id(config)
        self.lease = LeaseStore(config.db_log)
        self.active = False
        self.deposed = False
        #: the epoch held, or the newest seen
        self.epoch = 0
        self.changes = 0
        #: standby: the log's last id minus the one applied
        self.lag = 0
        self._renewed = 0.0
        self._tail = _Tail(store)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leader")
        self._task: asyncio.Task[None] | None = None
        self._quiet_until = 0.0

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self._in_thread(self.lease.open)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self._in_thread(self.lease.close)
        self._executor.shutdown(wait=True)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def may_write(self) -> bool:
        """Active, not deposed, and renewed recently enough by this host's monotonic clock."""
        margin = self.leader.lease - self.leader.renew
        return self.active and not self.deposed and time.monotonic() - self._renewed < margin

    def register_gauges(self) -> None:
        g = metrics.gauges("matchengine")
        g.add("leader", "1 on the active matchengine, 0 on a standby or a deposed one",
              lambda: 1 if self.active and not self.deposed else 0)
        g.add("leader_epoch", "The leader lease epoch this matchengine holds, or the newest "
              "it has seen", lambda: self.epoch)
        g.add("standby_lag_operations", "Standby: operations committed to the log that it has "
              "not applied yet (0 on the active)", lambda: 0 if self.active else self.lag)
        g.add("leader_changes", "How many times this matchengine took over the leadership",
              lambda: self.changes)

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._lead()
        except Exception:  # a bug, not the storage: a fresh worker (as a standby) is better
            log.critical("matchengine leadership failed; restarting", exc_info=True)
            self.deposed, self.active = True, False
            await self.step_down()

    async def _lead(self) -> None:
        previous = await self._standby()
        # renewed from now on: starting the active's components may take longer than the lease
        # (a first start creates the history tables)
        holding = asyncio.create_task(self._hold())
        try:
            await self.activate()
        except Exception:
            holding.cancel()
            log.critical("matchengine could not start as the active after taking over epoch "
                         "%d; stepping down", self.epoch, exc_info=True)
            await self._depose(self.epoch, "nobody (the takeover failed)")
            return
        if not self.deposed:
            self.active = True
            self.changes += 1
            log.critical("matchengine leader change: epoch %d now held by %s (was %s)",
                         self.epoch, self.holder, previous or "none")
        try:
            await holding
        finally:
            holding.cancel()

    async def _standby(self) -> str:
        """Tail the log and poll the lease until this process wins it; returns the previous
        holder.  The log after the win is replayed before returning."""
        log.warning("matchengine %s: standby (lease %ss, renew %ss)", self.holder,
                    self.leader.lease, self.leader.renew)
        next_mark = 0.0
        while True:
            try:
                if time.monotonic() >= next_mark:
                    await self._in_thread(self.held.trim)
                    next_mark = time.monotonic() + MARK_INTERVAL
                won = await self._in_thread(self._standby_step)
            except (StoreError, pymysql.MySQLError) as e:
                self._complain(f"standby: {e}")
                await asyncio.sleep(1.0)
                continue
            if won is not None:
                return won
            await asyncio.sleep(POLL_INTERVAL)

    def _follow_log(self) -> None:
        """(In the leader thread.)  Apply what the log has after the engine's operation."""
        if self._rewritten():
            log.warning("standby: the log no longer holds operation %d as applied (the active "
                        "deleted a refused commit that had landed): restoring again",
                        self.service.oper_id)
            self.held.reset()
            restore_into(self.service, self.store, self.held)
            self._tail.last = None
        self.service.replay_from(self._tail)  # type: ignore[arg-type]

    def _rewritten(self) -> bool:
        """Whether the last record applied is no longer in the log as it was.  The log is
        append-only except for one case: an active whose commit timed out refuses its
        operations and, once the storage answers, deletes their rows if they landed after all
        (service.py, storage failures); a standby may have applied them meanwhile."""
        last = self._tail.last
        if last is None or last.id != self.service.oper_id:
            return False
        now = next(iter(self.store.read_operlog(last.id - 1)), None)
        return now is None or (now.id, now.time, now.method, now.params) != (
            last.id, last.time, last.method, last.params)

    def _standby_step(self) -> str | None:
        """(In the leader thread.)  Apply what the log has; take the lease if it is free."""
        last = self.store.last_oper_id()
        self._follow_log()
        self.lag = max(0, last - self.service.oper_id)
        row = self.lease.read()
        self.epoch = max(self.epoch, row.epoch)
        if not (row.expired or self.lease.holder_gone(row.epoch)):
            return None
        started = time.monotonic()
        epoch = self.lease.take(row, self.holder, self.leader.lease)
        if epoch is None:
            return None
        self._renewed = started
        self.epoch = epoch
        self.store.set_fence(LEASE_NAME, epoch)
        # everything committed before the epoch moved is in the log now, nothing after it
        # (in tables the cached list may not know yet)
        self.store.forget_operlog_tables()
        self._follow_log()
        self.lag = 0
        why = "expired" if row.expired else "its process is gone"
        log.warning("took over epoch %d after operation %d (lease of %s %s)", epoch,
                    self.service.oper_id, row.holder or "nobody", why)
        return row.holder

    async def _hold(self) -> None:
        """Renew every ``renew`` seconds until deposed."""
        while True:
            deadline = time.monotonic() + self.leader.renew
            while time.monotonic() < deadline:
                if self.store.fenced_off:
                    break
                await asyncio.sleep(min(POLL_INTERVAL, self.leader.renew))
            started = time.monotonic()
            try:
                mine = await self._in_thread(self.lease.renew, self.epoch, self.holder,
                                             self.leader.lease)
            except (StoreError, pymysql.MySQLError) as e:
                self._complain(f"cannot renew the lease of epoch {self.epoch}: {e}")
                continue
            if mine:
                self._renewed = started
                continue
            row = await self._lease_or_none()
            await self._depose(row.epoch if row else self.epoch + 1,
                               row.holder if row else "another matchengine")
            return

    async def _lease_or_none(self) -> LeaseRow | None:
        try:
            row: LeaseRow = await self._in_thread(self.lease.read)
            return row
        except (StoreError, pymysql.MySQLError):
            return None

    async def _depose(self, epoch: int, holder: str) -> None:
        self.deposed = True
        self.active = False
        self.epoch = max(self.epoch, epoch)
        log.critical("matchengine deposed: epoch %d taken by %s; refusing writes", epoch, holder)
        await self.step_down()

    def _complain(self, text: str) -> None:
        """Log a failure at most every 10 s (a database down for a while is one line)."""
        now = time.monotonic()
        if now >= self._quiet_until:
            log.error("%s", text)
            self._quiet_until = now + 10.0
