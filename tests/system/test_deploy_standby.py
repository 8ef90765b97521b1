"""The deploy kit's active/standby matchengines, run for real.

Why: ``exchange-server deploy --instances matchengine=2`` must give a tree that works as
written: start_all.sh brings both engines up (one active, one standby: a standby keeps its RPC
port closed, so the script waits on the consoles and then for one active), the gateways reach
whichever is active, a SIGKILL of the active's worker hands the lease to the other, and the
kit's own health check (check_health.sh, ``exchange-server status -c DIR``) sees both engines
and exactly one active.  The generated configs alone are checked in test_deploy.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from exchange_server.common.config import LeaderConfig, MysqlConfig
from exchange_server.deploy import DEFAULT_PORTS, Deployment, DeployOptions, Instance, generate
from tests.support.server import REPO
from tests.support.waiting import wait_until
from tests.system.test_deploy import lock_held
from tests.system.test_nginx import _kill_tree, _logs, _path, free_ports, rpc

pytestmark = [pytest.mark.mysql, pytest.mark.slow]

#: Redis database of marketprice and alertcenter here (flushed before and after).
REDIS_DB = 14
MARKET = "BTCBCH"
#: as tests/support/failover.py: short enough for a test, long enough not to flap
LEADER = LeaderConfig(lease=6.0, renew=1.0)
#: generous: a loaded machine (takeover times are bench/bench_failover.py's business)
TIMEOUT = 120.0


@pytest.fixture
def standby_deployment(tmp_path: Path, mysql_config: Callable[..., MysqlConfig],
                       kafka_topics: Callable[[], str], kafka_brokers: str,
                       sentinel_server: tuple[list[str], str]) -> Iterator[Deployment]:
    db_log, db_history = mysql_config("test_dsb_log"), mysql_config("test_dsb_history")
    sentinels, master = sentinel_server
    counts = {"matchengine": 2}
    p = free_ports(sum(counts.get(k.split("_")[0], 1) for k in DEFAULT_PORTS))
    ports: dict[str, list[int]] = {}
    for name in DEFAULT_PORTS:
        n = counts.get(name.split("_")[0], 1)
        ports[name], p = p[:n], p[n:]
    dep = generate(tmp_path / "deploy", DeployOptions(
        mysql=db_log, db_log=db_log.name, db_history=db_history.name,
        sentinels=sentinels, sentinel_master=master, redis_db=REDIS_DB, kafka=kafka_brokers,
        topic_prefix=kafka_topics(), lock_dir=tmp_path / "locks", instances=counts,
        ports=ports, leader=LEADER,
        # this tree's code (the venv's console script would import the installed copy)
        command=[sys.executable, "-m", "exchange_server"], environment={"PYTHONPATH": str(REPO)}))
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    try:
        init = subprocess.run(
            [sys.executable, "-m", "exchange_server", "db", "init", "-c",
             str(dep.instance("matchengine").config_path)],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert init.returncode == 0, init.stdout + init.stderr
        start = subprocess.run([str(dep.root / "start_all.sh")], capture_output=True, text=True,
                               timeout=300, env={"WAIT_TIMEOUT": "120", "PATH": _path()})
        assert start.returncode == 0, start.stdout + start.stderr + _logs(dep)
        assert "matchengine: 127.0.0.1:" in start.stdout and " is active" in start.stdout
        yield dep
    finally:
        stop = subprocess.run([str(dep.root / "stop_all.sh")], capture_output=True, text=True,
                              timeout=600)
        leftovers = [i.name for i in dep.instances if lock_held(i.lock_file)]
        for inst in dep.instances:  # should not be needed: stop_all.sh stopped them
            if lock_held(inst.lock_file):
                _kill_tree(int(inst.lock_file.read_text()))
        client.flushdb()
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert not leftovers, f"still running after stop_all.sh: {leftovers}"


def leader_gauge(inst: Instance) -> float | None:
    """``exchange_leader{service="matchengine"}`` of one engine (None: not served now)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{inst.ports['metrics']}/metrics",
                                    timeout=30) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith('exchange_leader{service="matchengine"} '):
            return float(line.split()[-1])
    return None


def roles(dep: Deployment) -> dict[str, float | None]:
    return {inst.name: leader_gauge(inst) for inst in dep.of("matchengine")}


def one_active(dep: Deployment) -> tuple[Instance, Instance] | None:
    """(active, standby) once one engine reports leader 1 and the other 0."""
    now = roles(dep)
    if sorted(now.values(), key=str) != [0.0, 1.0]:
        return None
    a, b = dep.of("matchengine")
    return (a, b) if now[a.name] == 1.0 else (b, a)


def worker_pid(inst: Instance) -> int | None:
    """The watchdog's child (the watchdog's pid is in the lock file)."""
    watchdog = inst.lock_file.read_text().strip()
    out = subprocess.run(["pgrep", "-P", watchdog], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


#: the last refusal of :func:`order_accepted` (for a failure's message)
PROBLEMS: list[str] = []


def order_accepted(port: int, n: int) -> bool:
    """One limit sell of user 1 through accesshttp, without retrying."""
    try:
        order = rpc(port, "order.put_limit", 1, MARKET, 1, "0.1", "100", "0.002", "0.001",
                    f"dsb{n}", retry=False)
    except AssertionError as e:
        PROBLEMS[:] = [str(e)]
        return False
    return order["left"] == "0.1"


def test_standby_group_from_the_kit_fails_over(standby_deployment: Deployment) -> None:
    dep = standby_deployment
    port = dep.instance("accesshttp").port
    active, _ = wait_until(lambda: one_active(dep), TIMEOUT, 0.1,
                           "one active and one standby matchengine")
    rpc(port, "balance.update", 1, "BTC", "deposit", 1, "10", {}, timeout=60)
    assert order_accepted(port, 0)

    killed = wait_until(lambda: worker_pid(active), TIMEOUT, 0.1, f"{active.name}'s worker")
    os.kill(killed, signal.SIGKILL)
    tries = iter(range(1, 1_000_000))
    try:
        wait_until(lambda: order_accepted(port, next(tries)), TIMEOUT, 0.1,
                   f"an order accepted after {active.name}'s worker was killed")
    except AssertionError as e:
        raise AssertionError(f"{e}: last refusal {PROBLEMS}, leader gauges {roles(dep)}\n"
                             f"{_logs(dep)}") from None
    # one active again: usually the standby, but on a loaded machine the killed one's
    # watchdog may restart its worker before the standby looks at the free lease
    now, other = wait_until(lambda: one_active(dep), TIMEOUT, 0.1,
                            "one active and one standby after the takeover")
    assert worker_pid(active) not in (None, killed)

    # the kit's health check sees both engines, one active
    health = subprocess.run([str(dep.root / "check_health.sh"), "--json"], capture_output=True,
                            text=True, timeout=120)
    assert health.returncode in (0, 1), health.stdout + health.stderr
    view = json.loads(health.stdout)["leadership"]
    assert view["active"] == now.name, view
    assert {r["name"]: r["role"] for r in view["matchengines"]} == {
        now.name: "active", other.name: "standby"}, view
    assert view["epoch"] == 2, view  # one takeover
    assert (view["last_change"] or {}).get("holder") == now.name, view
