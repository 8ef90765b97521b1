"""Event-loop lag: how late the loop gets round to a callback that was due.

Every client of a process shares its event loop (in embedded mode, with the engine that
matches orders): a handler that holds the loop for 100 ms delays every other client by as
much.  A timer of a short interval records how much later than asked it ran; that is
the longest anything held the loop in between, or the time the process was not scheduled at
all (a busy machine).  The part of the lag the loop's thread spent on the CPU tells the two
apart: ``busy`` lag = min(lag, CPU time of the thread while it slept).  Lags go to a histogram
and to gauges of the worst since they were last read (``/metrics``; bench/bench_stall.py).
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Histogram

from exchange_server.common import metrics

LAG = Histogram("exchange_event_loop_lag_seconds", "How late the event loop ran a due callback",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))


class LoopLagProbe:
    """A timer callback re-armed each time it runs (a task sleeping in a loop cost a future
    and a task step per wake-up on the busiest thread)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.worst = 0.0
        self.worst_busy = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: when the armed timer is due (time.monotonic) and the thread's CPU time then
        self._due = 0.0
        self._cpu = 0.0

    def start(self) -> None:
        # ServiceGauges, not metrics.gauges(): "process" is no service (no exchange_service_up)
        process = metrics.ServiceGauges("process")
        process.add(
            "event_loop_lag_worst_seconds",
            "Worst event-loop lag since this gauge was last read", self.take_worst)
        process.add(
            "event_loop_busy_lag_worst_seconds",
            "Worst event-loop lag spent on the CPU (not waiting to be scheduled) since this gauge "
            "was last read", self.take_worst_busy)
        self._loop = asyncio.get_running_loop()
        self._arm(time.monotonic(), time.thread_time())

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def take_worst(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def take_worst_busy(self) -> float:
        worst, self.worst_busy = self.worst_busy, 0.0
        return worst

    def _arm(self, now: float, cpu: float) -> None:
        if self._loop is None:
            return
        self._due = now + self.interval
        self._cpu = cpu
        self._timer = self._loop.call_later(self.interval, self._wake)

    def _wake(self) -> None:
        now = time.monotonic()
        cpu = time.thread_time()
        lag = max(0.0, now - self._due)
        busy = min(lag, cpu - self._cpu)
        LAG.observe(lag)
        if lag > self.worst:
            self.worst = lag
        if busy > self.worst_busy:
            self.worst_busy = busy
        self._arm(now, cpu)
