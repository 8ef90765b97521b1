"""Prometheus metrics: request counters and latencies, and gauges read from the services.

Why it is shaped this way: an operator (and ``exchange-server status``) must see the health of
the whole exchange from the metrics endpoints alone, without adding work to the hot path.

* Counters and histograms are updated where things happen (accesshttp counts each request, the
  matchengine times each commit of its operation log).
* Gauges are read only when Prometheus scrapes: each service registers functions that return
  its current queue depths and lags, so nothing is computed per request.  One collector holds
  every service of the process (embedded mode runs them all in one), so a family such as
  ``exchange_service_up`` has one sample per service instead of clashing families.
* What needs a history (orders/s over the last minute, how long ago the history follower's
  next operation became durable) is sampled once a second by :class:`MetricsServer`'s ticker
  into small bounded windows (:class:`RateWindow`, :class:`Timeline`).

``serve`` exposes everything, plus the client library's process metrics (RSS, CPU, open
files), on ``GET /metrics``; the status page (exchange_server/status) is served beside it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import INF, floatToGoString

log = logging.getLogger("exchange_server.metrics")

#: upper bounds of ``exchange_request_duration_seconds``' buckets (+Inf follows)
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: One commit of the operation log (a batch of operations made durable together).
COMMIT_SECONDS = Histogram("exchange_operlog_commit_seconds",
                           "Time to commit one batch of the operation log",
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                    0.5, 1.0, 2.5, 5.0))

GaugeFunction = Callable[[], float]
#: When the process started (the uptime gauge counts from here).
STARTED = time.time()


@dataclass
class _Family:
    help_text: str
    counter: bool
    reads: dict[str, GaugeFunction] = field(default_factory=dict)


class _ServiceCollector(Collector):
    """Every service's gauges and counters, read from functions at scrape time."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def add(self, service: str, name: str, help_text: str, read: GaugeFunction,
            counter: bool = False) -> None:
        family = self.families.setdefault(name, _Family(help_text, counter))
        family.reads[service] = read

    def collect(self) -> Iterator[Metric]:
        for name, family in list(self.families.items()):
            out: GaugeMetricFamily | CounterMetricFamily = (
                CounterMetricFamily(f"exchange_{name}", family.help_text, labels=["service"])
                if family.counter else
                GaugeMetricFamily(f"exchange_{name}", family.help_text, labels=["service"]))
            for service, read in list(family.reads.items()):
                try:
                    out.add_metric([service], float(read()))
                except Exception:  # a gauge must never break the scrape
                    log.exception("gauge %s of %s failed", name, service)
            if out.samples:
                yield out


_COLLECTOR = _ServiceCollector()
REGISTRY.register(_COLLECTOR)


class ServiceGauges:
    """The gauges of one service (a view on the process-wide collector)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def add(self, name: str, help_text: str, read: GaugeFunction) -> None:
        _COLLECTOR.add(self.service, name, help_text, read)

    def counter(self, name: str, help_text: str, read: GaugeFunction) -> None:
        """A monotonic count read at scrape time (exported as ``exchange_<name>_total``)."""
        _COLLECTOR.add(self.service, name, help_text, read, counter=True)


def gauges(service: str) -> ServiceGauges:
    """The gauge set of ``service``; it also exports ``exchange_service_up{service}`` = 1."""
    found = ServiceGauges(service)
    found.add("service_up", "1 for each service running in this process", lambda: 1)
    return found


class _RequestTally:
    """What ``observe`` counted for one (service, method): requests by status and their
    latencies, as plain numbers."""

    __slots__ = ("created", "latency")

    def __init__(self) -> None:
        self.created = time.time()
        #: observations per bucket (not cumulative; the last one is +Inf), then their sum
        self.latency = [0.0] * (len(LATENCY_BOUNDS) + 2)


class _RequestCollector(Collector):
    """``exchange_requests_total`` (a counter by service, method and status) and
    ``exchange_request_duration_seconds`` (a histogram by service and method), written from
    the tallies exactly as prometheus_client's Counter and Histogram would write them."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str], _RequestTally] = {}
        #: (service, method, status) -> [requests, when the first was counted]
        self.counts: dict[tuple[str, str, int], list[float]] = {}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("exchange_requests",
                                       "Requests answered, by service, method and status",
                                       labels=["service", "method", "status"])
        latency = HistogramMetricFamily("exchange_request_duration_seconds",
                                        "Time to answer a request", labels=["service", "method"])
        for (service, method, status), (count, created) in list(self.counts.items()):
            requests.add_metric([service, method, str(status)], count, created=created)
        for (service, method), tally in list(self.tallies.items()):
            counts = list(tally.latency)
            buckets: list[tuple[str, float]] = []
            total = 0.0
            for bound, count in zip((*LATENCY_BOUNDS, INF), counts[:-1], strict=True):
                total += count
                buckets.append((floatToGoString(bound), total))
            latency.add_metric([service, method], buckets, counts[-1])
            latency.samples.append(Sample(f"{latency.name}_created",
                                          {"service": service, "method": method}, tally.created))
        yield requests
        yield latency


_bisect_left = bisect.bisect_left
_REQUESTS = _RequestCollector()
REGISTRY.register(_REQUESTS)
#: (service, method, status) -> that status's count and the (service, method) latencies
_COUNTERS: dict[tuple[str, str, int], tuple[list[float], list[float]]] = {}


def observe(service: str, method: str, status: int, seconds: float) -> None:
    """Count one request answered with ``status`` after ``seconds``.  Why plain numbers and
    not prometheus_client's Counter and Histogram children: those take a lock per update and
    walk the buckets in Python (1.6 us per request, every order placed); this is a lookup, a
    bisect and three additions, and the collector writes the same families at scrape time.
    Called from the event loop's thread only (as every caller is)."""
    counters = _COUNTERS.get((service, method, status))
    if counters is None:
        counters = _counters(service, method, status)
    counters[0][0] += 1
    latency = counters[1]
    latency[_bisect_left(LATENCY_BOUNDS, seconds)] += 1
    latency[-1] += seconds


def _counters(service: str, method: str, status: int) -> tuple[list[float], list[float]]:
    tally = _REQUESTS.tallies.get((service, method))
    if tally is None:
        tally = _REQUESTS.tallies[(service, method)] = _RequestTally()
    count = _REQUESTS.counts[(service, method, status)] = [0.0, time.time()]
    counters = _COUNTERS[(service, method, status)] = (count, tally.latency)
    return counters


# -- windows sampled once a second -----------------------------------------------------------------

_TICKERS: dict[str, Callable[[], None]] = {}


def on_tick(key: str, ticker: Callable[[], None]) -> None:
    """Call ``ticker`` once a second while a metrics server runs in this process (a second
    ticker with the same ``key`` replaces the first: a service built again in one process)."""
    _TICKERS[key] = ticker


def tick() -> None:
    for ticker in list(_TICKERS.values()):
        try:
            ticker()
        except Exception:
            log.exception("metrics ticker failed")


class RateWindow:
    """Per-second rate of a monotonic count over the last ``seconds`` (sampled by ticks)."""

    def __init__(self, read: Callable[[], float], seconds: int = 60,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self.clock = clock
        self.samples: deque[tuple[float, float]] = deque(maxlen=seconds + 1)

    def sample(self) -> None:
        self.samples.append((self.clock(), self.read()))

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


class Timeline:
    """When a monotonic id (the last durable operation) reached each value, so that a
    consumer's lag in operations can also be told in seconds: how long ago the first operation
    it has not processed became durable.  One sample per second while the id moves, at most
    ``keep`` samples (older lags read as at least the oldest sample's age)."""

    def __init__(self, read: Callable[[], int], keep: int = 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.read = read
        self.clock = clock
        self.times: deque[float] = deque(maxlen=keep)
        self.values: deque[int] = deque(maxlen=keep)

    def sample(self) -> None:
        value = self.read()
        if not self.values or value > self.values[-1]:
            self.times.append(self.clock())
            self.values.append(value)

    def lag_seconds(self, done: int) -> float:
        """Seconds since the first id after ``done`` was seen (0: nothing newer seen)."""
        values = self.values
        if not values or values[-1] <= done:
            return 0.0
        i = bisect.bisect_right(values, done)  # first sample with value > done
        return max(0.0, self.clock() - self.times[i])


# -- the endpoint ----------------------------------------------------------------------------------

#: An extra GET route on the metrics port (the status page): (path, handler).
Route = tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


def _register_process_gauges(name: str) -> None:
    """``exchange_process_pid`` and ``exchange_process_uptime_seconds``, labelled with the
    process's name (its service, or ``embedded`` for ``exchange-server run``)."""
    _COLLECTOR.add(name, "process_pid", "Process id of this process", os.getpid)
    _COLLECTOR.add(name, "process_uptime_seconds", "Seconds since this process started",
                   lambda: time.time() - STARTED)


async def _handle(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class MetricsServer:
    """``GET /metrics`` on its own port (one per process), plus the status page."""

    def __init__(self, name: str = "embedded", routes: list[Route] | None = None) -> None:
        #: the process's name in ``exchange_process_pid{service=...}``
        self.name = name
        self.routes = routes or []
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        _register_process_gauges(self.name)
        app = web.Application()
        app.router.add_get("/metrics", _handle)
        for path, handler in self.routes:
            app.router.add_get(path, handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        self._ticker = asyncio.create_task(self._tick_loop())
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    async def _tick_loop(self) -> None:
        while True:
            tick()
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
