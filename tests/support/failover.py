"""Two active/standby matchengines on the production topology, and a client load that records
every acknowledged reply (tests/system/test_failover.py, bench/bench_failover.py).

Engine "a" is the topology's own matchengine, "b" a second one with its own config dir, lock
dir and ports; both have a ``leader`` block, and accesshttp lists both addresses.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from exchange_server.common.config import MysqlConfig
from tests.support.server import REPO, free_port
from tests.support.topology import Topology
from tests.support.waiting import wait_until

USERS = list(range(1, 9))
ENGINES = ("a", "b")
#: long enough not to flap on a loaded machine, short enough for a test
LEASE = {"lease": 6.0, "renew": 1.0}


class Acked:
    """Every acknowledged reply, with when its request was sent and answered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[float, float, str, list[Any], Any]] = []

    def add(self, sent: float, got: float, method: str, params: list[Any], result: Any) -> None:
        with self.lock:
            self.rows.append((sent, got, method, params, result))

    def orders_after(self, t0: float) -> list[float]:
        """Reply times of the orders sent after ``t0``."""
        with self.lock:
            return [got for sent, got, method, _, _ in self.rows
                    if sent > t0 and method == "order.put_limit"]


class Worker(threading.Thread):
    """One client: limit orders, cancels and deposits through accesshttp, until told to stop."""

    def __init__(self, port: int, user: int, acked: Acked, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.user, self.acked, self.stop = port, user, acked, stop
        self.n = 0
        self.orders: list[int] = []

    def run(self) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            method, params = self.next_request()
            sent = time.monotonic()
            try:
                conn.request("POST", "/", json.dumps({"method": method, "params": params,
                                                      "id": 1}))
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                time.sleep(0.05)
                continue
            if resp.status != 200:
                time.sleep(0.02)
                continue
            reply = json.loads(body)
            if reply["error"] is not None:
                time.sleep(0.02)  # e.g. code 3 while no matchengine is active
                continue
            self.acked.add(sent, time.monotonic(), method, params, reply["result"])
            if method == "order.put_limit" and reply["result"]["left"] != "0":
                self.orders.append(reply["result"]["id"])
        conn.close()

    def next_request(self) -> tuple[str, list[Any]]:
        self.n += 1
        n, user = self.n, self.user
        if n % 7 == 0 and self.orders:
            return "order.cancel", [user, "BTCBCH", self.orders.pop(0)]
        if n % 11 == 0:
            return "balance.update", [user, "BTC", "deposit", 1_000_000 * user + n, "0.01", {}]
        side = 1 + (n + user) % 2
        price = f"{99 + (n * 7 + user) % 3}"
        return "order.put_limit", [user, "BTCBCH", side, "0.1", price, "0", "0", f"w{user}-{n}"]


class Pair:
    """The production topology with a second matchengine: engine "a" is the topology's own,
    "b" has its own config dir, lock dir and ports."""

    def __init__(self, root: Path, log_db: MysqlConfig, history_db: MysqlConfig,
                 redis_db: int) -> None:
        self.topo = Topology(root, log_db, history_db, redis_db,
                             topic_prefix=f"fo{uuid.uuid4().hex[:8]}_")
        self.log_db, self.history_db = log_db, history_db
        configs = self.topo.configs
        a = configs["matchengine"]
        a["leader"] = dict(LEASE, instance="engine-a")
        b = copy.deepcopy(a)
        self.ports = {"a": self.topo.ports["matchengine"], "b": free_port()}
        self.metrics = {"a": self.topo.ports["me_metrics"], "b": free_port()}
        b["svr"]["bind"] = [f"tcp@127.0.0.1:{self.ports['b']}"]
        b["cli"] = f"tcp@127.0.0.1:{free_port()}"
        b["metrics"] = {"bind": f"tcp@127.0.0.1:{self.metrics['b']}"}
        b["log"]["path"] = str(root / "log" / "matchengine_b")
        b["leader"] = dict(LEASE, instance="engine-b")
        addrs = [f"tcp@127.0.0.1:{self.ports[e]}" for e in ENGINES]
        configs["accesshttp"]["matchengine"]["addr"] = addrs
        self.dirs = {"a": (self.topo.conf, self.topo.lock_dir),
                     "b": (root / "conf_b", root / "locks_b")}
        self.dirs["b"][0].mkdir()
        self.config, self.config_b = a, b
        #: the standbys' held events are bounded too tightly for the load (takeovers restore)
        self.cold = False
        self.write_configs()

    def write_configs(self) -> None:
        for name in ("matchengine", "accesshttp"):
            (self.topo.conf / f"{name}.json").write_text(
                json.dumps(self.topo.configs[name], indent=2))
        (self.dirs["b"][0] / "matchengine.json").write_text(json.dumps(self.config_b, indent=2))

    def start(self, engine: str) -> None:
        conf, locks = self.dirs[engine]
        result = subprocess.run(
            [sys.executable, "-m", "exchange_server", "matchengine", "-c",
             str(conf / "matchengine.json"), "--daemon", "--lock-dir", str(locks)],
            cwd=REPO, env=dict(os.environ, EXCHANGE_LOCK_DIR=str(locks)), capture_output=True,
            text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

    def watchdog_pid(self, engine: str) -> int:
        lock = self.dirs[engine][1] / "matchengine.lock"
        return wait_until(lambda: _read_pid(lock), 60, 0.05, f"watchdog of {engine}")

    def worker_pid(self, engine: str) -> int | None:
        out = subprocess.run(["pgrep", "-P", str(self.watchdog_pid(engine))],
                             capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None

    def stop(self, engine: str) -> None:
        lock = self.dirs[engine][1] / "matchengine.lock"
        pid = _read_pid(lock)
        if pid is None:
            return
        worker = self.worker_pid(engine)
        if worker is not None:  # a stopped worker must be able to hear the SIGTERM
            with _suppress_lookup():
                os.kill(worker, signal.SIGCONT)
        with _suppress_lookup():
            os.kill(pid, signal.SIGTERM)
        if not _gone(pid, 60):
            with _suppress_lookup():
                os.kill(pid, signal.SIGKILL)

    def gauges(self, engine: str) -> dict[str, float]:
        """The leader gauges of one engine (empty while its metrics are not served)."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics[engine]}/metrics", timeout=30) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        found = {}
        for line in text.splitlines():
            for name in ("leader", "leader_epoch", "standby_lag_operations", "leader_changes"):
                if line.startswith(f'exchange_{name}{{service="matchengine"}} '):
                    found[name] = float(line.split()[-1])
        return found

    def active(self) -> str | None:
        leaders = [e for e in ENGINES if self.gauges(e).get("leader") == 1]
        return leaders[0] if len(leaders) == 1 else None

    def log(self, engine: str) -> str:
        name = "matchengine" if engine == "a" else "matchengine_b"
        return "\n".join(f.read_text() for f in sorted((self.topo.root / "log").glob(f"{name}*"))
                         if not (engine == "a" and "matchengine_b" in f.name))


def _read_pid(lock: Path) -> int | None:
    try:
        text = lock.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        return kind is ProcessLookupError


def orders_again(acked: Acked, t0: float, timeout: float, what: str) -> float:
    """Seconds from ``t0`` to the reply of the first order sent after it."""
    wait_until(lambda: acked.orders_after(t0), timeout, 0.05, f"orders after {what}")
    return min(acked.orders_after(t0)) - t0


def fund(port: int) -> None:
    """Deposits for every worker's user, through accesshttp."""
    from tests.system.test_topology import call

    for u in USERS:
        call(port, "balance.update", u, "BTC", "deposit", u, "1000", {})
        call(port, "balance.update", u, "BCH", "deposit", 100 + u, "1000000", {})
