"""Replay is the service's one public operation (``replay_from``): restore, the rebuild after a
storage failure and the history follower all go through it, so a gap in the operation log is
the same error (:class:`OperLogGap`) for each of them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exchange_server.common.config import default_matchengine_data
from exchange_server.matchengine.service import PROGRESS_EVERY, MatchEngineService
from exchange_server.matchengine.store import OperLogGap, StoreError
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.matchprocess.follower import FATAL_EXIT, FollowerProcess, FollowerSpec
from tests.integration.test_methods import config
from tests.support.waiting import wait_until


async def _write_log(data: Path, deposits: int) -> None:
    """A log of ``deposits`` balance updates (ids 1..deposits), no slice."""
    store = SqliteEngineStore(data)
    store.open()
    service = MatchEngineService(config(), store)
    await service.start()
    for n in range(1, deposits + 1):
        service.execute("balance.update", [1, "BTC", "deposit", n, "1", {}])
    await service.stop(final_slice=False)
    store.close()


def _drop_record(data: Path, oper_id: int) -> None:
    with sqlite3.connect(data / "trade_log.sqlite") as conn:
        conn.execute("DELETE FROM operlog WHERE id = ?", (oper_id,))


def _fresh(data: Path) -> MatchEngineService:
    store = SqliteEngineStore(data)
    store.open()
    return MatchEngineService(config(), store)


async def test_replay_from_applies_up_to_the_limit_and_reports_progress(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _write_log(data, PROGRESS_EVERY + 5)
    service = _fresh(data)
    seen: list[int] = []
    assert service.replay_from(service.store, 3) == 3
    assert service.oper_id == 3
    count = service.replay_from(service.store, progress=lambda: seen.append(service.oper_id))
    assert (count, service.oper_id, seen) == (PROGRESS_EVERY + 2, PROGRESS_EVERY + 5,
                                             [PROGRESS_EVERY + 3])
    assert service.execute("balance.query", [1, "BTC"])["BTC"]["available"] == (
        str(PROGRESS_EVERY + 5))
    service.store.close()


async def test_a_gap_is_one_error_for_restore_and_for_the_rebuild(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _write_log(data, 6)
    _drop_record(data, 4)
    service = _fresh(data)
    with pytest.raises(OperLogGap, match="operation log gap: expected id 4, found 5") as gap:
        service.restore()
    assert (gap.value.expected, gap.value.found) == (4, 5)
    assert isinstance(gap.value, StoreError)  # the command's "cannot start" line
    with pytest.raises(OperLogGap, match="expected id 4, found 5"):
        service._load_durable(6)
    service.store.close()


async def test_the_follower_stops_for_good_on_a_gap(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _write_log(data, 6)
    _drop_record(data, 4)
    follower = FollowerProcess(FollowerSpec(default_matchengine_data(), True, str(data), "sqlite"))
    follower.set_durable(6)
    follower.start()
    try:
        wait_until(lambda: not follower._process.is_alive(), 60,
                   message="the follower stopping at the gap")
        assert follower._process.exitcode == FATAL_EXIT
        follower.check()
        assert follower.failed and follower.restarts == 0
    finally:
        follower.stop(timeout=10)
