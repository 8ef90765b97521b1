"""The standby's held events and the leader block's checks (matchprocess/leader.py).

Why: a standby must hand the new active's bus publisher the events of every operation after
the bus mark, or a takeover would lose bus messages; and it must say when it cannot (its bound
was passed), so the takeover restores from a slice instead.
"""

from __future__ import annotations

import pytest

from exchange_server.common.config import ConfigError, LeaderConfig, load_matchengine
from exchange_server.matchprocess.leader import HeldEvents, check_config, holder_id
from tests.support.server import SHARED


def test_held_events_follow_the_bus_mark() -> None:
    mark = [2]
    held = HeldEvents(lambda: mark[0], limit=100)
    assert held.durable_mark() == 2
    for oper_id in range(1, 7):
        held.on_events(oper_id, [])
    assert [i for i, _ in held.events] == [3, 4, 5, 6]  # at or below the mark: published
    assert held.covers(2) and held.covers(4) and not held.covers(1)
    mark[0] = 5
    held.trim()
    assert [i for i, _ in held.events] == [6]
    assert held.covers(5) and not held.covers(4)


def test_held_events_give_up_past_their_bound() -> None:
    held = HeldEvents(lambda: 0, limit=3)
    held.durable_mark()
    for oper_id in range(1, 5):
        held.on_events(oper_id, [])
    assert not held.complete and not held.events and not held.covers(0)


def test_original_takeover_point_is_published_already() -> None:
    held = HeldEvents(lambda: 0, limit=10)
    held.start_after(40)
    held.durable_mark()
    held.on_events(40, [])
    held.on_events(41, [])
    assert [i for i, _ in held.events] == [41]
    assert held.original_end == 40


def test_leader_block() -> None:
    import json

    golden = json.loads((SHARED / "golden" / "matchengine.json").read_text())
    golden["leader"] = {"lease": 4, "renew": 1}
    config = load_matchengine(golden)
    assert config.leader == LeaderConfig(lease=4.0, renew=1.0, instance="")
    assert holder_id(config).endswith(":" + config.svr.bind[0].rsplit(":", 1)[-1])  # type: ignore[union-attr]
    check_config(config.leader)
    with pytest.raises(ConfigError, match="renew"):
        check_config(LeaderConfig(lease=4.0, renew=3.0))
    golden["leader"] = {"lease": 0.5}
    with pytest.raises(ConfigError, match="lease"):
        load_matchengine(golden)
    del golden["leader"]
    assert load_matchengine(golden).leader is None
