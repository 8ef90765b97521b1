"""Slices by operation count under load, and a SIGKILL restart from such a slice plus its tail.

Why: with slices only every ``slice_interval`` a restart replays everything logged since the
last one, so its time grows with the uptime.  ``slice_oper_interval`` bounds that tail.  A real
server under a concurrent order load (tests/integration/test_crash.py's workers) must take
such slices by itself, keep their number bounded (thinning), and after a SIGKILL come back from
the newest one plus the operations logged after it with exactly the state a replay of the
whole log gives (balances, both books).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import MysqlConfig, default_matchengine_data
from exchange_server.matchengine.store import EngineStore, SliceInfo
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from tests.integration.test_crash import (
    USERS,
    replay,
    replay_state,
    start_under_load,
    state_of,
)
from tests.support.server import ServerProcess
from tests.support.waiting import wait_until

#: small, so that a short load takes several slices
EVERY = 300


def open_store(data: Path, mysql: MysqlConfig | None) -> EngineStore:
    store: EngineStore = SqliteEngineStore(data) if mysql is None else MysqlEngineStore(mysql)
    store.open()
    return store


def sliced_with_tail(store: EngineStore, seen: dict[int, int]) -> SliceInfo | None:
    """The newest slice once three were published by operation count and the log has grown
    a tail past the newest (``seen``: the end operation id of every slice time observed,
    thinned ones included)."""
    slices = store.list_slices()
    seen.update((s.time, s.end_oper_id) for s in slices if s.end_oper_id > 0)
    if len(seen) < 3 or not slices:
        return None
    newest = slices[-1]
    return newest if store.last_oper_id() >= newest.end_oper_id + 50 else None


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def test_operation_count_slices_and_sigkill_restart(tmp_path: Path, storage: str,
                                                    request: pytest.FixtureRequest) -> None:
    config: dict[str, Any] = default_matchengine_data()
    config["slice_interval"] = 86400  # no time slice during the test: only the count triggers
    config["slice_oper_interval"] = EVERY
    loaded = start_under_load(tmp_path, storage, request, config, "test_operslice")
    server, data, config_path, acked, workers, mysql = (
        loaded.server, loaded.data, loaded.config_path, loaded.acked, loaded.workers,
        loaded.mysql)
    store = open_store(data, mysql)
    seen: dict[int, int] = {}
    try:
        newest = wait_until(lambda: sliced_with_tail(store, seen), timeout=120,
                            message="three slices by operation count and a tail after the newest")
        # thinning: all in one slice_interval period, so the oldest and the two newest remain
        assert len(store.list_slices()) <= 3
    finally:
        store.close()
    server.kill()
    for w in workers:
        w.join(60)
    assert newest.end_oper_id >= EVERY

    before = server.log_path.read_text()
    restarted = ServerProcess(data, config=config_path, extra=["--storage", storage]).start()
    live = state_of(restarted)
    assert restarted.stop() == 0
    started = server.log_path.read_text()[len(before):]
    found = re.search(r"restored: slice (\d+), (\d+) operations replayed, last operation id "
                      r"(\d+)", started)
    assert found is not None, started[-2000:]
    restored, replayed, last = (int(g) for g in found.groups())

    store = open_store(data, mysql)
    try:
        # The load went on between the wait above and the kill: a slice published meanwhile
        # is one the restart may have come back from.  It is in the store now.
        sliced_with_tail(store, seen)
        methods, results, _ = replay(store)
    finally:
        store.close()
    # a slice by operation count, plus exactly the operations logged after it
    assert restored in seen and seen[restored] + replayed == last, (restored, replayed, last)
    assert replayed > 0 or restored != newest.time  # the tail waited for after that slice
    # the restart (slice + tail) holds exactly what a replay of the whole log holds
    assert live == replay_state(methods)
    assert len(results) >= len(acked) + 2 * len(USERS)
