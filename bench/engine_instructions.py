"""Instructions per order placed in the engine core, counted by valgrind: a steady engine figure.

Why: on the shared 2-core machine ``bench_engine``'s orders/s swings by ±10% between runs of the
same tree and even its CPU time by ±5%, which hides the few-percent steps engine tuning is made
of.  The number of machine instructions the interpreter executes for the same orders does not
depend on the machine's load: valgrind's cachegrind counts them exactly (to 0.01% with a fixed
``PYTHONHASHSEED``).  It is not a time (cache misses and branch mispredictions are not in it;
compiled code can run faster with more instructions), so it compares pure-Python changes.

Run: ``.venv/bin/python -m bench.engine_instructions [N] [TREE...]`` (default 200,000 orders, this
checkout).  For each tree (a checkout, e.g. ``/var/tmp/exchange-bench/<sha>`` made by
``bench.compare``) it runs ``bench_engine``'s loop (parse, ``put_limit``, the reply, the events)
under cachegrind for 0 and for N orders, and prints the difference divided by N.  It needs
``valgrind`` (Debian: ``apt-get install valgrind``) and takes about 4 minutes per tree at 200,000.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import cachegrind
from bench.common import report

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


def child(n: int, total: int) -> None:
    """The measured loop over the first ``n`` of ``total`` generated orders, importing whatever
    tree is first on the path (old layouts too)."""
    from bench.common import bench_config, mixed_orders
    from exchange_server.common import gctune
    from exchange_server.matchengine.methods import MatchEngineMethods, present

    try:
        from exchange_server.matchengine.configured import Engine
    except ImportError:  # a baseline from before the core moved
        from exchange_server.matchengine.engine import Engine  # type: ignore[no-redef]
    gctune.tune()
    orders = mixed_orders(total, 1000)[:n]
    engine = Engine.from_config(bench_config())
    methods = MatchEngineMethods(engine)
    for u in range(1, 1001):
        methods.balance_update(0.0, [u, "BTC", "deposit", u, "1000000", {}])
        methods.balance_update(0.0, [u, "BCH", "deposit", u, "100000000", {}])
    engine.take_events()
    put = methods.order_put_limit
    take = engine.take_events
    for params in orders:
        present(put(1_800_000_000.0, params))
        take()
    print(f"orders {n} deals {engine.deal_id}")  # what the count is for (and that it ran)


def instructions(tree: Path, n: int, total: int) -> int:
    """Instructions of one run placing the first ``n`` of ``total`` generated orders."""
    return cachegrind.count(HERE, ["--child", str(n), str(total)], tree)


def per_order(tree: Path, n: int) -> float:
    """Instructions per order: the run with N orders minus the run with none (start-up, the
    generated orders, the deposits), divided by N."""
    return (instructions(tree, n, n) - instructions(tree, 0, n)) / n


def main(n: int, trees: list[Path]) -> dict[str, float]:
    figures: dict[str, float] = {"orders": n}
    for tree in trees:
        figures[f"instr/order {tree.name[:20]}"] = per_order(tree, n)
    report("engine core, instructions per order placed (cachegrind)", figures)
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
        main(count, [Path(t).resolve() for t in sys.argv[2:]] or [REPO])
