"""End to end with the load that measured the original side by side (../shared/bench/).

Why a benchmark of its own: bench_http's load (1,000 users, its own Lua) is this project's;
the Performance issue's goals are stated against ``fund.py`` then ``wrk_orders.lua`` (100
users, prices 95..105, amount 0.01), the exact load the original C server ran.  Copies of the
two files live beside this module so a clone stands alone.

Run: ``.venv/bin/python -m bench.bench_e2e [seconds] [connections...]`` (default 10 s, 16 and
64 connections).  For each connection count: a fresh ``exchange-server run`` with every service
on (SQLite, fsync, in-process bus), ``fund.py``, then ``wrk -t1 -cN`` with ``wrk_orders.lua``.
Prints accepted orders/s, refused orders (any reply other than ``"error": null``), p50/p99
latency, and microseconds of CPU per accepted order for the main process and the history
follower (read until the follower has caught up after the load).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_http import ensure_wrk
from bench.common import report
from bench.cpu import CpuMeter, settle
from tests.support.server import ServerProcess

HERE = Path(__file__).resolve().parent
TITLE = "end to end: ../shared/bench load (fund.py, wrk_orders.lua), every service on"


def wrk_summary(out: str) -> dict[str, Any]:
    """The JSON line wrk_orders.lua writes last."""
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise SystemExit(f"wrk printed no summary:\n{out}")


def one(seconds: int, connections: int, pause_ms: int = 0) -> dict[str, Any]:
    """One run at ``connections``; ``pause_ms`` > 0: each connection waits that long after a
    reply before its next request (``wrk_orders_paced.lua``, bench/bench_paced.py)."""
    wrk = ensure_wrk()
    script = HERE / ("wrk_orders_paced.lua" if pause_ms else "wrk_orders.lua")
    pause = ["--", str(pause_ms)] if pause_ms else []
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            url = f"http://127.0.0.1:{server.port}/"
            subprocess.run([sys.executable, str(HERE / "fund.py"), url], check=True)
            assert server.proc is not None
            meter = CpuMeter({"main": server.proc.pid}).begin()
            out = subprocess.run(
                [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s",
                 str(script), url, *pause],
                check=True, capture_output=True, text=True).stdout
            settle(meter)
        finally:
            server.stop()
    summary = wrk_summary(out)
    figures: dict[str, Any] = {
        "connections": connections,
        "accepted orders/s": float(summary["ok_per_s"]),
        "refused": int(summary["bad"]),
        "accepted": int(summary["ok"]),
        "p50 latency (ms)": float(summary["p50_ms"]),
        "p99 latency (ms)": float(summary["p99_ms"]),
    }
    figures.update(meter.per_order(int(summary["ok"])))
    paced = f", paced: {pause_ms} ms between a reply and the next request" if pause_ms else ""
    report(f"{TITLE}{paced}, {connections} connections", figures)
    return figures


def main(seconds: int = 10, connections: tuple[int, ...] = (16, 64)) -> list[dict[str, Any]]:
    return [one(seconds, n) for n in connections]


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(args[0] if args else 10, tuple(args[1:]) or (16, 64))
