"""The event-loop lag probe: a callback that holds the loop shows as lag, and as busy lag
when the loop's thread spent it on the CPU."""

from __future__ import annotations

import asyncio
import time

from exchange_server.common.looplag import LoopLagProbe
from tests.support.waiting import wait_until_async


def hold_loop(seconds: float) -> None:
    """Keep the loop's thread busy on the CPU (what a slow handler does)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_a_held_loop_is_seen_as_busy_lag() -> None:
    probe = LoopLagProbe(interval=0.005)
    probe.start()
    try:
        await wait_until_async(lambda: probe._timer is not None)
        asyncio.get_running_loop().call_soon(hold_loop, 0.08)
        await wait_until_async(lambda: probe.worst >= 0.05 and probe.worst_busy >= 0.05)
        assert probe.take_worst() >= 0.05 and probe.worst == 0.0
        assert probe.take_worst_busy() >= 0.05 and probe.worst_busy == 0.0
    finally:
        await probe.stop()
    assert probe._timer is None
