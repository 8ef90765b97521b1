"""The operator's view of active/standby matchengines: ``exchange-server status`` (text, JSON,
exit code) and its ``--serve`` page data over real metrics endpoints.

Why endpoints of our own here: the leadership gauges come from matchengines with a ``leader``
block (matchprocess/leader.py); putting real ones in each state judged here (no active, two
actives, a lagging standby) would take a lease race per case.  Each matchengine endpoint is a
real HTTP server serving what ``common.metrics.gauges("matchengine")`` exports, the leadership
gauges included (``LEADERSHIP_METRICS``), in prometheus_client's text format; the status
command reads them over HTTP as it reads any deployment.  ``leader_history`` is read from a
real MariaDB database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import MysqlConfig
from exchange_server.status.collect import Scrape, Target, Thresholds, build_status, parse_metrics
from exchange_server.storage import mysql as mysql_db
from tests.support.leadership import (
    Exporter,
    create_leader_history,
    exporter_pool,
    leader,
    standby,
)
from tests.support.server import REPO
from tests.support.status_support import LEADERSHIP_METRICS, RULES, named_metrics


@pytest.fixture
def exporters() -> Iterator[Callable[[], Exporter]]:
    with exporter_pool() as make:
        yield make


def status(*args: str) -> tuple[int, dict[str, Any], str]:
    """``status ARGS --json`` and ``status ARGS`` (text): exit code, JSON, text."""
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "exchange_server", "status", *args, *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
    as_json, as_text = run("--json"), run()
    assert as_json.returncode in (0, 1), as_json.stderr
    assert as_text.returncode == as_json.returncode, as_text.stderr
    return as_json.returncode, json.loads(as_json.stdout), as_text.stdout


def roles(data: dict[str, Any]) -> list[tuple[str, str, int | None, int | None]]:
    return [(r["name"], "DEPOSED" if r["deposed"] else r["role"], r["epoch"], r["standby_lag"])
            for r in data["leadership"]["matchengines"]]


def test_the_exporters_serve_the_names_the_rules_use(exporters: Callable[[], Exporter]) -> None:
    """The contract: the names of the alert rules are the names these endpoints serve."""
    a = exporters()
    a.set(**leader(1))
    rule_names = named_metrics() & LEADERSHIP_METRICS
    assert rule_names == {"exchange_leader", "exchange_leader_epoch",
                          "exchange_standby_lag_operations"}
    with urllib.request.urlopen(a.url, timeout=10) as resp:
        text = resp.read().decode()
    for name in LEADERSHIP_METRICS:
        assert f'{name}{{service="matchengine"}}' in text
    assert "ExchangeTwoActiveMatchengines" in RULES.read_text()


def test_single_matchengine_without_gauges_is_healthy(exporters: Callable[[], Exporter]) -> None:
    a = exporters()
    code, data, text = status("--url", a.url)
    assert code == 0, data["problems"]
    assert data["leadership"]["mode"] == "single"
    assert roles(data) == [("url-1", "single", None, None)]
    assert "matchengine: single (no standby configured): url-1" in text


def test_active_and_standby(exporters: Callable[[], Exporter]) -> None:
    active, spare = exporters(), exporters()
    active.set(**leader(3, changes=2), operations=500)
    spare.set(**standby(3, lag=12), operations=488)
    # the standby listed first: the engine block is still the active's
    code, data, text = status("--url", spare.url, "--url", active.url)
    assert code == 0, data["problems"]
    assert roles(data) == [("url-1", "standby", 3, 12), ("url-2", "active", 3, None)]
    assert data["leadership"]["active"] == "url-2" and data["leadership"]["epoch"] == 3
    assert data["matchengine"]["operation_id"] == 500
    assert "url-2           active            3            -               2" in text
    assert "url-1           standby           3           12               1" in text
    assert "leader: url-2, epoch 3" in text

    spare.set(**standby(3, lag=20001))
    code, data, _ = status("--url", spare.url, "--url", active.url)
    assert code == 1
    assert data["problems"] == ["standby url-1 is 20001 operations behind the log (> 10000)"]
    code, data, _ = status("--url", spare.url, "--url", active.url, "--max-standby-lag", "30000")
    assert code == 0, data["problems"]
    assert Thresholds().standby_lag == 10000


def test_no_active_and_two_actives_are_unhealthy(exporters: Callable[[], Exporter]) -> None:
    a, b = exporters(), exporters()
    a.set(**standby(4, lag=0))
    b.set(**standby(4, lag=3))
    code, data, _ = status("--url", a.url, "--url", b.url)
    assert code == 1
    assert data["problems"] == ["no matchengine is active (standbys: url-1, url-2)"]
    assert data["leadership"]["active"] is None

    # the old active never learnt it lost the lease: the lower epoch is the deposed one
    a.set(**leader(4), operations=700)
    b.set(**leader(5), operations=650)
    code, data, text = status("--url", a.url, "--url", b.url)
    assert code == 1
    assert roles(data) == [("url-1", "DEPOSED", 4, None), ("url-2", "active", 5, None)]
    assert data["problems"] == [
        "url-1 still acts as the active matchengine with epoch 4, but epoch 5 is held by "
        "url-2: it is deposed and does not know it (stop it)"]
    assert data["matchengine"]["operation_id"] == 650  # the leader's, not the deposed one's
    assert "url-1           DEPOSED           4" in text


def test_a_matchengine_that_is_down_is_listed_with_its_role(
        exporters: Callable[[], Exporter], tmp_path: Path) -> None:
    """A deployment's configs name the matchengines: one down shows as "down" beside the
    standby that took over."""
    a, b = exporters(), exporters()
    b.set(**leader(2))
    port_a = a.server.server_port
    a.close()
    for name, port in (("matchengine-a", port_a), ("matchengine-b", b.server.server_port)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"metrics": {"bind": f"tcp@127.0.0.1:{port}"}}))
    code, data, _ = status("-c", str(tmp_path), "--timeout", "2")
    assert code == 1  # the stopped one is down
    assert roles(data) == [("matchengine-a", "down", None, None),
                           ("matchengine-b", "active", 2, None)]
    assert data["leadership"]["active"] == "matchengine-b"
    assert data["problems"][0].startswith("matchengine-a is down")
    assert len(data["problems"]) == 1


@pytest.mark.mysql
def test_last_leader_change_from_the_log_database(
        exporters: Callable[[], Exporter], mysql_config: Callable[..., MysqlConfig],
        tmp_path: Path) -> None:
    """With the matchengine's config, status reads ``leader_history`` from its log database
    and shows the last change; without the table it still answers from the metrics."""
    a, b = exporters(), exporters()
    a.set(**standby(2, lag=0))
    b.set(**leader(2))
    cfg = mysql_config(prefix="leaders")
    db = {"host": cfg.host, "port": cfg.port, "user": cfg.user, "pass": cfg.password,
          "name": cfg.name}
    for name, exporter in (("matchengine-0", a), ("matchengine-1", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"db_log": db, "metrics": {"bind": f"tcp@127.0.0.1:{exporter.server.server_port}"}}))
    mysql_db.ensure_database(cfg)
    code, data, _ = status("-c", str(tmp_path))
    assert code == 0, data["problems"]  # no leader_history table yet
    assert data["leadership"]["history"] is None and data["leadership"]["last_change"] is None

    taken = time.time() - 60
    create_leader_history(cfg, [(1, "host-a:100", "", taken - 3600),
                                (2, "host-b:200", "host-a:100", taken)])
    code, data, text = status("-c", str(tmp_path))
    assert code == 0, data["problems"]
    change = data["leadership"]["last_change"]
    assert change == {"epoch": 2, "holder": "host-b:200", "taken_at": taken,
                      "previous": "host-a:100"}
    assert [h["epoch"] for h in data["leadership"]["history"]] == [2, 1]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(taken))
    assert f"last leader change: epoch 2 taken by host-b:200 (was host-a:100) {when}" in text


def test_other_spellings_of_the_gauges_and_a_history_without_previous() -> None:
    """``exchange_matchengine_leader`` / ``matchengine_leader`` (the names of the issue) are
    read as ``exchange_leader``; a ``leader_history`` without ``previous`` takes the holder
    of the epoch before."""
    text = "\n".join([
        '# TYPE exchange_service_up gauge', 'exchange_service_up{service="matchengine"} 1',
        '# TYPE exchange_matchengine_leader gauge',
        'exchange_matchengine_leader{service="matchengine"} 1',
        '# TYPE matchengine_leader_epoch gauge', 'matchengine_leader_epoch 9',
        '# TYPE matchengine_leader_changes counter', 'matchengine_leader_changes_total 3', ""])
    scrape = Scrape(Target("me", "u"), parse_metrics(text))
    history = [{"epoch": 9, "holder": "b", "taken_at": 2.0},
               {"epoch": 8, "holder": "a", "taken_at": 1.0}]
    view = build_status([scrape], Thresholds(), history=history)["leadership"]
    assert [(r["role"], r["epoch"], r["leader_changes"]) for r in view["matchengines"]] == [
        ("active", 9, 3)]
    assert view["last_change"] == {"epoch": 9, "holder": "b", "taken_at": 2.0, "previous": "a"}
