"""Takeover time of active/standby matchengines under a sustained order load.

Run: ``.venv/bin/python -m bench.bench_failover [rounds] [lease]`` after
``bash scripts/services.sh up``.  Starts two matchengines with a ``leader`` block (lease
``lease`` seconds, renewed every second) on one MariaDB log, plus readhistory and accesshttp
listing both, as daemonised processes (tests/support/failover.py); eight clients put orders,
cancels and deposits through accesshttp all along.  Each round SIGKILLs the active (its
watchdog brings it back as a standby), then SIGSTOPs the new active until the standby took
over and SIGCONTs it (it steps down and comes back as a standby).  Prints, per kind, the best
and worst seconds from the signal to the reply of the first order sent after it: what a client
sees, the gateway's reconnection included (a stopped engine's connection is only given up after
the RPC heartbeat timeout, 3 s).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.bench_history import drop_mysql
from bench.bench_topology import _mysql
from bench.common import report
from exchange_server.common.config import MysqlConfig
from tests.support.failover import USERS, Acked, Pair, Worker, fund, orders_again
from tests.support.waiting import wait_until

TIMEOUT = 120.0


def _standby_caught_up(pair: Pair, engine: str, other: str) -> bool:
    mine, theirs = pair.gauges(engine), pair.gauges(other)
    return (mine.get("leader") == 0 and mine.get("leader_epoch") == theirs.get("leader_epoch")
            and mine.get("standby_lag_operations", 1e9) < 1000 and theirs.get("leader") == 1)


def _round(pair: Pair, acked: Acked) -> tuple[float, float]:
    first = pair.active()
    assert first is not None
    other = "b" if first == "a" else "a"
    wait_until(lambda: _standby_caught_up(pair, other, first), TIMEOUT, 0.1, "a warm standby")
    killed = pair.worker_pid(first)
    assert killed is not None
    t0 = time.monotonic()
    os.kill(killed, signal.SIGKILL)
    kill = orders_again(acked, t0, TIMEOUT, "SIGKILL")
    wait_until(lambda: _standby_caught_up(pair, first, other), TIMEOUT, 0.1, "back as standby")
    stopped = pair.worker_pid(other)
    assert stopped is not None
    t1 = time.monotonic()
    os.kill(stopped, signal.SIGSTOP)
    try:
        stop = orders_again(acked, t1, TIMEOUT, "SIGSTOP")
    finally:
        os.kill(stopped, signal.SIGCONT)
    wait_until(lambda: pair.worker_pid(other) not in (None, stopped), TIMEOUT, 0.1,
               "the deposed engine restarted")
    return kill, stop


def run(rounds: int = 3, lease: float = 6.0) -> dict[str, object]:
    suffix = uuid.uuid4().hex[:8]
    dbs = [_mysql(f"bench_fo_log_{suffix}"), _mysql(f"bench_fo_history_{suffix}")]
    kills: list[float] = []
    stops: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(Path(tmp), dbs[0], dbs[1], redis_db=9)
        for config in (pair.config, pair.config_b):
            config["leader"]["lease"] = lease
        pair.write_configs()
        acked, halt = Acked(), threading.Event()
        workers: list[Worker] = []
        try:
            for engine in ("a", "b"):
                pair.start(engine)
            wait_until(pair.active, TIMEOUT, 0.1, "an active matchengine")
            for name in ("readhistory", "accesshttp"):
                pair.topo.start(name)
            fund(pair.topo.http_port)
            workers = [Worker(pair.topo.http_port, u, acked, halt) for u in USERS]
            for w in workers:
                w.start()
            wait_until(lambda: len(acked.rows) > 300, TIMEOUT, 0.05, "a sustained load")
            for _ in range(rounds):
                kill, stop = _round(pair, acked)
                kills.append(kill)
                stops.append(stop)
        finally:
            halt.set()
            for w in workers:
                w.join(30)
            for name in ("accesshttp", "readhistory"):
                pair.topo.stop(name)
            for engine in ("a", "b"):
                pair.stop(engine)
            for cfg in dbs:
                _drop(cfg)
    figures: dict[str, object] = {
        "rounds": rounds,
        "lease s": lease,
        "SIGKILL takeover best s": min(kills),
        "SIGKILL takeover worst s": max(kills),
        "SIGSTOP takeover best s": min(stops),
        "SIGSTOP takeover worst s": max(stops),
        "acknowledged operations": len(acked.rows),
    }
    report("active/standby matchengines: signal -> first accepted order", figures)
    return figures


def _drop(cfg: MysqlConfig) -> None:
    try:
        drop_mysql(cfg)
    except Exception as e:  # the figures matter more than the clean-up
        print(f"could not drop {cfg.name}: {e}", file=sys.stderr)


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 3,
        float(sys.argv[2]) if len(sys.argv) > 2 else 6.0)
