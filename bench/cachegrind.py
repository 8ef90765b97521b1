"""One process's machine instructions, counted by valgrind's cachegrind: what every
``*_instructions`` harness runs for each tree and mode.

Why one place: the harnesses differ in what their child process does, not in how it is
counted; the count must be made the same way for every tree a ratio compares (no simulated
caches, a fixed hash seed, the tree's code first on the path), so it is written once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: this checkout (its ``bench/`` and ``tests/`` after the tree's code on the path)
REPO = Path(__file__).resolve().parent.parent
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def tree_environment(tree: Path) -> dict[str, str]:
    """The environment of a child that runs ``tree``'s code: a fixed hash seed (set and dict
    orders, hence the instructions, are then the same from run to run), the tree first on the
    path, then this checkout (for ``bench`` itself when the tree has none of its own)."""
    return dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=f"{tree}{os.pathsep}{REPO}")


def refs(valgrind_output: str) -> int:
    """The ``I refs`` total of cachegrind's summary; RuntimeError (with the output's tail) if
    there is none."""
    found = _REFS.search(valgrind_output)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{valgrind_output[-2000:]}")
    return int(found.group(1).replace(",", ""))


def count(script: Path, args: Sequence[str], tree: Path,
          env: Mapping[str, str] | None = None) -> int:
    """Instructions of ``python script *args`` run in ``tree`` under cachegrind (no cache
    simulation), with ``env`` (default: :func:`tree_environment`)."""
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, str(script), *args],
        cwd=tree, env=dict(env) if env is not None else tree_environment(tree),
        capture_output=True, text=True, check=True).stderr
    return refs(out)


def beyond_engine(script: Path, tree: Path, n: int, part: str) -> dict[str, float]:
    """Instructions per order of a child run in mode ``"engine"`` (the core alone) and of what
    mode ``part`` adds beyond it: each mode run for 0 and for ``n`` of ``n`` orders
    (``--child MODE K N``), ``((part N) - (part 0)) - ((engine N) - (engine 0))`` over N.
    Why 0 and N: start-up and the generated input cost the same in both, and cancel."""
    counts = {(mode, k): count(script, ["--child", mode, str(k), str(n)], tree)
              for mode in ("engine", part) for k in (0, n)}
    engine = (counts["engine", n] - counts["engine", 0]) / n
    return {"engine": engine, part: (counts[part, n] - counts[part, 0]) / n - engine}


def per_tree(n: int, trees: Sequence[Path], script: Path, part: str) -> dict[str, float]:
    """:func:`beyond_engine` for each tree, as ``<figure> instr/order <tree name>`` figures
    after ``orders``."""
    figures: dict[str, float] = {"orders": n}
    for tree in trees:
        for figure, value in beyond_engine(script, tree, n, part).items():
            figures[f"{figure} instr/order {tree.name[:20]}"] = value
    return figures
