"""End to end at a matched offered load: the p99 of two trees compared at the same pace.

Why a benchmark of its own: ``bench_e2e`` saturates the server (each of wrk's connections sends
its next request the moment a reply comes), so a faster tree takes more orders per second and
its latencies are those of a busier machine: its p99 compares a different load.  Here each
connection waits ``pause_ms`` after a reply before its next request (``wrk_orders_paced.lua``:
``bench_e2e``'s load with wrk's ``delay()``), so the offered load is about
``connections / (pause + latency)``: nearly the same for two trees whose latency is well under
the pause, and the p50/p99 say how each answers that load.

Run: ``.venv/bin/python -m bench.bench_paced [seconds] [pause_ms] [connections...]`` (default
10 s, 10 ms, 16 and 64 connections: about 1,300 and 4,000 orders/s).  Prints what ``bench_e2e``
prints, under a title naming the pace.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.bench_e2e import one


def main(seconds: int = 10, pause_ms: int = 10,
         connections: tuple[int, ...] = (16, 64)) -> list[dict[str, Any]]:
    return [one(seconds, n, pause_ms) for n in connections]


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(args[0] if args else 10, args[1] if len(args) > 1 else 10, tuple(args[2:]) or (16, 64))
