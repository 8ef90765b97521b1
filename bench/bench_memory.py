"""(d) Memory: RSS with 1,000,000 open orders on the book.

Run: ``.venv/bin/python -m bench.bench_memory [N]``.  Non-crossing limit orders from 10,000
users at 2,000 price levels on each side of one market, placed through the RPC method layer.
"""

from __future__ import annotations

import gc
import random
import sys
import time

from bench.common import bench_config, report, rss_mb
from exchange_server.common import gctune
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.methods import MatchEngineMethods


def main(n: int = 1_000_000) -> dict[str, float]:
    gctune.tune()  # as the services run
    users = 10_000
    engine = Engine.from_config(bench_config())
    methods = MatchEngineMethods(engine)
    for u in range(1, users + 1):
        methods.balance_update(0.0, [u, "BTC", "deposit", u, "1000000", {}])
        methods.balance_update(0.0, [u, "BCH", "deposit", u, "1000000000", {}])
    engine.take_events()
    gc.collect()
    base = rss_mb()
    rng = random.Random(3)
    t0 = time.perf_counter()
    for i in range(n):
        side = 1 + (i & 1)
        level = rng.randint(1, 2000) / 100
        price = 100 + level if side == 1 else 100 - level
        amount = rng.randint(1, 10000) / 1000
        methods.order_put_limit(1.0, [rng.randint(1, users), "BTCBCH", side, f"{amount:.3f}",
                                      f"{price:.2f}", "0.002", "0.001", "bench"])
        if i % 10000 == 0:
            engine.take_events()
    engine.take_events()
    elapsed = time.perf_counter() - t0
    gc.collect()
    market = engine.markets["BTCBCH"]
    figures = {
        "open orders": len(market.orders),
        "RSS (MiB)": rss_mb(),
        "RSS of the orders (MiB)": rss_mb() - base,
        "bytes per open order": (rss_mb() - base) * 1024 * 1024 / max(1, len(market.orders)),
        "seconds to place them": elapsed,
    }
    report("memory: open orders on one market", figures)
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
