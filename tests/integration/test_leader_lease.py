"""The leader lease and the fenced operation log, on the real MariaDB.

Why: active/standby matchengines are only safe if a deposed leader can never commit to the log,
whatever its clock says.  These tests drive the lease (matchprocess/leader.py) and the fenced
store (store_mysql) directly: exactly one candidate wins an epoch, an append, a reset and a
slice publication under a stale epoch commit nothing and raise ``Deposed``, a stopped leader's
open transaction on the lease row is killed by the takeover, a dead holder's named lock frees
at once, and a standby notices when the log it applied was rewritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from exchange_server.common.config import MysqlConfig, load_matchengine
from exchange_server.matchengine.core.engine import EngineState
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import Deposed, OperRecord, SliceInfo, StoreError
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchprocess.leader import (
    LEASE_NAME,
    HeldEvents,
    Leadership,
    LeaseRow,
    LeaseStore,
    legacy_lock_name,
)
from exchange_server.storage import mysql as mysql_db
from tests.support.server import SHARED
from tests.support.waiting import wait_until

pytestmark = pytest.mark.mysql


@pytest.fixture
def cfg(mysql_config: Callable[..., MysqlConfig]) -> MysqlConfig:
    return mysql_config("test_lease")


@pytest.fixture
def leases(cfg: MysqlConfig) -> Iterator[Callable[[], LeaseStore]]:
    opened: list[LeaseStore] = []

    def make() -> LeaseStore:
        lease = LeaseStore(cfg)
        lease.open()
        opened.append(lease)
        return lease

    yield make
    for lease in opened:
        lease.close()


@pytest.fixture
def store(cfg: MysqlConfig) -> Iterator[MysqlEngineStore]:
    s = MysqlEngineStore(cfg)
    s.open()
    yield s
    s.close()


def records(first: int, count: int) -> list[OperRecord]:
    return [OperRecord(i, 1_700_000_000.0 + i, "update_balance",
                       [1, "BTC", "deposit", i, "1"]) for i in range(first, first + count)]


def expired(lease: LeaseStore) -> LeaseRow:
    """The lease row once it expired in the database's clock."""
    return wait_until(lambda: (row := lease.read()).expired and row, interval=0.05,
                      message="lease expiry")


def query(cfg: MysqlConfig, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    conn = mysql_db.connect(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_one_winner_per_epoch(leases: Callable[[], LeaseStore], cfg: MysqlConfig) -> None:
    a, b = leases(), leases()
    row = a.read()
    assert (row.epoch, row.holder) == (0, "") and row.expired
    assert a.take(row, "a:1", 30) == 1
    assert b.take(row, "b:2", 30) is None  # the same observed epoch: the UPDATE matches nothing
    row = b.read()
    assert (row.epoch, row.holder, row.expired) == (1, "a:1", False)
    assert not b.holder_gone(1)  # a's connection holds the epoch's named lock
    assert a.renew(1, "a:1", 30)
    assert not b.renew(1, "b:2", 30)
    assert query(cfg, "SELECT epoch, name, holder, previous FROM leader_history") == [
        (1, LEASE_NAME, "a:1", "")]


def test_dead_holder_frees_its_lock(leases: Callable[[], LeaseStore]) -> None:
    a, b = leases(), leases()
    assert a.take(a.read(), "a:1", 30) == 1
    assert not b.holder_gone(1)
    a.close()  # what the kernel does to the connections of a killed process
    # MariaDB frees the lock when it has processed the disconnect: later, not at once
    wait_until(lambda: b.holder_gone(1), message="a's lock freed")
    row = b.read()
    assert not row.expired
    assert b.take(row, "b:2", 30) == 2


def test_leases_of_two_databases_are_independent(
        leases: Callable[[], LeaseStore], mysql_config: Callable[..., MysqlConfig]) -> None:
    """Two exchanges whose log databases share one MariaDB server: MariaDB's named locks are
    server-wide, so each epoch's lock must be named after its database too, or the second
    exchange's standby could never take epoch 1 while the first exchange's active holds it."""
    ours = leases()
    other = mysql_config("test_lease_other")
    theirs, their_standby = LeaseStore(other), LeaseStore(other)
    theirs.open()
    try:
        assert theirs.take(theirs.read(), "x:1", 30) == 1
        assert ours.holder_gone(1)  # nobody holds *our* epoch 1
        assert ours.take(ours.read(), "a:1", 30) == 1
        # each holds its own (seen from another connection: a holder may take its lock again)
        assert not leases().holder_gone(1) and not their_standby.holder_gone(1)
    finally:
        theirs.close()
        their_standby.close()


def test_an_earlier_versions_active_and_standby_see_ours(
        leases: Callable[[], LeaseStore], cfg: MysqlConfig) -> None:
    """A pair upgraded one engine at a time: versions before the database was in the lock's
    name hold and test ``<lease>_leader_<epoch>`` only.  An old active on our database must
    count as alive for a new standby, and a new active must hold the old name too, or each side
    would take over from the other's healthy active in turn."""
    standby = leases()  # opens (creates) the log database
    old_active = mysql_db.connect(cfg)
    try:
        with old_active.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (legacy_lock_name(LEASE_NAME, 1),))
            assert cur.fetchone() == (1,)
        assert not standby.holder_gone(1)
    finally:
        old_active.close()
    assert wait_until(lambda: standby.holder_gone(1))  # MariaDB frees it once the session ends
    active = leases()
    assert active.take(active.read(), "a:1", 30) == 1
    old_standby = mysql_db.connect(cfg)
    try:
        with old_standby.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (legacy_lock_name(LEASE_NAME, 1),))
            assert cur.fetchone() == (0,)  # held: the old standby sees our active alive
    finally:
        old_standby.close()


def test_stale_epoch_commits_nothing(leases: Callable[[], LeaseStore],
                                     store: MysqlEngineStore, cfg: MysqlConfig) -> None:
    a, b = leases(), leases()
    assert a.take(a.read(), "a:1", 0.2) == 1
    store.set_fence(LEASE_NAME, 1)
    store.append(records(1, 3))
    assert store.last_oper_id() == 3
    row = expired(b)
    assert b.take(row, "b:2", 30) == 2
    with pytest.raises(StoreError):  # its writer connection was killed by the takeover
        store.append(records(4, 2))
    with pytest.raises(Deposed):  # and reconnected, the epoch check refuses it
        store.append(records(4, 2))
    assert store.fenced_off
    assert store.last_oper_id() == 3
    assert [r.id for r in store.read_operlog(0)] == [1, 2, 3]
    with pytest.raises(Deposed):
        store.reset_to(1)  # a deposed leader's recovery deletes nothing
    assert store.last_oper_id() == 3
    info = SliceInfo(1_700_000_100, 3, 0, 0)
    store.write_slice_data(info, EngineState())
    with pytest.raises(Deposed):
        store.publish_slice(info)
    assert store.latest_slice() is None
    assert not a.renew(1, "a:1", 30)
    # the new epoch's writer goes on where the log ends
    other = MysqlEngineStore(cfg)
    other.open()
    try:
        other.set_fence(LEASE_NAME, 2)
        other.append(records(4, 2))
        assert other.last_oper_id() == 5
        assert other.clone().fence == (LEASE_NAME, 2)
    finally:
        other.close()


def test_a_stopped_leaders_slice_child_publishes_nothing(
        leases: Callable[[], LeaseStore], store: MysqlEngineStore, cfg: MysqlConfig) -> None:
    """A leader stopped (SIGSTOP, a frozen VM) while its slice child writes: the child still
    sees a living parent, and once the new leader has logged past the slice's last id it sees
    that id "durable" although other operations than the slice's hold it.  Its store is a
    clone carrying the parent's epoch, so the publication is refused: the slice, which holds
    operations that were never committed, is never loaded."""
    a, b = leases(), leases()
    assert a.take(a.read(), "a:1", 0.2) == 1
    store.set_fence(LEASE_NAME, 1)
    store.append(records(1, 3))
    child = store.clone()  # what the forked slice child opens
    child.open()
    try:
        info = SliceInfo(1_700_000_200, 5, 0, 0)  # operations 4 and 5 were never committed
        child.write_slice_data(info, EngineState())
        assert b.take(expired(b), "b:2", 30) == 2
        other = MysqlEngineStore(cfg)
        other.open()
        try:
            other.set_fence(LEASE_NAME, 2)
            other.append(records(4, 3))  # the new leader's operations 4 to 6
        finally:
            other.close()
        MatchEngineService._child_wait_durable(child, info, os.getppid())  # parent "alive"
        with pytest.raises(Deposed):
            child.publish_slice(info)
        assert child.latest_slice() is None
    finally:
        child.close()


def test_takeover_kills_a_stopped_writer(leases: Callable[[], LeaseStore],
                                         cfg: MysqlConfig) -> None:
    """A leader stopped inside an append holds the lease row's lock: once its lease expired,
    the candidate kills that writer connection (recorded in the row) and takes over."""
    a, b = leases(), leases()
    assert a.take(a.read(), "a:1", 0.5) == 1
    stuck = MysqlEngineStore(cfg)
    stuck.open()
    stuck.set_fence(LEASE_NAME, 1)
    stuck.append(records(1, 1))  # records the writer connection in the lease row
    conn = stuck._connection()
    conn.begin()
    stuck._check_fence(conn)  # the row lock, held as by a process stopped mid-append
    row = expired(b)
    assert row.writer == conn.thread_id()
    assert b.take(row, "b:2", 30) == 2
    with pytest.raises(pymysql.MySQLError):
        conn.commit()  # its connection was killed: nothing of it commits
    stuck._fail()
    with pytest.raises(Deposed):
        stuck.append(records(2, 1))
    assert stuck.last_oper_id() == 1
    stuck.close()


def deposit(oper_id: int, amount: str) -> OperRecord:
    return OperRecord(oper_id, 1_700_000_000.0 + oper_id, "update_balance",
                      [1, "BTC", "deposit", oper_id, amount, {}])


def test_standby_notices_a_rewritten_log(cfg: MysqlConfig, store: MysqlEngineStore) -> None:
    """An active whose commit timed out refuses its operations and, if they landed after all,
    deletes them (reset_to) before logging others under the same ids.  A standby that applied
    them meanwhile must not go on from them: it restores again."""
    golden = json.loads((SHARED / "golden" / "matchengine.json").read_text())
    golden["db_log"] = {"host": cfg.host, "port": cfg.port, "user": cfg.user,
                        "pass": cfg.password, "name": cfg.name}
    golden["leader"] = {"lease": 5, "renew": 1}
    config = load_matchengine(golden)
    store.append([deposit(i, "1") for i in (1, 2, 3)])  # the day's table exists from here
    standby_store = MysqlEngineStore(cfg)
    standby_store.open()
    service = MatchEngineService(config, standby_store)
    held = HeldEvents(lambda: 0, 1000)
    service.add_sink(held)

    async def nothing() -> None:
        return None

    leadership = Leadership(config, standby_store, service, held, nothing, nothing)
    try:
        service.restore()
        leadership._follow_log()
        assert service.oper_id == 3
        store.append([deposit(i, "100") for i in (4, 5)])  # refused, but landed
        leadership._follow_log()
        assert service.oper_id == 5 and [i for i, _ in held.events][-2:] == [4, 5]
        store.reset_to(3)  # the active's recovery
        store.append([deposit(i, "2") for i in (4, 5, 6)])
        leadership._follow_log()
        assert service.oper_id == 6
        balance = service.methods.balance_query([1, "BTC"])
        assert balance["BTC"]["available"] == "9"  # 3 x 1 + 3 x 2, not 3 + 200 + 2
        assert [i for i, _ in held.events] == [1, 2, 3, 4, 5, 6]
    finally:
        standby_store.close()


def test_takeover_replays_a_log_table_created_just_before(
        cfg: MysqlConfig, store: MysqlEngineStore, leases: Callable[[], LeaseStore]) -> None:
    """A standby caches the list of operlog day tables for up to a second; the active's first
    operations (or a new day's) go to a table it created within that second.  When the active
    dies right then, the standby that takes over must still replay them (found by the deploy
    kit's failover test: the new active had lost a deposit)."""
    golden = json.loads((SHARED / "golden" / "matchengine.json").read_text())
    golden["db_log"] = {"host": cfg.host, "port": cfg.port, "user": cfg.user,
                        "pass": cfg.password, "name": cfg.name}
    golden["leader"] = {"lease": 30, "renew": 1, "instance": "standby"}
    config = load_matchengine(golden)
    active = leases()
    assert active.take(active.read(), "active", 30) == 1
    standby_store = MysqlEngineStore(cfg)
    standby_store.open()
    service = MatchEngineService(config, standby_store)
    held = HeldEvents(lambda: 0, 1000)
    service.add_sink(held)

    async def nothing() -> None:
        return None

    leadership = Leadership(config, standby_store, service, held, nothing, nothing)
    leadership.lease.open()
    try:
        service.restore()
        assert leadership._standby_step() is None  # the lease is held: it reads the log
        store.append([deposit(i, "5") for i in (1, 2)])  # the log's first table, created now
        active.close()  # the active is killed: its named lock frees (once MariaDB notices)
        # each step reads the log and looks at the lock, as the standby's loop does
        wait_until(lambda: leadership._standby_step() == "active", message="the take-over")
        assert service.oper_id == 2
        assert service.methods.balance_query([1, "BTC"])["BTC"]["available"] == "10"
    finally:
        leadership.lease.close()
        standby_store.close()
