"""When a slice by operation count is due: ``slice_oper_interval`` operations since the last
slice started, and at least SLICE_OPER_MIN_GAP seconds since then.

Why the floor: the count bounds a restart's tail, but at a high rate it alone would fork and
write a slice every second or two, which the live load pays for (docs/operations.md 14).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange_server.matchengine.service import SLICE_OPER_MIN_GAP, MatchEngineService
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from tests.integration.test_methods import config


@pytest.fixture
def service(tmp_path: Path) -> MatchEngineService:
    cfg = config()
    cfg.slice_oper_interval = 100
    engine = MatchEngineService(cfg, SqliteEngineStore(tmp_path))
    engine._sliced_oper, engine._sliced_time = 1000, 5000
    return engine


def test_due_after_the_count_and_the_gap(service: MatchEngineService) -> None:
    service.oper_id = 1100
    assert service._oper_slice_due(5000 + SLICE_OPER_MIN_GAP)
    service.oper_id = 1099
    assert not service._oper_slice_due(5000 + SLICE_OPER_MIN_GAP)


def test_not_due_within_the_gap_whatever_the_count(service: MatchEngineService) -> None:
    service.oper_id = 1_000_000
    assert SLICE_OPER_MIN_GAP > 1
    for now in range(5000, 5000 + SLICE_OPER_MIN_GAP):
        assert not service._oper_slice_due(now)
    assert service._oper_slice_due(5000 + SLICE_OPER_MIN_GAP)


def test_off_when_the_count_is_zero(service: MatchEngineService) -> None:
    service.config.slice_oper_interval = 0
    service.oper_id = 1_000_000
    assert not service._oper_slice_due(10**9)
