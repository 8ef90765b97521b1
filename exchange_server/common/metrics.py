"""Prometheus metrics: request counters and latencies, and gauges read from the services.

Counters and histograms are updated where things happen (accesshttp counts each request).
Gauges are read only when Prometheus scrapes: each service registers functions that return its
current queue depths and lags (operations waiting for the log, how far the history follower and
the bus are behind), so nothing is computed on the hot path.  ``serve`` exposes everything,
plus the client library's process metrics (RSS, CPU, open files), on ``GET /metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("exchange_server.metrics")

REQUESTS = Counter("exchange_requests_total", "Requests answered, by service, method and status",
                   ["service", "method", "status"])
LATENCY = Histogram("exchange_request_duration_seconds", "Time to answer a request",
                    ["service", "method"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                             2.5))

GaugeFunction = Callable[[], float]


class ServiceGauges(Collector):
    """Gauges of one service instance, read from functions at scrape time."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.gauges: dict[str, tuple[str, GaugeFunction]] = {}

    def add(self, name: str, help_text: str, read: GaugeFunction) -> None:
        self.gauges[name] = (help_text, read)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (help_text, read) in self.gauges.items():
            family = GaugeMetricFamily(f"exchange_{name}", help_text, labels=["service"])
            try:
                family.add_metric([self.service], float(read()))
            except Exception:  # a gauge must never break the scrape
                log.exception("gauge %s failed", name)
                continue
            yield family


_registered: dict[str, ServiceGauges] = {}


def gauges(service: str) -> ServiceGauges:
    """The gauge set of ``service`` (registered with Prometheus on first use)."""
    found = _registered.get(service)
    if found is None:
        found = _registered[service] = ServiceGauges(service)
        REGISTRY.register(found)
    return found


def observe(service: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(service, method, str(status)).inc()
    LATENCY.labels(service, method).observe(seconds)


async def _handle(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class MetricsServer:
    """``GET /metrics`` on its own port (one per process)."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", _handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
