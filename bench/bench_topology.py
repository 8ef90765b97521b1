"""End to end on the production topology: orders/s through accesshttp with 64 clients.

Run: ``.venv/bin/python -m bench.bench_topology [seconds] [connections]`` after
``bash scripts/services.sh up``.  Starts matchengine (MariaDB operation log, history follower,
Kafka publisher), readhistory, accesshttp, marketprice (Kafka + Redis) and accessws as separate
daemonised processes, like production, funds 1,000 users, then drives accesshttp with wrk.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.bench_http import LUA, ensure_wrk, fund
from bench.common import report
from bench.cpu import CpuMeter, SharedMeter, settle
from exchange_server.common.config import MysqlConfig
from exchange_server.storage import mysql as mysql_db
from tests.support.topology import Topology

SERVICES = ("alertcenter", "matchengine", "readhistory", "accesshttp", "marketprice", "accessws")


def _mysql(name: str) -> MysqlConfig:
    return MysqlConfig(host=os.environ.get("EXCHANGE_MYSQL_HOST", "127.0.0.1"),
                       port=int(os.environ.get("EXCHANGE_MYSQL_PORT", "3306")),
                       user=os.environ.get("EXCHANGE_MYSQL_USER", "exchange"),
                       password=os.environ.get("EXCHANGE_MYSQL_PASSWORD", "exchange"), name=name)


def _post(port: int, body: object) -> object:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/", json.dumps(body))
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def run(seconds: int = 10, connections: int = 64) -> dict[str, object]:
    wrk = ensure_wrk()
    suffix = uuid.uuid4().hex[:8]
    dbs = [_mysql(f"bench_log_{suffix}"), _mysql(f"bench_history_{suffix}")]
    with tempfile.TemporaryDirectory() as tmp:
        topo = Topology(Path(tmp), dbs[0], dbs[1], redis_db=9, topic_prefix=f"bench{suffix}_")
        try:
            for name in SERVICES:
                topo.start(name)
                if name == "accesshttp":
                    deadline = time.monotonic() + 30
                    while True:
                        try:
                            if _post(topo.http_port, {"method": "market.list", "params": [],
                                                      "id": 1}):
                                break
                        except (OSError, ValueError):  # 500 with no body until connected
                            pass
                        if time.monotonic() > deadline:
                            raise SystemExit("accesshttp did not come up")
                        time.sleep(0.2)
            fund(f"http://127.0.0.1:{topo.http_port}/", 1000)
            script = Path(tmp) / "orders.lua"
            script.write_text(LUA)
            meter = CpuMeter({name: topo.wait_worker(name) for name in SERVICES}).begin()
            shared = SharedMeter({"mariadbd": "mariadbd", "kafka": "java"}).begin()
            out = subprocess.run(
                [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s",
                 str(script), f"http://127.0.0.1:{topo.http_port}/"],
                check=True, capture_output=True, text=True).stdout
            shared.load_done()
            t0 = time.monotonic()
            while True:
                reply = _post(topo.http_port, {"method": "order.put_limit", "params": [
                    1, "BTCBCH", 1, "0.01", "1000", "0", "0", "x"], "id": 1})
                assert isinstance(reply, dict)
                if reply["error"] is None:
                    break
                time.sleep(0.1)
            catch_up = time.monotonic() - t0
            settle(meter)  # until the follower and marketprice are idle: their catch-up counts
            shared.end()
            accepted = int(reply["result"]["id"]) - 1
        finally:
            for name in reversed(SERVICES):
                topo.stop(name)
            for cfg in dbs:
                conn = mysql_db.connect(cfg, database=False)
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{cfg.name}`")
                conn.commit()
                conn.close()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    lat = re.search(r"LATENCY ([\d.]+) ([\d.]+) ([\d.]+)", out)
    figures: dict[str, object] = {
        "connections": connections,
        "orders/s answered": rps,
        "accepted orders/s": accepted / seconds,
        "orders accepted / answered": f"{accepted:,} / {total:,}",
        "backlog drained after (s)": catch_up,
        "p50 latency (ms)": float(lat.group(1)) / 1000 if lat else 0.0,
        "p99 latency (ms)": float(lat.group(2)) / 1000 if lat else 0.0,
    }
    figures.update(meter.per_order(accepted))
    figures.update(shared.per_order(accepted, float(figures["CPU us/order total"])))
    report("production topology: HTTP put_limit via accesshttp -> matchengine (MariaDB log, "
           "Kafka, history follower)", figures)  # type: ignore[arg-type]
    return figures


if __name__ == "__main__":
    run(*[int(a) for a in sys.argv[1:3]])
