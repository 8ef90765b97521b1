"""``metrics.observe`` keeps the labelled children of each request kind: what it counts must be
what a scrape shows, whether the kind was cached or the cache was full."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from exchange_server.common import metrics


def _count(service: str, method: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "exchange_requests_total", {"service": service, "method": method, "status": status})
    return value or 0.0


def _latency_count(service: str, method: str) -> float:
    value = REGISTRY.get_sample_value(
        "exchange_request_duration_seconds_count", {"service": service, "method": method})
    return value or 0.0


def test_cached_children_count_every_request() -> None:
    metrics.observe("unit", "cached.method", 200, 0.001)
    metrics.observe("unit", "cached.method", 200, 0.002)
    metrics.observe("unit", "cached.method", 404, 0.003)
    assert _count("unit", "cached.method", "200") == 2
    assert _count("unit", "cached.method", "404") == 1
    assert _latency_count("unit", "cached.method") == 3


def test_full_cache_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_CHILDREN_MAX", 0)
    metrics.observe("unit", "uncached.method", 200, 0.001)
    metrics.observe("unit", "uncached.method", 200, 0.001)
    assert ("unit", "uncached.method", 200) not in metrics._CHILDREN
    assert _count("unit", "uncached.method", "200") == 2
    assert _latency_count("unit", "uncached.method") == 2
