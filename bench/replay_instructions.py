"""Instructions per logged operation replayed at a restart, counted by valgrind.

Why: ``bench_restart``'s seconds swing with the shared machine's load, like ``bench_engine``'s
orders/s; the number of instructions a replay executes does not (see ``engine_instructions``).
The log is ``bench_restart``'s (deposits, then the mixed order stream), built once into a
scratch directory by this checkout and replayed by each tree, so every tree replays the very
same records.

Run: ``.venv/bin/python -m bench.replay_instructions [N] [TREE...]`` (default 100,000 operations,
this checkout).  For each tree it runs ``MatchEngineService.restore()`` under cachegrind over the
whole log and once without restoring (start-up, opening the log), and prints the
difference divided by N.  It needs ``valgrind`` and takes about 2 minutes per tree at 100,000.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench import cachegrind
from bench.common import report

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


def child(log_dir: str, replay: bool) -> None:
    """Restore a service from the log in ``log_dir`` (or only start it, without ``replay``),
    importing whatever tree is first on the path."""
    from bench.common import bench_config
    from exchange_server.common import gctune
    from exchange_server.matchengine.service import MatchEngineService
    from exchange_server.matchengine.store_sqlite import SqliteEngineStore

    gctune.tune()
    store = SqliteEngineStore(Path(log_dir))
    store.open()
    service = MatchEngineService(bench_config(), store)
    if replay:
        service.restore()
    store.close()
    print(f"replayed {service.replayed} orders {service.engine.order_id} "
          f"deals {service.engine.deal_id}")


def build(log_dir: Path, n: int) -> int:
    """``bench_restart``'s log of ``n`` operations, written by this checkout."""
    from bench.bench_restart import build_log
    from exchange_server.matchengine.store_sqlite import SqliteEngineStore

    store = SqliteEngineStore(log_dir)
    store.open()
    logged = build_log(store, n)
    store.close()
    return logged


def instructions(tree: Path, log_dir: Path, replay: bool) -> int:
    """Instructions of one start of a service on ``log_dir`` by ``tree``, restoring or not."""
    return cachegrind.count(HERE, ["--child", str(log_dir), "replay" if replay else "start"], tree)


def main(n: int, trees: list[Path]) -> dict[str, float]:
    figures: dict[str, float] = {"operations": n}
    with tempfile.TemporaryDirectory() as tmp:
        logged = build(Path(tmp), n)
        for tree in trees:
            full = instructions(tree, Path(tmp), True)
            figures[f"instr/op {tree.name[:20]}"] = (
                full - instructions(tree, Path(tmp), False)) / logged
    report("restart: instructions per logged operation replayed (cachegrind)", figures)
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3] == "replay")
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
        main(count, [Path(t).resolve() for t in sys.argv[2:]] or [REPO])
