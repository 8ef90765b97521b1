"""``metrics.observe`` counts requests in plain numbers that its collector writes at scrape
time: what a scrape shows must be what prometheus_client's own Counter and Histogram (which it
replaced on the hot path) would show for the same requests."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

from exchange_server.common import metrics


def _count(service: str, method: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "exchange_requests_total", {"service": service, "method": method, "status": status})
    return value or 0.0


def _latency_count(service: str, method: str) -> float:
    value = REGISTRY.get_sample_value(
        "exchange_request_duration_seconds_count", {"service": service, "method": method})
    return value or 0.0


def test_every_request_is_counted() -> None:
    metrics.observe("unit", "counted.method", 200, 0.001)
    metrics.observe("unit", "counted.method", 200, 0.002)
    metrics.observe("unit", "counted.method", 404, 0.003)
    assert _count("unit", "counted.method", "200") == 2
    assert _count("unit", "counted.method", "404") == 1
    assert _latency_count("unit", "counted.method") == 3


def _lines(text: str, service: str) -> list[str]:
    """The request families' lines of ``service``, creation times blanked (they differ)."""
    return [re.sub(r"_created(\{.*\}) .*", r"_created\1 T", line)
            for line in text.splitlines()
            if f'service="{service}"' in line and "exchange_request" in line]


def test_the_scrape_is_what_prometheus_client_writes() -> None:
    registry = CollectorRegistry()
    requests = Counter("exchange_requests_total", "Requests answered, by service, method and "
                       "status", ["service", "method", "status"], registry=registry)
    latency = Histogram("exchange_request_duration_seconds", "Time to answer a request",
                        ["service", "method"], buckets=metrics.LATENCY_BOUNDS,
                        registry=registry)
    calls = [("a.m", 200, 0.0005), ("a.m", 200, 0.0004), ("a.m", 500, 3.0), ("b.m", 200, 1.0),
             ("a.m", 404, 0.0), ("b.m", 200, 0.02), ("a.m", 200, 2.5)]
    for method, status, seconds in calls:
        metrics.observe("scrape", method, status, seconds)
        requests.labels("scrape", method, str(status)).inc()
        latency.labels("scrape", method).observe(seconds)
    ours = _lines(generate_latest(REGISTRY).decode(), "scrape")
    theirs = _lines(generate_latest(registry).decode(), "scrape")
    assert ours == theirs
    assert len(ours) == 2 * 4 + 2 * (13 + 3)  # 4 kinds: count, creation; 2 methods: buckets,
    # count, sum, creation
