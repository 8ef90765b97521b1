"""Cache misses and branch mispredictions per order placed in the engine core (valgrind's
cachegrind simulating the caches and the branch predictor).

Why: the engine core's instruction count (``bench.engine_instructions``) fell faster than its
time: 1.55x fewer instructions than 105fc31, but 1.29-1.34x in CPU time.  ``perf`` cannot read
hardware counters in this VM, so this runs the same loop (``bench_engine``'s: parse,
``put_limit``, the reply, the events) under cachegrind's simulation and prints, per order, what
costs cycles besides instructions: first-level instruction and data cache misses, misses of
the last level (given as one core's 2 MiB L2 of this machine by default: the host's 260 MiB L3
is shared with other guests), and mispredicted conditional and indirect branches.  Like the
instruction count, these are simulated, hence steady on a loaded machine; they are a model
(cachegrind's caches are simpler than the real ones), good for comparing two trees.

Run: ``.venv/bin/python -m bench.engine_cache [N] [TREE...]`` (default 50,000 orders, this
checkout; about 6 minutes per tree at 50,000).  As ``bench.engine_instructions``: two runs per
tree (N orders and none), the difference divided by N.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.common import report

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
LOOP = HERE.parent / "engine_instructions.py"

#: the simulated caches: L1 data as this machine's (48 KiB, 12-way), last level as one core's
#: L2 (2 MiB, 16-way); L1 instruction as detected
CACHES = ["--D1=49152,12,64", "--LL=2097152,16,64"]

#: valgrind's summary lines -> our figure names ("D1 misses" etc. have "(rd + wr)" after them)
_FIGURES = {
    "instructions": r"I\s+refs:\s+([\d,]+)",
    "I1 misses": r"I1\s+misses:\s+([\d,]+)",
    "D1 misses": r"D1\s+misses:\s+([\d,]+)",
    "D1 write misses": r"D1\s+misses:.*?\+\s+([\d,]+) wr",
    "LL misses": r"LL misses:\s+([\d,]+)",
    "branches": r"Branches:\s+([\d,]+)",
    "mispredicted": r"Mispredicts:\s+([\d,]+)",
}


def parse(summary: str) -> dict[str, int]:
    """The figures of a cachegrind summary (stderr) by our names; a figure valgrind did not
    print (no branch simulation) is left out, and no instruction count is an error."""
    figures: dict[str, int] = {}
    for name, pattern in _FIGURES.items():
        found = re.search(pattern, summary)
        if found is not None:
            figures[name] = int(found.group(1).replace(",", ""))
    if "instructions" not in figures:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{summary[-2000:]}")
    return figures


def counts(tree: Path, n: int, total: int) -> dict[str, int]:
    """The simulated figures of one run placing the first ``n`` of ``total`` generated orders."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=f"{tree}{os.pathsep}{REPO}")
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--branch-sim=yes", *CACHES,
         "--cachegrind-out-file=/dev/null", sys.executable, str(LOOP), "--child", str(n),
         str(total)],
        cwd=tree, env=env, capture_output=True, text=True, check=True).stderr
    return parse(out)


def per_order(tree: Path, n: int) -> dict[str, float]:
    """Each figure per order: the run with N orders minus the run with none, divided by N."""
    placed = counts(tree, n, n)
    idle = counts(tree, 0, n)
    return {name: (placed[name] - idle[name]) / n for name in placed if name in idle}


def main(n: int, trees: list[Path]) -> dict[str, float]:
    figures: dict[str, float] = {"orders": n}
    for tree in trees:
        for name, value in per_order(tree, n).items():
            figures[f"{name}/order {tree.name[:12]}"] = value
    report("engine core, simulated cache misses and branches per order placed (cachegrind)",
           figures)
    return figures


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    main(count, [Path(t).resolve() for t in sys.argv[2:]] or [REPO])
