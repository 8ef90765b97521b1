"""(a) Engine core in-process: orders/s and trades/s for a mixed load, latency per order.

Run: ``.venv/bin/python -m bench.bench_engine [N]`` (default 200,000 orders).  The engine is the
deterministic core with event generation on, exactly as the service drives it, minus I/O.
"""

from __future__ import annotations

import gc
import sys
import time

from bench.common import bench_config, mixed_orders, percentile, report, rss_mb
from exchange_server.common import gctune
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.methods import MatchEngineMethods, present

try:
    from exchange_server.matchengine.configured import Engine
    from exchange_server.matchengine.core.model import Deal
except ImportError:  # a baseline before the core moved (bench.compare --current-bench)
    from exchange_server.matchengine.engine import Engine  # type: ignore[no-redef]
    from exchange_server.matchengine.model import Deal  # type: ignore[no-redef]


def main(n: int = 200_000) -> dict[str, float]:
    gctune.tune()  # as the services run
    users = 1000
    engine = Engine.from_config(bench_config())
    methods = MatchEngineMethods(engine)
    for u in range(1, users + 1):
        methods.balance_update(0.0, [u, "BTC", "deposit", u, "1000000", {}])
        methods.balance_update(0.0, [u, "BCH", "deposit", u, "100000000", {}])
    engine.take_events()
    orders = mixed_orders(n, users)
    put = methods.order_put_limit
    take = engine.take_events
    latencies = []
    trades = 0
    errors = 0
    clock = time.perf_counter
    gc.collect()
    cpu = time.process_time()
    start = clock()
    now = 1_800_000_000.0
    for params in orders:
        t0 = clock()
        try:
            present(put(now, params))
        except RpcError:
            errors += 1
        events = take()
        latencies.append(clock() - t0)
        for e in events:
            if type(e) is Deal:
                trades += 1
    elapsed = clock() - start
    cpu = time.process_time() - cpu
    latencies.sort()
    figures = {
        "orders": n,
        "orders/s": n / elapsed,
        "trades/s": trades / elapsed,
        "trades": trades,
        "rejected": errors,
        # the process's CPU time per order: unlike orders/s, barely moved by other processes
        # taking the CPU (the shared machine), so ratios against a baseline hold steadier
        "CPU us/order": cpu / n * 1e6,
        "p50 latency (us)": percentile(latencies, 50) * 1e6,
        "p99 latency (us)": percentile(latencies, 99) * 1e6,
        "open orders at end": sum(len(m.orders) for m in engine.markets.values()),
        "RSS (MiB)": rss_mb(),
    }
    report("engine core, mixed limit orders (about half cross)", figures)
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
