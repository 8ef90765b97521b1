"""(b) End to end through HTTP with the durable log on: orders/s with 64 keep-alive clients.

Run: ``.venv/bin/python -m bench.bench_http [seconds] [connections]``.  Starts a real
``exchange-server run`` (SQLite operation log with fsync, group commit), funds 1,000 users,
then drives it with wrk (installed from Debian's packages if missing; 2 threads, 64
connections) sending order.put_limit requests of which about half cross the book.  Every
reply is sent only after its operation is durable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import report
from bench.cpu import CpuMeter, settle
from exchange_server.client import HttpClient
from tests.support.server import CallError, ServerProcess

LUA = r"""
math.randomseed(42)
local n = 0
request = function()
  n = n + 1
  local side = (n % 2) + 1
  local off = math.random(-20, 20) / 10
  local price = 100 + off
  if side == 1 then price = 100 - off end
  local amount = math.random(1, 100) / 100
  local user = math.random(1, 1000)
  local body = string.format(
    '{"method": "order.put_limit", "params": [%d, "BTCBCH", %d, "%.2f", "%.1f", ' ..
    '"0.002", "0.001", "bench"], "id": %d}',
    user, side, amount, price, n)
  return wrk.format("POST", "/", {["Content-Type"] = "application/json"}, body)
end
errors = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"error": null', 1, true) then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("LATENCY %f %f %f\n", latency:percentile(50),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is not available (apt-get install wrk)")
    return path


def fund(url: str, users: int) -> None:
    """Deposit for every user, 500 updates per batch request, with the project's client."""
    calls = []
    for u in range(1, users + 1):
        calls.append(("balance.update", [u, "BTC", "deposit", u, Decimal("1000000"), {}]))
        calls.append(("balance.update", [u, "BCH", "deposit", u, Decimal("100000000"), {}]))
    with HttpClient(url) as client:
        for i in range(0, len(calls), 500):
            for result in client.batch(calls[i:i + 500]):
                if isinstance(result, Exception):
                    raise result


def run(seconds: int = 10, connections: int = 64, extra: list[str] | None = None,
        title: str = "end to end: HTTP put_limit, durable log (SQLite, fsync)") -> dict[str, Any]:
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", extra=extra).start()
        try:
            fund(f"http://127.0.0.1:{server.port}/", 1000)
            script = Path(tmp) / "orders.lua"
            script.write_text(LUA)
            assert server.proc is not None
            meter = CpuMeter({"main": server.proc.pid}).begin()
            out = subprocess.run(
                [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s",
                 str(script), f"http://127.0.0.1:{server.port}/"],
                check=True, capture_output=True, text=True).stdout
            t0 = time.monotonic()
            # wrk counts every HTTP 200; count the orders really accepted (not refused with
            # code 3 because the history follower fell too far behind), and how long the
            # follower took to catch up after the load.
            while True:
                try:
                    last = server.call("order.put_limit", 1, "BTCBCH", 1, "0.01", "1000", "0",
                                       "0", "x")
                    break
                except CallError:
                    time.sleep(0.1)
            catch_up = time.monotonic() - t0
            settle(meter)  # until the follower is idle again: its catch-up CPU counts
            accepted = int(last["id"]) - 1
        finally:
            server.stop()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = re.search(r"LATENCY ([\d.]+) ([\d.]+) ([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    figures: dict[str, Any] = {
        "connections": connections,
        "orders/s": rps,
        "accepted orders/s": accepted / seconds,
        "orders accepted / answered": f"{accepted:,} / {total:,}",
        "history backlog drained after (s)": catch_up,
        "p50 latency (ms)": float(lat.group(1)) / 1000 if lat else 0.0,
        "p99 latency (ms)": float(lat.group(2)) / 1000 if lat else 0.0,
        "p99.9 latency (ms)": float(lat.group(3)) / 1000 if lat else 0.0,
        "non-200 answers": int(non2xx.group(1)) if non2xx else 0,
    }
    figures.update(meter.per_order(accepted))
    report(title, figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    run(*args)
