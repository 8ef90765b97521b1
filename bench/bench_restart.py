"""(c) Restart: seconds to replay 1,000,000 logged operations (no slice).

Run: ``.venv/bin/python -m bench.bench_restart [N]``.  The log is produced by the real engine
(a mixed order load) and stored in the SQLite operation log; then a fresh service restores from
it and the replay is timed (reading the log, parsing each record, re-executing it).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.common import bench_config, mixed_orders, report, rss_mb
from exchange_server.common import gctune
from exchange_server.common.errors import RpcError

try:
    from exchange_server.matchengine.configured import Engine
except ImportError:  # a checkout before matchengine/core (bench.compare --current-bench)
    from exchange_server.matchengine.engine import Engine  # type: ignore[no-redef]
from exchange_server.matchengine.methods import MatchEngineMethods
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import OperRecord
from exchange_server.matchengine.store_sqlite import SqliteEngineStore


def build_log(store: SqliteEngineStore, n: int) -> int:
    users = 1000
    engine = Engine.from_config(bench_config())
    methods = MatchEngineMethods(engine)
    batch: list[OperRecord] = []
    oper_id = 0
    now = 1_800_000_000.0
    for u in range(1, users + 1):
        for asset, amount in (("BTC", "1000000"), ("BCH", "100000000")):
            params = [u, asset, "deposit", u, amount, {}]
            methods.balance_update(now, params)
            oper_id += 1
            batch.append(OperRecord(oper_id, now, "update_balance", params))
    for params in mixed_orders(n - oper_id, users):
        now += 0.0001
        try:
            methods.order_put_limit(now, params)
        except RpcError:
            continue
        engine.take_events()
        oper_id += 1
        batch.append(OperRecord(oper_id, now, "limit_order", params))
        if len(batch) >= 20000:
            store.append(batch)
            batch = []
    store.append(batch)
    return oper_id


def main(n: int = 1_000_000) -> dict[str, float]:
    gctune.tune()  # as the services run
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteEngineStore(Path(tmp))
        store.open()
        t0 = time.perf_counter()
        logged = build_log(store, n)
        built = time.perf_counter() - t0
        store.close()

        store = SqliteEngineStore(Path(tmp))
        store.open()
        service = MatchEngineService(bench_config(), store)
        t0, c0 = time.perf_counter(), time.process_time()
        service.restore()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert service.replayed == logged
        store.close()
    figures = {
        "operations replayed": logged,
        "replay seconds": elapsed,
        "operations/s": logged / elapsed,
        # CPU time: steadier than wall time on a machine shared with other work
        "replay CPU seconds": cpu,
        "open orders after replay": sum(len(m.orders) for m in service.engine.markets.values()),
        "seconds to build the log": built,
        "RSS (MiB)": rss_mb(),
    }
    report("restart: replay of the operation log (SQLite)", figures)
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
