"""What the monitoring files name, and what a running system exports (test_status.py,
test_topology.py): every metric the Grafana dashboard and the alert rules use must exist."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from exchange_server.status.collect import parse_metrics
from tests.support.server import REPO

TEMPLATES = REPO / "deploy" / "templates"
DASHBOARD = TEMPLATES / "grafana-dashboard.json"
RULES = TEMPLATES / "prometheus-rules.yml"
#: made by Prometheus itself for each scrape target, not exported by a service
PROMETHEUS_MADE = {"up"}
#: exported only by a matchengine that runs with a standby (its ``leader`` block), never by
#: ``exchange-server run``; the status command's reading of them is tested in
#: test_status_leadership.py on an exporter serving exactly these names
LEADERSHIP_METRICS = {"exchange_leader", "exchange_leader_epoch",
                      "exchange_standby_lag_operations", "exchange_leader_changes"}
_NAME = re.compile(r"\b((?:exchange|process)_[a-z0-9_]+|up)\b(?!\s*\()")


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    text = RULES.read_text()
    exprs += re.findall(r"expr:\s*>?\s*\n?((?:.*\n)*?)\s*(?:for|labels):", text)
    return exprs


def named_metrics() -> set[str]:
    """Metric names in the dashboard's and the rules' PromQL expressions."""
    names: set[str] = set()
    for expr in expressions():
        names.update(_NAME.findall(re.sub(r"\{[^}]*\}", "", expr)))
    return names


def scrape_names(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return set(parse_metrics(text))


def missing_metrics(exported: set[str], standby: bool = False) -> set[str]:
    """Names the dashboard and the rules use but ``exported`` lacks (``standby=False``: a
    matchengine without a standby, which does not export the leadership gauges)."""
    return named_metrics() - exported - PROMETHEUS_MADE - (set() if standby
                                                           else LEADERSHIP_METRICS)


__all__ = ["DASHBOARD", "LEADERSHIP_METRICS", "RULES", "Path", "missing_metrics",
           "named_metrics", "scrape_names"]
