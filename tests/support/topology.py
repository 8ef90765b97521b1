"""The production topology for end-to-end tests: each service its own daemonised process
(under its watchdog), configs in the original's format, on the real MariaDB and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from exchange_server.common.config import MysqlConfig
from tests.support.server import CODE, SHARED, free_port
from tests.support.waiting import wait_until


def _db(cfg: MysqlConfig) -> dict[str, Any]:
    return {"host": cfg.host, "port": cfg.port, "user": cfg.user, "pass": cfg.password,
            "name": cfg.name}


class Topology:
    """Writes one config per service into ``root/conf`` and runs them with ``--daemon``."""

    def __init__(self, root: Path, db_log: MysqlConfig, db_history: MysqlConfig,
                 redis_db: int, sentinel: str = "127.0.0.1:26379",
                 brokers: str = "127.0.0.1:9092", topic_prefix: str = "") -> None:
        self.root = root
        self.db_log = db_log
        self.conf = root / "conf"
        self.conf.mkdir(parents=True)
        (root / "log").mkdir()
        self.lock_dir = root / "locks"
        self.ports = {name: free_port() for name in
                      ("matchengine", "readhistory", "marketprice", "accesshttp", "http_monitor",
                       "accessws", "ws_monitor", "alertcenter", "cli", "me_metrics",
                       "http_metrics", "mp_metrics", "rh_metrics", "ws_metrics",
                       "ac_metrics")}
        self.redis_db = redis_db
        common = {
            "process": {"file_limit": 10000, "core_limit": 0},
            "alert": {"host": "", "addr": f"127.0.0.1:{self.ports['alertcenter']}"},
        }
        golden = json.loads((SHARED / "golden" / "matchengine.json").read_text())

        def config(name: str, extra: dict[str, Any]) -> dict[str, Any]:
            data = json.loads(json.dumps(common))
            data["alert"]["host"] = name
            data["log"] = {"path": str(root / "log" / name), "flag": "fatal,error,warn,info",
                           "num": 10}
            data.update(extra)
            return data

        def client(name: str) -> dict[str, Any]:
            return {"name": name, "addr": [f"tcp@127.0.0.1:{self.ports[name]}"],
                    "max_pkg_size": 2000000}

        self.configs = {
            "matchengine": config("matchengine", {
                "svr": {"bind": [f"tcp@127.0.0.1:{self.ports['matchengine']}"],
                        "max_pkg_size": 10240, "heartbeat_check": False},
                "cli": f"tcp@127.0.0.1:{self.ports['cli']}",
                "db_log": _db(db_log), "db_history": _db(db_history),
                "assets": golden["assets"], "markets": golden["markets"],
                "brokers": brokers, "slice_interval": 3600, "slice_keeptime": 259200,
                "kafka_topic_prefix": topic_prefix, "bus_mark_file": str(root / "bus.mark"),
                "metrics": {"bind": f"tcp@127.0.0.1:{self.ports['me_metrics']}"},
            }),
            "marketprice": config("marketprice", {
                "svr": {"bind": [f"tcp@127.0.0.1:{self.ports['marketprice']}"],
                        "max_pkg_size": 10240, "heartbeat_check": False},
                "deals": {"brokers": brokers, "topic": f"{topic_prefix}deals", "partition": 0},
                "redis": {"name": "mymaster", "addr": [sentinel], "db": redis_db},
                "accesshttp": f"http://127.0.0.1:{self.ports['accesshttp']}/",
                "metrics": {"bind": f"tcp@127.0.0.1:{self.ports['mp_metrics']}"},
            }),
            "accessws": config("accessws", {
                "svr": {"bind": [f"tcp@127.0.0.1:{self.ports['accessws']}"],
                        "max_pkg_size": 10240, "protocol": "chat"},
                "monitor": {"bind": f"tcp@127.0.0.1:{self.ports['ws_monitor']}",
                            "max_pkg_size": 1000},
                "matchengine": client("matchengine"), "marketprice": client("marketprice"),
                "readhistory": client("readhistory"),
                "orders": {"brokers": brokers, "topic": f"{topic_prefix}orders"},
                "balances": {"brokers": brokers, "topic": f"{topic_prefix}balances"},
                "stops": {"brokers": brokers, "topic": f"{topic_prefix}stops"},
                "auth_url": "http://127.0.0.1:1/auth", "sign_url": "http://127.0.0.1:1/sign",
                "backend_timeout": 2.0, "cache_timeout": 0.1,
                "deals_interval": 0.1, "price_interval": 0.1, "state_interval": 0.1,
                "today_interval": 0.1, "kline_interval": 0.1, "depth_interval": 0.1,
                "depth_limit": [1, 5, 10, 20, 30, 50, 100],
                "depth_merge": ["0", "0.00000001", "0.0001", "0.01", "1"],
                "metrics": {"bind": f"tcp@127.0.0.1:{self.ports['ws_metrics']}"},
            }),
            "readhistory": config("readhistory", {
                "svr": {"bind": [f"tcp@127.0.0.1:{self.ports['readhistory']}"],
                        "max_pkg_size": 1000000, "heartbeat_check": False},
                "db_history": _db(db_history), "worker_num": 4,
                "metrics": {"bind": f"tcp@127.0.0.1:{self.ports['rh_metrics']}"},
            }),
            "accesshttp": config("accesshttp", {
                "svr": {"bind": [f"tcp@127.0.0.1:{self.ports['accesshttp']}"],
                        "max_pkg_size": 102400},
                "monitor": {"bind": f"tcp@127.0.0.1:{self.ports['http_monitor']}",
                            "max_pkg_size": 1000},
                "matchengine": client("matchengine"), "marketprice": client("marketprice"),
                "readhistory": client("readhistory"), "timeout": 2.0, "worker_num": 1,
                "metrics": {"bind": f"tcp@127.0.0.1:{self.ports['http_metrics']}"},
            }),
            "alertcenter": config("alertcenter", {
                "svr": {"bind": [f"udp@127.0.0.1:{self.ports['alertcenter']}",
                                 f"tcp@127.0.0.1:{self.ports['alertcenter']}"],
                        "max_pkg_size": 10240},
                "redis": {"name": "mymaster", "addr": [sentinel], "db": redis_db},
                "metrics": {"bind": f"tcp@127.0.0.1:{self.ports['ac_metrics']}"},
            }),
        }
        for name, data in self.configs.items():
            data.pop("alert") if name == "alertcenter" else None
            (self.conf / f"{name}.json").write_text(json.dumps(data, indent=2))

    @property
    def http_port(self) -> int:
        return self.ports["accesshttp"]

    def env(self) -> dict[str, str]:
        return dict(os.environ, EXCHANGE_LOCK_DIR=str(self.lock_dir))

    def start(self, name: str, timeout: float = 180.0) -> None:
        """Start ``name`` as a daemon and wait until its worker serves (its "server start"
        line): a first matchengine start spends seconds creating the history tables on a
        loaded MariaDB (16-18 s in a loaded CI run), and callers that only waited for the
        worker process asked ports nobody listened on yet."""
        result = subprocess.run(
            [sys.executable, "-m", "exchange_server", name, "-c", str(self.conf / f"{name}.json"),
             "--daemon", "--lock-dir", str(self.lock_dir)],
            cwd=CODE, env=self.env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        self.wait_worker(name)
        wait_until(lambda: self._serves(name), timeout, 0.05, f"{name} to serve")

    def _serves(self, name: str) -> bool:
        pid = self.worker_pid(name)
        files = (self.root / "log").glob(f"{name}*")
        line = f"server start: {name} (pid {pid})"
        return pid is not None and any(line in f.read_text(errors="replace") for f in files)

    def watchdog_pid(self, name: str) -> int:
        deadline = time.monotonic() + 60
        while True:
            try:
                text = (self.lock_dir / f"{name}.lock").read_text().strip()
                if text:
                    return int(text)
            except (OSError, ValueError):
                pass
            assert time.monotonic() < deadline, f"{name}: no watchdog pid"
            time.sleep(0.05)

    def worker_pid(self, name: str) -> int | None:
        out = subprocess.run(["pgrep", "-P", str(self.watchdog_pid(name))], capture_output=True,
                             text=True).stdout.split()
        return int(out[0]) if out else None

    def wait_worker(self, name: str, not_pid: int | None = None, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            pid = self.worker_pid(name)
            if pid is not None and pid != not_pid:
                return pid
            assert time.monotonic() < deadline, f"{name}: no worker"
            time.sleep(0.02)

    def kill_worker(self, name: str) -> tuple[int, int, float]:
        """SIGKILL the worker; returns (old pid, new pid, seconds until the new one ran)."""
        old = self.wait_worker(name)
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()
        new = self.wait_worker(name, not_pid=old)
        return old, new, time.monotonic() - t0

    def stop(self, name: str, timeout: float = 60.0) -> None:
        try:
            pid = self.watchdog_pid(name)
        except AssertionError:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def log(self, name: str) -> str:
        files = sorted((self.root / "log").glob(f"{name}*"))
        return "\n".join(f.read_text()[-3000:] for f in files)
