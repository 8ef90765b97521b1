"""``exchange-server status``, the status JSON, the monitoring files of the deploy kit.

The end-to-end tests run a real ``exchange-server run`` (metrics on, an admin token) and read
it with the real command; the judgement is also tested on made-up samples, where every
threshold can be crossed on purpose.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import ConfigError
from exchange_server.common.metrics import RateWindow, Timeline
from exchange_server.deploy import DeployOptions, generate
from exchange_server.status.collect import (
    Scrape,
    Target,
    Thresholds,
    build_status,
    targets_from_configs,
)
from tests.support.server import REPO, ServerProcess, free_port
from tests.support.status_support import RULES, missing_metrics, named_metrics, scrape_names

TOKEN = "status-test-token"


def status_cmd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exchange_server", "status", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("status") / "data",
                        extra=["--admin-token", TOKEN]).start()
    try:
        yield srv
    finally:
        srv.stop()


def trade(srv: ServerProcess, n: int = 3) -> None:
    srv.call("balance.update", 1, "BTC", "deposit", time.time_ns(), "10", {})
    srv.call("balance.update", 2, "BCH", "deposit", time.time_ns(), "10000", {})
    for _ in range(n):
        srv.call("order.put_limit", 1, "BTCBCH", 1, "0.1", "100", "0.002", "0.001", "s")
        srv.call("order.put_limit", 2, "BTCBCH", 2, "0.1", "100", "0.002", "0.001", "s")


def read_status(srv: ServerProcess, *extra: str) -> tuple[int, dict[str, Any]]:
    result = status_cmd("--metrics-port", str(srv.metrics_port), "--json", *extra)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


# -- end to end: embedded ----------------------------------------------------------------------


def test_status_of_a_running_exchange(server: ServerProcess) -> None:
    trade(server)

    def settled() -> dict[str, Any] | None:
        code, status = read_status(server)
        engine, lag = status["matchengine"], status["lag"]
        done = (code == 0 and engine["orders_per_second"] > 0 and engine["trades_per_second"] > 0
                and lag["marketprice"]["operations"] == 0 and lag["accessws"]["operations"] == 0
                and lag["history_follower"]["operations"] == 0 and lag["bus"]["operations"] == 0)
        return status if done else None

    status = wait_for(settled)
    assert status["healthy"] and status["problems"] == []
    [row] = status["services"]
    assert row["up"] and row["pid"] == server.proc.pid and row["uptime_seconds"] > 0  # type: ignore[union-attr]
    assert row["services"] == ["accesshttp", "accessws", "marketprice", "matchengine",
                               "readhistory"]
    engine = status["matchengine"]
    assert engine["durable_operation"] == engine["operation_id"] >= 8
    assert engine["commit_seconds_avg"] > 0
    assert engine["operations_since_slice"] == engine["durable_operation"]  # no slice yet
    assert engine["last_slice_time"] == 0 and engine["open_orders"] == 0
    assert status["lag"]["history_follower"] == {"operations": 0, "seconds": 0}
    # accessws has seen the newest order in its orders messages
    assert status["lag"]["accessws"] == {"operations": 0, "seconds": 0}
    assert status["connections"]["accesshttp"] >= 0 and status["connections"]["accessws"] == 0

    text = status_cmd("--metrics-port", str(server.metrics_port))
    assert text.returncode == 0, text.stdout + text.stderr
    assert "exchange: HEALTHY" in text.stdout and f"{server.proc.pid}" in text.stdout  # type: ignore[union-attr]
    assert "a restart would replay" in text.stdout


def test_thresholds_make_it_unhealthy(server: ServerProcess, tmp_path: Path) -> None:
    code, status = read_status(server, "--max-slice-age-seconds", "0")
    assert code == 1 and not status["healthy"]
    assert any(p.startswith("no slice for") for p in status["problems"])
    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps({"operations_since_slice": 0, "slice_age_seconds": None}))
    code, status = read_status(server, "--thresholds", str(limits))
    assert code == 1
    assert [p for p in status["problems"] if "restart would replay" in p]
    assert not [p for p in status["problems"] if p.startswith("no slice")]
    # a flag overrides the file; a negative value turns a check off
    code, _ = read_status(server, "--thresholds", str(limits), "--max-operations-since-slice",
                          "-1")
    assert code == 0
    limits.write_text(json.dumps({"no_such_limit": 1}))
    bad = status_cmd("--metrics-port", str(server.metrics_port), "--thresholds", str(limits))
    assert bad.returncode == 2 and "unknown threshold 'no_such_limit'" in bad.stderr


def test_status_json_needs_the_admin_token(server: ServerProcess) -> None:
    def get(path: str, auth: str | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": auth} if auth else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    assert get("/status.json")[0] == 401
    assert get("/status.json", "Bearer wrong")[0] == 401
    code, body = get("/status.json", f"Bearer {TOKEN}")
    assert code == 200 and json.loads(body)["services"][0]["pid"] == server.proc.pid  # type: ignore[union-attr]
    code, body = get("/status")
    assert code == 200 and b"status.json" in body  # the page itself holds no data
    assert get("/metrics")[0] == 200  # Prometheus scrapes without the token, as before


def test_serve_shows_the_endpoints_it_reads(server: ServerProcess, tmp_path: Path) -> None:
    """``--serve``: the page and /status.json over the given endpoints (the production view);
    one of them down makes it unhealthy."""
    port, dead = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange_server", "status", "--serve", f"127.0.0.1:{port}",
         "--url", f"http://127.0.0.1:{server.metrics_port}/metrics",
         "--url", f"http://127.0.0.1:{dead}/metrics", "--timeout", "2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def fetch() -> dict[str, Any] | None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/status.json")
                resp = conn.getresponse()
                return json.loads(resp.read()) if resp.status == 200 else None
            except OSError:
                return None
            finally:
                conn.close()

        status = wait_for(fetch)
        assert [r["up"] for r in status["services"]] == [True, False]
        assert status["services"][0]["pid"] == server.proc.pid  # type: ignore[union-attr]
        assert status["problems"] == [f"url-2 is down (http://127.0.0.1:{dead}/metrics: "
                                      "[Errno 111] Connection refused)"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_dashboard_and_rules_name_only_exported_metrics(server: ServerProcess) -> None:
    trade(server, 1)  # so that the labelled request histograms have samples
    names = named_metrics()
    assert {"exchange_history_follower_lag_seconds", "exchange_refused_writes_total",
            "exchange_last_slice_age_seconds", "exchange_operlog_commit_seconds_bucket",
            "exchange_service_up"} <= names
    exported = scrape_names(f"http://127.0.0.1:{server.metrics_port}/metrics")
    assert missing_metrics(exported) == set()


def test_slice_after_restart(tmp_path: Path) -> None:
    """A stop writes a final slice: after the restart the status shows it, with nothing to
    replay, until new operations arrive."""
    srv = ServerProcess(tmp_path / "data").start()
    try:
        trade(srv, 1)
        before = time.time()
        assert srv.stop() == 0
        srv.start()
        _, status = read_status(srv)
        engine = status["matchengine"]
        assert engine["last_slice_time"] >= int(before) - 1
        assert engine["operations_since_slice"] == 0
        assert engine["last_slice_age_seconds"] < 600
        srv.call("balance.update", 3, "BTC", "deposit", 99, "1", {})
        _, status = read_status(srv)
        assert status["matchengine"]["operations_since_slice"] == 1
    finally:
        srv.stop()


def test_slice_made_by_the_console(server: ServerProcess) -> None:
    """A slice taken while running (forked child, the console's ``makeslice``) shows once it
    is published: its time, and nothing to replay."""
    trade(server, 1)
    since = int(time.time())
    with socket.create_connection(("127.0.0.1", server.cli_port), timeout=60) as sock:
        sock.sendall(b"makeslice\n")
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply == b"OK\n"  # answered once the slice is published
    _, status = read_status(server)
    engine = status["matchengine"]
    assert engine["last_slice_time"] >= since
    assert engine["operations_since_slice"] == 0


def test_down_when_nothing_answers() -> None:
    port = free_port()
    result = status_cmd("--metrics-port", str(port), "--json", "--timeout", "2")
    assert result.returncode == 1
    status = json.loads(result.stdout)
    assert status["services"][0]["up"] is False
    assert status["problems"] == [
        f"embedded is down (http://127.0.0.1:{port}/metrics: [Errno 111] Connection refused)"]


# -- the deploy kit ------------------------------------------------------------------------------


def test_deploy_kit_health_check_and_monitoring_files(tmp_path: Path) -> None:
    dep = generate(tmp_path / "d", DeployOptions(
        command=f"{sys.executable} -m exchange_server",
        environment={"PYTHONPATH": str(REPO)}, instances={"accesshttp": 2},
        ports={f"{s}_metrics": free_port() for s in (
            "alertcenter", "matchengine", "marketprice", "readhistory", "accessws")}
        | {"accesshttp_metrics": [free_port(), free_port()]}))
    mon = dep.root / "monitoring"
    assert json.loads((mon / "thresholds.json").read_text()) == json.loads(
        json.dumps(Thresholds().__dict__))
    assert (mon / "prometheus-rules.yml").read_text() == RULES.read_text()
    prom = (mon / "prometheus.yml").read_text()
    for inst in dep.instances:
        assert f'"127.0.0.1:{inst.ports["metrics"]}"' in prom
        assert f'exchange_instance: "{inst.name}"' in prom
    targets, unwatched = targets_from_configs(dep.root)
    assert sorted(t.name for t in targets) == sorted(i.name for i in dep.instances)
    assert unwatched == []
    # nothing runs: every instance is reported down, exit code 1
    result = subprocess.run([str(dep.root / "check_health.sh"), "--json", "--timeout", "2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    status = json.loads(result.stdout)
    assert sorted(r["name"] for r in status["services"] if r["up"] is False) == sorted(
        i.name for i in dep.instances)
    # check_alive.sh keeps its meaning (one instance)
    assert "check_alive" in (dep.root / "matchengine" / "shell" / "check_alive.sh").read_text()


def test_promtool_accepts_the_rules_and_the_generated_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run scripts/test-deps.sh (Debian's prometheus)")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout
    dep = generate(tmp_path / "d")
    result = subprocess.run([promtool, "check", "config", "prometheus.yml"],
                            cwd=dep.root / "monitoring", capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_configs_without_metrics_are_reported_unwatched(tmp_path: Path) -> None:
    (tmp_path / "matchengine.json").write_text(json.dumps(
        {"metrics": {"bind": "tcp@0.0.0.0:1"}}))
    (tmp_path / "readhistory.json").write_text(json.dumps({}))
    targets, unwatched = targets_from_configs(tmp_path)
    assert targets == [Target("matchengine", "http://127.0.0.1:1/metrics")]
    assert unwatched == ["readhistory"]
    (tmp_path / "readhistory.json").write_text(json.dumps({"metrics": {"bind": "udp@x"}}))
    with pytest.raises(ConfigError, match="metrics.bind"):
        targets_from_configs(tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        targets_from_configs(tmp_path / "nope")


# -- the judgement on made-up samples ------------------------------------------------------------


def _engine(**values: float) -> Scrape:
    base = {"service_up": 1, "operations": 100, "operlog_durable_operation": 100,
            "operlog_commit_seconds_avg": 0.002, "last_slice_age_seconds": 10,
            "operations_since_slice": 5, "history_follower_lag": 0,
            "history_follower_lag_seconds": 0, "bus_lag": 0, "bus_lag_seconds": 0,
            "trades_total": 50, "orders_total": 80, "process_pid": 42}
    base.update(values)
    return Scrape(Target("matchengine", "u"), {f"exchange_{k}": {"matchengine": v}
                                               for k, v in base.items()})


def _marketprice(last_deal: float, when: float) -> Scrape:
    return Scrape(Target("marketprice", "m"), {
        "exchange_service_up": {"marketprice": 1},
        "exchange_marketprice_last_deal_id": {"marketprice": last_deal},
        "exchange_marketprice_last_deal_time": {"marketprice": when}})


def test_judgement() -> None:
    now = 1_000_000.0
    ok = build_status([_engine(), _marketprice(50, now - 500)], Thresholds(), now=now)
    assert ok["healthy"] and ok["lag"]["marketprice"] == {"operations": 0, "seconds": 0}
    bad = build_status([_engine(history_follower_lag_seconds=31, bus_lag=10001,
                                operlog_commit_seconds_avg=0.6),
                        _marketprice(40, now - 90)], Thresholds(), now=now)
    assert bad["problems"] == [
        "operation log commits take 0.600 s (> 0.5)",
        "history_follower is 31 s behind (> 30)",
        "bus is 10001 behind (> 10000)",
        "marketprice is 90 s behind (> 60)",
    ]
    assert bad["lag"]["marketprice"] == {"operations": 10, "seconds": 90}
    down = build_status([Scrape(Target("matchengine", "u"), error="refused")], Thresholds())
    assert down["problems"] == ["matchengine is down (u: refused)"]
    assert build_status([_marketprice(1, now)], Thresholds())["problems"] == [
        "no matchengine among the endpoints read"]


def test_thresholds_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    for bad, message in (([], "expected a JSON object"), ({"bus_lag": "1"}, "non-negative"),
                         ({"bus_lag": -1}, "non-negative"), ({"bus_lag": True}, "non-negative")):
        path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=message):
            Thresholds.load(path)
    path.write_text(json.dumps({"bus_lag": None, "commit_seconds": 2}))
    loaded = Thresholds.load(path)
    assert loaded.bus_lag is None and loaded.commit_seconds == 2


def test_rate_window_and_timeline() -> None:
    clock = [0.0]
    value = [0]
    rate = RateWindow(lambda: value[0], seconds=60, clock=lambda: clock[0])
    assert rate.rate() == 0.0
    for _ in range(120):  # 10 per second for two minutes: only the last minute counts
        rate.sample()
        clock[0] += 1
        value[0] += 10
    assert rate.rate() == 10.0
    line = Timeline(lambda: value[0], keep=3, clock=lambda: clock[0])
    clock[0], value[0] = 100.0, 5
    line.sample()
    clock[0], value[0] = 101.0, 9
    line.sample()
    line.sample()  # unchanged: not recorded again
    clock[0] = 110.0
    assert line.lag_seconds(9) == 0.0  # caught up
    assert line.lag_seconds(5) == 9.0  # the first id after 5 appeared at 101
    assert line.lag_seconds(0) == 10.0
    for _ in range(5):  # bounded: the oldest samples go
        value[0] += 1
        line.sample()
    assert len(line.values) == 3


