"""Restart from a slice: seconds to load a slice holding N open orders and replay a log tail.

Run: ``.venv/bin/python -m bench.bench_slice [N] [tail]`` (default 100,000 open orders and
10,000 operations after the slice).  Why: a matchengine killed at any moment restarts from its
newest slice plus the operations logged after it; with slices triggered by the operation count
(``slice_oper_interval``) the tail is bounded, so the restart time is the slice load (per open
order) plus the tail's replay (per operation).  The book is built through the RPC method layer
(non-crossing limit orders from 10,000 users at 2,000 price levels per side, as bench_memory),
the slice is written by the service as at a graceful stop, the tail is a mixed load logged
after it; a fresh service on the same SQLite files then restores, as after SIGKILL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_config, mixed_orders, report, rss_mb
from exchange_server.common import gctune
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store_sqlite import SqliteEngineStore

USERS = 10_000


def build_config() -> Any:
    """``bench_config`` with a long ``commit_timeout`` where the tree has one: building is
    setup, and at load average 11-13 a commit took over the default 0.7 s, the service refused
    the rest and the round was lost (2026-12-03)."""
    config = bench_config()
    if any(f.name == "commit_timeout" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, commit_timeout=600.0)
    return config


def build(directory: Path, n: int, tail: int) -> tuple[int, int]:
    """A slice with ``n`` open orders, then ``tail`` logged operations; (open orders, last id)."""
    store = SqliteEngineStore(directory)
    store.open()
    service = MatchEngineService(build_config(), store)
    methods = service.methods
    rng = random.Random(3)

    async def load() -> None:
        await service.start()
        for u in range(1, USERS + 1):
            service.execute("balance.update", [u, "BTC", "deposit", u, "1000000", {}])
            service.execute("balance.update", [u, "BCH", "deposit", u, "1000000000", {}])
        await service.flush()
        for i in range(n):
            side = 1 + (i & 1)
            level = rng.randint(1, 2000) / 100
            price = 100 + level if side == 1 else 100 - level
            amount = rng.randint(1, 10000) / 1000
            methods.order_put_limit(1.0, [rng.randint(1, USERS), "BTCBCH", side,
                                          f"{amount:.3f}", f"{price:.2f}", "0.002", "0.001",
                                          "bench"])
            service.engine.take_events()
        # the book is built outside the log; the slice covers it (ids up to the deposits)
        await service.make_slice_now()
        for params in mixed_orders(tail, USERS, seed=5):
            try:
                service.execute("order.put_limit", params)
            except RpcError:
                continue
            if service.oper_id % 1000 == 0:
                await service.flush()
        await service.flush()
        await service.stop(final_slice=False)

    asyncio.run(load())
    store.close()
    return sum(len(m.orders) for m in service.engine.markets.values()), service.oper_id


def load_slice(directory: Path) -> tuple[float, float, float]:
    """Seconds to read the newest slice and load it into a fresh engine, to read it only, and
    the CPU seconds of read + load (steadier than wall time on a shared machine).

    The cyclic collector is off meanwhile, as ``MatchEngineService.restore`` has it since
    2026-12-01 (``gctune.paused``), and for every tree measured: otherwise the young collections
    the new state triggers (a sixth to a third of the load) are counted too, and trees that
    allocate differently would be compared on the collector's schedule."""
    store = SqliteEngineStore(directory)
    store.open()
    service = MatchEngineService(bench_config(), store)
    info = store.latest_slice()
    assert info is not None
    gc.disable()
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        state = store.read_slice(info)
        read = time.perf_counter() - t0
        service.engine.load_state(state)
        load, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.enable()
    store.close()
    return load, read, cpu


def restore(directory: Path) -> tuple[float, float, MatchEngineService]:
    """A fresh service restoring from the files: wall and CPU seconds."""
    store = SqliteEngineStore(directory)
    store.open()
    service = MatchEngineService(bench_config(), store)
    t0, c0 = time.perf_counter(), time.process_time()
    service.restore()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    store.close()
    return elapsed, cpu, service


def main(n: int = 100_000, tail: int = 10_000) -> dict[str, float]:
    gctune.tune()  # as the services run
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        open_orders, last = build(directory, n, tail)
        built = time.perf_counter() - t0
        # best of three (the first read also warms the page cache for the restart)
        load, read, cpu = min(load_slice(directory) for _ in range(3))
        elapsed, restart_cpu, service = min((restore(directory) for _ in range(2)),
                                            key=lambda r: r[0])
        assert service.oper_id == last
        replayed = service.replayed
    figures = {
        "open orders before the kill": open_orders,
        "operations replayed": replayed,
        "restart seconds": elapsed,
        "slice read seconds": read,
        "slice load seconds": load,
        "tail replay seconds": max(0.0, elapsed - load),
        "restart CPU seconds": restart_cpu,
        "slice load CPU seconds": cpu,
        "open orders loaded/s": open_orders / load,
        "open orders after restart": sum(len(m.orders) for m in service.engine.markets.values()),
        "seconds to build": built,
        "RSS (MiB)": rss_mb(),
    }
    report("restart: slice load + log tail (SQLite)", figures)
    return figures


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
