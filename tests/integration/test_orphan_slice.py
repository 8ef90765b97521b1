"""A slice child whose engine died publishes nothing the dead engine had not made durable.

Why: a slice is forked while operations may still be on their way to the log (those applied
while the previous commit was in flight, or waiting for the next one); the child publishes the
slice only once the log reaches its last operation.  If the engine is SIGKILLed before they are
committed, they are lost and never acknowledged, and the restarted engine logs *other*
operations under the same ids.  A child still writing (a large book takes seconds) would then
see the log reach its last id and publish a slice holding the lost operations instead of the
logged ones: the next restart would load it and lose acknowledged operations (and bring back
unacknowledged ones).  The child must check that its engine is still alive after it has seen
the log reach its slice, not only while it waits.

The engine here is a service in a forked process that applies an operation, forks a slice
before that operation's commit starts, and blocks; the slice child, its slice written and
waiting for that operation, is stopped, the engine SIGKILLed, a restarted service logs two other
operations, then the child is continued and finishes.  A fresh restore must hold exactly what
the log holds.  On Linux the kernel kills a slice child with its engine
(process/inherited.py, ``die_with_parent``); this test takes that away, as on a system without
it, since the child's own check is what it is about.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from bench.bench_kill_restart import alive
from bench.cpu import children
from exchange_server.common.config import MatchEngineConfig, default_matchengine_data, load_matchengine
from exchange_server.matchengine import service as service_module
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from tests.support.waiting import wait_until


def config() -> MatchEngineConfig:
    data = default_matchengine_data()
    data["slice_interval"] = 86400
    return load_matchengine(data, embedded=True)


def deposit(user: int, business_id: int, amount: str) -> list[object]:
    return [user, "BTC", "deposit", business_id, amount, {}]


async def engine_that_dies(directory: Path) -> None:  # pragma: no cover - the forked engine
    store = SqliteEngineStore(directory)
    store.open()
    service = MatchEngineService(config(), store)
    await service.start()
    service.execute("balance.update", deposit(1, 1, "10"))
    await service.flush()
    # operation 2 is applied; its commit would start once the loop runs again, after the fork
    service.execute("balance.update", deposit(1, 2, "5"))
    service.request_slice()
    time.sleep(600)  # the loop never runs again: operation 2 is never durable; killed here


def restore(directory: Path) -> MatchEngineService:
    store = SqliteEngineStore(directory)
    store.open()
    service = MatchEngineService(config(), store)
    service.restore()
    store.close()
    return service


async def log_other_operations(directory: Path) -> None:
    """The restarted engine: from operation 1, two other deposits under ids 2 and 3."""
    store = SqliteEngineStore(directory)
    store.open()
    service = MatchEngineService(config(), store)
    service.restore()
    assert service.oper_id == 1
    await service.start()
    service.execute("balance.update", deposit(2, 3, "7"))
    service.execute("balance.update", deposit(2, 4, "1"))
    await service.flush()
    await service.stop(final_slice=False)
    store.close()


def waits_for_the_log(child: int, directory: Path) -> bool:
    """The child has committed its slice's tables and closed the slice file, so it now only
    reads the log, waiting for operation 2.  (Stopped at a random moment it could hold the
    slice file's lock, e.g. while closing its connection checkpoints the WAL, and the restarted
    engine would wait for it: a CI run failed with "database is locked".)"""
    try:
        files = [os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")]
    except OSError:
        return False
    if any("slices.sqlite" in f for f in files):
        return False
    db = sqlite3.connect(str(directory / "slices.sqlite"))
    try:
        found = db.execute("SELECT 1 FROM sqlite_master WHERE name LIKE 'slice_state_%'")
        return found.fetchone() is not None
    finally:
        db.close()


def btc(service: MatchEngineService, user: int) -> str:
    return str(service.execute("balance.query", [user, "BTC"])["BTC"]["available"])


def test_an_orphaned_slice_child_never_publishes_lost_operations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "die_with_parent", lambda parent: os.getppid() == parent)
    engine = os.fork()
    if engine == 0:  # pragma: no cover - the child
        try:
            asyncio.run(engine_that_dies(tmp_path))
        finally:
            os._exit(1)
    child = 0
    try:
        child = wait_until(lambda: children(engine), 60, message="the slice child")[0]
        wait_until(lambda: waits_for_the_log(child, tmp_path), 60,
                   message="the slice child to wait for operation 2")
        os.kill(child, signal.SIGSTOP)
        os.kill(engine, signal.SIGKILL)
        os.waitpid(engine, 0)
        asyncio.run(log_other_operations(tmp_path))
        os.kill(child, signal.SIGCONT)
        wait_until(lambda: not alive(child), 120, message="the slice child to finish")
    finally:
        for pid in (engine, child):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
    restored = restore(tmp_path)
    assert restored.oper_id == 3
    # exactly the log: user 1's first deposit, user 2's two; the lost deposit of 5 is not there
    assert (btc(restored, 1), btc(restored, 2)) == ("10", "8")
    store = SqliteEngineStore(tmp_path)
    store.open()
    try:
        assert all(s.end_oper_id != 2 for s in store.list_slices())
    finally:
        store.close()

