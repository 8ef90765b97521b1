"""Instructions per order of the history follower's work, counted by valgrind, on the e2e mix.

Why: on the 2-core machine the follower's CPU per order bounds ``bench_e2e``'s throughput as
much as the matching process's, and its wall-clock and CPU figures swing with the machine's
load; the instructions it executes do not (see ``engine_instructions``).  This splits the
follower's per-order work the way it runs (``matchprocess/follower.py``): the replay that
rebuilds the events, the history rows built from them with their column values, and the rows'
SQLite inserts with the mark, each as the difference of two runs.

The log is the e2e load's (``fund.py``'s deposits for users 1..100, then ``wrk_orders.lua``'s
orders: put_limit on BTCBCH, amount 0.01, prices 95..105, random side, user ``n * 7 + 1`` mod
100), built once into a scratch directory by this checkout, so every tree replays the very same
records.  Each mode is one start of a ``MatchEngineService`` on that log under cachegrind:

Each service is built as the follower builds its replica (``set_history_only(True)`` in the
trees that have it: only the events the history writer uses, and its replay fast path).

* ``start``: open the log and the service, restore nothing;
* ``replay``: restore with a sink that takes the events and drops them (the follower's replay
  thread, events included);
* ``rows``: the same, the sink turning every operation's events into rows and column values
  (the SQLite store's ``rows_of``; ``rows_of`` and ``ROW_CONVERTERS`` in trees without it) and
  dropping them;
* ``history``: the same, the sink being the real ``HistoryWriter`` on the SQLite store, flushed
  every ``--flush`` operations in the calling thread (the follower's writer flushes every
  0.1 s: some 500 operations at 5,000 orders/s).

Run: ``.venv/bin/python -m bench.follower_instructions [N] [TREE...]`` (default 20,000 orders,
this checkout; about a minute per mode and tree).  Prints, per tree, instructions per order of
the replay, the rows, the inserts (history - rows) and the whole writer (history - replay).
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import cachegrind
from bench.common import report

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
MODES = ("start", "replay", "rows", "history")
#: Operations between two history flushes (``history`` mode).
FLUSH_EVERY = 500


def e2e_orders(n: int, seed: int = 1) -> list[list[Any]]:
    """``wrk_orders.lua``'s put_limit params (one wrk thread's sequence)."""
    rng = random.Random(seed)
    return [[(i * 7 + 1) % 100 + 1, "BTCBCH", rng.randint(1, 2), "0.01",
             str(95 + rng.randint(0, 10)), "0.002", "0.001", "wrk"] for i in range(1, n + 1)]


def build(log_dir: Path, n: int) -> int:
    """The e2e load's log: deposits, then ``n`` orders (refused ones are not logged)."""
    from bench.common import bench_config
    from exchange_server.common.errors import RpcError
    from exchange_server.matchengine.configured import Engine
    from exchange_server.matchengine.methods import MatchEngineMethods
    from exchange_server.matchengine.store import OperRecord
    from exchange_server.matchengine.store_sqlite import SqliteEngineStore

    store = SqliteEngineStore(log_dir)
    store.open()
    engine = Engine.from_config(bench_config())
    methods = MatchEngineMethods(engine)
    batch: list[OperRecord] = []
    oper_id = 0
    now = 1_800_000_000.0
    for u in range(1, 101):
        for i, (asset, amount) in enumerate((("BTC", "100000"), ("BCH", "100000000"))):
            params = [u, asset, "deposit", 7_000_000 + u * 2 + i, amount, {}]
            methods.balance_update(now, params)
            oper_id += 1
            batch.append(OperRecord(oper_id, now, "update_balance", params))
    orders = 0
    for params in e2e_orders(n):
        now += 0.0002
        try:
            methods.order_put_limit(now, params)
        except RpcError:
            continue
        engine.take_events()
        oper_id += 1
        orders += 1
        batch.append(OperRecord(oper_id, now, "limit_order", params))
    store.append(batch)
    store.close()
    return orders


class _Drop:
    """A sink that takes every operation's events (so the replay builds them) and drops them;
    with ``rows``, turns them into the SQLite store's rows and column values first (the
    store's ``rows_of`` where the tree has one, else ``rows_of`` and ``ROW_CONVERTERS``)."""

    def __init__(self, rows: bool) -> None:
        self.rows = rows
        from exchange_server.history.rows import ROW_CONVERTERS, rows_of
        from exchange_server.history.store_sqlite import SqliteHistoryStore

        self._rows_of = rows_of
        self._converters = ROW_CONVERTERS
        self._store_rows_of = getattr(SqliteHistoryStore(tempfile.gettempdir()), "rows_of", None)

    def durable_mark(self) -> int:
        return 0

    def on_events(self, oper_id: int, events: list[Any]) -> None:
        if not self.rows:
            return
        if self._store_rows_of is not None:
            self._store_rows_of(events)
            return
        converters = self._converters
        for kind, row in self._rows_of(events):
            converters[kind](row)

    def overloaded(self) -> bool:
        return False


class _Flushing:
    """The real history writer, flushed every ``every`` operations in the calling thread: at
    the first operation delivered at or after each multiple of ``every`` (by id, not by
    deliveries: a replay that delivers only the operations with history makes as many
    flushes, so as many transactions, as one that delivers every operation)."""

    def __init__(self, writer: Any, every: int) -> None:
        self.writer = writer
        self.every = every
        self.flushed = 0

    def durable_mark(self) -> int:
        mark: int = self.writer.durable_mark()
        return mark

    def on_events(self, oper_id: int, events: list[Any]) -> None:
        self.writer.on_events(oper_id, events)
        if oper_id // self.every > self.flushed:
            self.flushed = oper_id // self.every
            self.writer.flush_now()

    def overloaded(self) -> bool:
        return False


def child(log_dir: str, mode: str, every: int) -> None:
    """One start of a service on the log in ``log_dir`` in ``mode`` (see the module doc),
    importing whatever tree is first on the path."""
    from bench.common import bench_config
    from exchange_server.common import gctune
    from exchange_server.matchengine.service import MatchEngineService
    from exchange_server.matchengine.store_sqlite import SqliteEngineStore

    gctune.tune()
    store = SqliteEngineStore(Path(log_dir))
    store.open()
    service = MatchEngineService(bench_config(), store)
    # as the follower builds its replica, in trees that have the history-only mode
    history_only = getattr(service, "set_history_only", None)
    if history_only is not None:
        history_only(True)
    writer = None
    if mode == "history":
        from exchange_server.history.store_sqlite import SqliteHistoryStore
        from exchange_server.history.writer import HistoryWriter

        history_dir = tempfile.mkdtemp(prefix="follower-instr-")
        writer = HistoryWriter(SqliteHistoryStore(Path(history_dir)))
        service.add_sink(_Flushing(writer, every))  # type: ignore[arg-type]
    elif mode in ("replay", "rows"):
        service.add_sink(_Drop(mode == "rows"))  # type: ignore[arg-type]
    if mode != "start":
        service.restore()
    if writer is not None:
        writer.flush_now()
        print(f"rows {writer.rows_written} flushes {writer.flushes}")
        writer.stop()
    store.close()
    print(f"replayed {service.replayed}")


def instructions(tree: Path, log_dir: Path, mode: str, every: int) -> int:
    """Instructions of one start of a service on ``log_dir`` by ``tree`` in ``mode``."""
    return cachegrind.count(HERE, ["--child", str(log_dir), mode, str(every)], tree)


def main(n: int, trees: list[Path], every: int = FLUSH_EVERY) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        orders = build(Path(tmp), n)
        figures["orders"] = orders
        for tree in trees:
            counts = {mode: instructions(tree, Path(tmp), mode, every) for mode in MODES}
            name = tree.name[:20]
            figures[f"replay instr/order {name}"] = (counts["replay"] - counts["start"]) / orders
            figures[f"rows instr/order {name}"] = (counts["rows"] - counts["replay"]) / orders
            figures[f"inserts instr/order {name}"] = (counts["history"] - counts["rows"]) / orders
            figures[f"writer instr/order {name}"] = (counts["history"] - counts["replay"]) / orders
    report("follower: instructions per e2e order (cachegrind)", figures)
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        args = sys.argv[1:]
        flush = FLUSH_EVERY
        if "--flush" in args:
            at = args.index("--flush")
            flush = int(args[at + 1])
            del args[at:at + 2]
        count = int(args[0]) if args else 20_000
        main(count, [Path(t).resolve() for t in args[1:]] or [REPO], flush)
