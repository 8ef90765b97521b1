"""Instructions per open order of a slice load, counted by valgrind: a steady restart figure.

Why: a restart after SIGKILL loads the newest slice (issue 15: "a slice that loads at least 2x
faster than 105fc31"), and on the shared 2-core machine ``bench_slice``'s load seconds swing by
a third between runs of the same tree.  The number of machine instructions the interpreter
executes for the same load does not depend on the machine's load: cachegrind counts it exactly
(with a fixed ``PYTHONHASHSEED``).  It is not a time (cache misses are not in it: building a
book walks memory), so it is evidence beside ``bench_slice``'s wall and CPU ratios, not instead.

Run: ``.venv/bin/python -m bench.slice_instructions [N] [TREE...]`` (default 100,000 open
orders, this checkout).  For each tree (a checkout, e.g. ``/var/tmp/exchange-bench/<sha>`` made
by ``bench.compare``) it builds a slice of N open orders with that tree's code (``bench_slice``'s
book: 10,000 users, 2,000 price levels a side, written by the service as at a stop), then runs
under cachegrind the read + ``load_state`` of that slice into a fresh engine and the same
process without them, and prints the difference divided by N.  This ``bench/`` is used for
every tree (through ``bench.compare``'s overlay), as ``bench.compare --current-bench`` does.
Needs ``valgrind``; about 2 minutes per tree at 100,000 on a quiet machine.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import cachegrind
from bench.common import report
from bench.compare import SCRATCH, make_overlay

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


def build_child(directory: Path, n: int) -> None:
    """Write a slice of ``n`` open orders (no log tail) in ``directory``."""
    from bench.bench_slice import build

    open_orders, _ = build(directory, n, 0)
    print(f"open orders {open_orders}")


def load_child(directory: Path, load: bool) -> None:
    """Open the store and a fresh service on ``directory``; with ``load``, read the newest
    slice and load it (the collector paused, as ``MatchEngineService.restore`` has it)."""
    from bench.common import bench_config
    from exchange_server.matchengine.service import MatchEngineService
    from exchange_server.matchengine.store_sqlite import SqliteEngineStore

    store = SqliteEngineStore(directory)
    store.open()
    service = MatchEngineService(bench_config(), store)
    info = store.latest_slice()
    assert info is not None
    gc.disable()
    if load:
        service.engine.load_state(store.read_slice(info))
    loaded = sum(len(m.orders) for m in service.engine.markets.values())
    print(f"orders loaded {loaded}")  # what the count is for (and that it ran)


def environment(tree: Path) -> dict[str, str]:
    """This ``bench/`` (and ``tests/``) first, then the tree's code."""
    overlay = make_overlay(SCRATCH)
    return dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=f"{overlay}{os.pathsep}{tree}")


def instructions(tree: Path, directory: Path, load: bool) -> int:
    """Instructions of one process opening the slice of ``directory`` (and loading it)."""
    return cachegrind.count(HERE, ["--load", str(directory), str(int(load))], tree, environment(tree))


def per_order(tree: Path, n: int) -> float:
    """Instructions per open order: the load minus the same process without it, over N."""
    with tempfile.TemporaryDirectory() as tmp:
        built = subprocess.run([sys.executable, str(HERE), "--build", tmp, str(n)], cwd=tree,
                               env=environment(tree), capture_output=True, text=True)
        if built.returncode:
            raise RuntimeError(f"building the slice failed:\n{built.stderr[-2000:]}")
        return (instructions(tree, Path(tmp), True)
                - instructions(tree, Path(tmp), False)) / n


def main(n: int, trees: list[Path]) -> dict[str, float]:
    figures: dict[str, float] = {"open orders": n}
    for tree in trees:
        figures[f"instr/order {tree.name[:20]}"] = per_order(tree, n)
    report("slice load, instructions per open order (cachegrind)", figures)
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        build_child(Path(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--load"]:
        load_child(Path(sys.argv[2]), sys.argv[3] == "1")
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
        main(count, [Path(t).resolve() for t in sys.argv[2:]] or [REPO])
