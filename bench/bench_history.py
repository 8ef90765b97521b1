"""History write throughput (rows/s) on SQLite and MySQL/MariaDB.

    .venv/bin/python -m bench.bench_history [--ops N] [--users N] [--batch-rows N]

Builds a trading session with the real engine (deposits, then limit orders crossing each other
between many users), then for each backend: a fresh database, ``on_events`` for every operation
(the event-loop side: rows built and queued), and the background flusher writing it all
(one transaction per batch of ``--batch-rows`` rows).  Prints figures; no pass/fail.  MySQL
settings come from EXCHANGE_MYSQL_HOST / _PORT / _USER / _PASSWORD (default
exchange:exchange@127.0.0.1:3306); the benchmark database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import tempfile
import time
import uuid
from typing import Any

from bench.common import report
from exchange_server.common.config import MysqlConfig, load_matchengine
from exchange_server.common.errors import RpcError
from exchange_server.history.rows import rows_of
from exchange_server.history.store import HistoryStore
from exchange_server.history.store_mysql import MysqlHistoryStore
from exchange_server.history.store_sqlite import SqliteHistoryStore
from exchange_server.history.writer import HistoryWriter
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import Event
from exchange_server.matchengine.methods import MatchEngineMethods
from exchange_server.storage import mysql as mysql_db

CONFIG: dict[str, Any] = {
    "assets": [
        {"name": "BCH", "prec_save": 20, "prec_show": 8},
        {"name": "BTC", "prec_save": 12, "prec_show": 8},
    ],
    "markets": [
        {"name": "BTCBCH", "stock": {"name": "BTC", "prec": 8},
         "money": {"name": "BCH", "prec": 8}, "min_amount": "0.001"},
    ],
}

Ops = list[tuple[int, list[Event]]]


def make_session(n_ops: int, n_users: int, seed: int = 1) -> Ops:
    rng = random.Random(seed)
    engine = Engine.from_config(load_matchengine(CONFIG, embedded=True))
    methods = MatchEngineMethods(engine)
    ops: Ops = []
    now = 1_700_000_000.0
    requests: list[tuple[str, list[Any]]] = []
    for u in range(1, n_users + 1):
        requests.append(("balance.update", [u, "BTC", "deposit", u, "1000000", {"note": "bench"}]))
        requests.append(("balance.update", [u, "BCH", "deposit", 10**6 + u, "100000000", {}]))
    while len(requests) < n_ops:
        u = rng.randint(1, n_users)
        side = rng.choice((1, 2))
        price = f"{rng.randint(9900, 10100) / 100:.2f}"
        amount = f"{rng.randint(1, 500) / 100:.2f}"
        requests.append(("order.put_limit", [u, "BTCBCH", side, amount, price, "0.002", "0.001",
                                             "bench"]))
    oper_id = 0
    for method, params in requests[:n_ops]:
        now += 0.0001
        try:
            methods.writes[method].run(now, params)
        except RpcError:
            engine.take_events()
            continue
        oper_id += 1
        ops.append((oper_id, engine.take_events()))
    return ops


def mysql_config() -> MysqlConfig:
    return MysqlConfig(
        host=os.environ.get("EXCHANGE_MYSQL_HOST", "127.0.0.1"),
        port=int(os.environ.get("EXCHANGE_MYSQL_PORT", "3306")),
        user=os.environ.get("EXCHANGE_MYSQL_USER", "exchange"),
        password=os.environ.get("EXCHANGE_MYSQL_PASSWORD", "exchange"),
        name=f"bench_history_{uuid.uuid4().hex[:8]}",
    )


def drop_mysql(cfg: MysqlConfig) -> None:
    conn = mysql_db.connect(cfg, database=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {mysql_db.quote_name(cfg.name)}")
        conn.commit()
    finally:
        conn.close()


def run(name: str, store: HistoryStore, ops: Ops, rows: int, batch_rows: int) -> None:
    writer = HistoryWriter(store, batch_rows=batch_rows, max_pending_rows=10**9)
    writer.durable_mark()
    # 1. the event-loop side alone: queue every operation (flusher not running)
    started = time.perf_counter()
    for oper_id, events in ops:
        writer.on_events(oper_id, events)
    queued = time.perf_counter()
    # 2. the flusher: rows built and written, one transaction per batch_rows rows
    writer.start()
    writer.flush_now()
    done = time.perf_counter()
    writer.stop()
    assert writer.rows_written == rows, (writer.rows_written, rows)
    write = done - queued
    report(f"history writer, {name}", {
        "operations": len(ops),
        "rows": rows,
        "on_events (event loop), us/op": (queued - started) / len(ops) * 1e6,
        "flusher rows/s": rows / write,
        "flusher operations/s": len(ops) / write,
        "transactions": writer.flushes,
        "batch_rows": batch_rows,
    })


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    ops = make_session(args.ops, args.users)
    rows = sum(len(rows_of(e)) for _, e in ops)
    gc.collect()
    gc.freeze()  # the session's objects are not the writer's garbage-collection cost
    print(f"session: {len(ops)} operations, {rows} history rows "
          f"({rows / len(ops):.1f} rows/op), built in {time.perf_counter() - started:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite", SqliteHistoryStore(tmp), ops, rows, args.batch_rows)

    cfg = mysql_config()
    try:
        mysql_db.connect(cfg, database=False, connect_timeout=3).close()
    except Exception as e:
        print(f"mysql   skipped: server not reachable ({e})")
        return
    try:
        run("mysql", MysqlHistoryStore(cfg), ops, rows, args.batch_rows)
    finally:
        drop_mysql(cfg)


if __name__ == "__main__":
    main()
