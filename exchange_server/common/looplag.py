"""Event-loop lag: how late the loop gets round to a callback that was due.

Every client of a process shares its event loop (in embedded mode, with the engine that
matches orders): a handler that holds the loop for 100 ms delays every other client by as
much.  A task sleeps a short interval and records how much later than asked it woke; that is
the longest anything held the loop in between, or the time the process was not scheduled at
all (a busy machine).  The part of the lag the loop's thread spent on the CPU tells the two
apart: ``busy`` lag = min(lag, CPU time of the thread while it slept).  Lags go to a histogram
and to gauges of the worst since they were last read (``/metrics``; bench/bench_stall.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import Histogram

from exchange_server.common import metrics

LAG = Histogram("exchange_event_loop_lag_seconds", "How late the event loop ran a due callback",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))


class LoopLagProbe:
    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.worst = 0.0
        self.worst_busy = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        metrics.gauges("process").add(
            "event_loop_lag_worst_seconds",
            "Worst event-loop lag since this gauge was last read", self.take_worst)
        metrics.gauges("process").add(
            "event_loop_busy_lag_worst_seconds",
            "Worst event-loop lag spent on the CPU (not waiting to be scheduled) since this gauge "
            "was last read", self.take_worst_busy)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def take_worst(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def take_worst_busy(self) -> float:
        worst, self.worst_busy = self.worst_busy, 0.0
        return worst

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + self.interval
            cpu = time.thread_time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.monotonic() - due)
            busy = min(lag, time.thread_time() - cpu)
            LAG.observe(lag)
            self.worst = max(self.worst, lag)
            self.worst_busy = max(self.worst_busy, busy)
