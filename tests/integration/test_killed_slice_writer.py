"""A slice child dies with its SIGKILLed engine; the restart loads the last published slice,
and a later slice drops what the killed writer left.

Why: a slice child that outlived its engine went on encoding and writing its slice (1-2 s of a
core for 100,000 open orders) while the restart needed that core, for a slice that is never
published.  The kernel now kills it with its engine (``prctl(PR_SET_PDEATHSIG)``), so what it
had written stays behind: tables without a ``slice_history`` row.  The restart must not load
them (it restores from the newest *published* slice and the log), and they must not pile up:
the first slice begun once they are older than any slice writer can live drops them, and never
a published slice.

The engine is a service in a forked process, on SQLite and on MariaDB: it publishes a slice,
logs more, then forks a slice covering an operation whose commit never starts and blocks (as
in test_orphan_slice.py).  Once the child's tables are written, the child is stopped (SIGSTOP:
from then on only a SIGKILL from outside can end it) and the engine SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.bench_kill_restart import alive
from bench.cpu import children
from exchange_server.matchengine.service import SLICE_ABANDONED_AFTER, MatchEngineService
from exchange_server.matchengine.slicerows import SLICE_KINDS
from exchange_server.matchengine.store import EngineStore, StoreError, state_checksum
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from tests.integration.test_orphan_slice import config, deposit
from tests.integration.test_store import slice_db, slice_tables
from tests.support.waiting import wait_until

MakeStore = Callable[[], EngineStore]

#: the engine's clock: the published slice, the killed writer's slice (far from a multiple
#: of slice_interval, so no time slice falls in)
T1 = 1_700_000_100
T2 = T1 + 10


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """A factory of opened stores on one location (also called in the forked engine)."""
    if request.param == "sqlite":
        def make() -> EngineStore:
            return SqliteEngineStore(tmp_path / "data")
    else:
        cfg = request.getfixturevalue("mysql_config")("test_killed_slice")

        def make() -> EngineStore:
            return MysqlEngineStore(cfg)

    opened: list[EngineStore] = []

    def opened_store() -> EngineStore:
        store = make()
        store.open()
        opened.append(store)
        return store

    yield opened_store
    for store in opened:
        store.close()


async def engine_killed_while_slicing(make_store: MakeStore) -> None:  # pragma: no cover
    """The forked engine: operations 1-5, slice T1 published, operation 6 durable, operation 7
    applied and a slice of it forked before its commit starts; then it blocks until killed."""
    now = [float(T1)]
    service = MatchEngineService(config(), make_store(), clock=lambda: now[0])
    await service.start()
    for i in range(1, 6):
        service.execute("balance.update", deposit(1, i, "1"))
    await service.flush()
    await service.make_slice_now()
    now[0] = T2
    service.execute("balance.update", deposit(2, 6, "3"))
    await service.flush()
    service.execute("balance.update", deposit(2, 7, "4"))
    service.request_slice()  # the child waits for operation 7, which never becomes durable
    time.sleep(600)  # the loop never runs again; killed here


def written(store: EngineStore, t: int) -> bool:
    """Slice ``t``'s document is committed: the writer is done with its tables."""
    try:
        return bool(slice_db(store, f"SELECT COUNT(*) FROM slice_state_{t}")[0][0])
    except Exception:  # the table does not exist yet
        return False


def times(store: EngineStore) -> set[int]:
    return {int(name.rsplit("_", 1)[1]) for name in slice_tables(store)}


def test_a_killed_slice_writer_dies_and_its_tables_go(make_store: MakeStore) -> None:
    store = make_store()
    engine = os.fork()
    if engine == 0:  # pragma: no cover - the forked engine
        try:
            asyncio.run(engine_killed_while_slicing(make_store))
        finally:
            os._exit(1)
    child = 0
    try:
        wait_until(lambda: written(store, T2), 60, message="the slice child's tables")
        child = children(engine)[0]  # the writer of T2 (T1's was reaped before it forked)
        os.kill(child, signal.SIGSTOP)  # stopped, it cannot exit by itself any more
        os.kill(engine, signal.SIGKILL)
        os.waitpid(engine, 0)
        wait_until(lambda: not alive(child), 60, message="the slice child to die with its engine")
    finally:
        for pid in (engine, child):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
    # what the killed writer left: its tables, no history row
    assert times(store) == {T1, T2}
    assert [s.time for s in store.list_slices()] == [T1]

    now = [float(T2 + 5)]
    service = MatchEngineService(config(), make_store(), clock=lambda: now[0])  # the restart
    service.restore()
    assert service.restored_from is not None and service.restored_from.time == T1
    assert (service.oper_id, service.replayed) == (6, 1)  # operation 7 was never durable
    replayed = MatchEngineService(config(), make_store())
    replayed.replay_from(replayed.store)  # the whole log, no slice
    assert state_checksum(service.engine.dump_state()) == \
        state_checksum(replayed.engine.dump_state())
    assert service.execute("balance.query", [2, "BTC"])["BTC"]["available"] == "3"

    async def slices_after_restart() -> None:
        await service.start()
        await service.make_slice_now()  # T2 + 5: the dead writer's tables could still be live
        assert times(store) == {T1, T2, T2 + 5}
        now[0] = T2 + SLICE_ABANDONED_AFTER + 1
        await service.make_slice_now()  # now they are old enough to be abandoned for sure
        await service.stop(final_slice=False)

    asyncio.run(slices_after_restart())
    published = [T1, T2 + 5, T2 + SLICE_ABANDONED_AFTER + 1]
    assert [s.time for s in store.list_slices()] == published
    assert times(store) == set(published)
    assert len(slice_tables(store)) == len(published) * len(SLICE_KINDS)
    restored = MatchEngineService(config(), make_store())
    restored.restore()
    assert state_checksum(restored.engine.dump_state()) == \
        state_checksum(replayed.engine.dump_state())


def test_a_failing_drop_does_not_fail_the_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Dropping old unpublished tables is housekeeping: when it fails the slice is written
    all the same (here the final slice of a stop, written in-process)."""
    store = SqliteEngineStore(tmp_path / "data")
    store.open()

    def fails(before: int) -> list[int]:
        raise StoreError("disk I/O error")

    monkeypatch.setattr(store, "drop_unpublished_slices", fails)
    service = MatchEngineService(config(), store)

    async def run() -> None:
        await service.start()
        service.execute("balance.update", deposit(1, 1, "1"))
        await service.stop()

    asyncio.run(run())
    assert [s.end_oper_id for s in store.list_slices()] == [1]
    assert "unpublished slices not dropped: disk I/O error" in caplog.text
    store.close()
