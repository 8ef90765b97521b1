"""Ratios against a baseline commit, measured in one run, alternating (``make bench BASELINE=``).

Why: on this shared 2-core machine absolute figures swing threefold from day to day, so a goal
("3x the end-to-end throughput of 105fc31") only means something as a ratio measured in the same
run.  This makes (or reuses) a second checkout of the baseline with ``git worktree add`` under a
scratch directory outside the repository, then runs each selected benchmark N times in each
checkout, alternately (baseline, current, current, baseline, ...), each checkout's own
``bench/`` against its own code (PYTHONPATH pointing at it, the same interpreter), keeps the best
of N for every figure and prints: benchmark, figure, baseline, current, ratio, where the ratio
is oriented so that > 1 always means the current tree is better (current/baseline for
"higher is better" figures such as orders/s, baseline/current for latencies, seconds, CPU per
order and refusals).

When the baseline has no such benchmark (e.g. bench_e2e), the current tree's ``bench/`` runs
against the baseline's code (a scratch directory holding only links to this ``bench/`` and
``tests/`` comes first on PYTHONPATH, so the benchmarks' helpers in ``tests.support`` are this
tree's; they start the baseline's server from where its code is, with only the options it
knows); the table says so.

Run: ``python -m bench.compare --baseline <commit> [--rounds N] [bench[:arg,arg]...]``,
e.g. ``python -m bench.compare --baseline 105fc31 bench_engine bench_restart:200000``.
The figures are read from the benchmarks' printed reports (bench/common.py ``report``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCRATCH = Path(os.environ.get("EXCHANGE_BENCH_SCRATCH", "/var/tmp/exchange-bench"))

#: The benchmarks compared when none are named, and the arguments they get then (sizes chosen so
#: that three rounds of all of them stay within about 25 minutes on the 2-core machine).
DEFAULT = ["bench_engine", "bench_restart:200000", "bench_http", "bench_e2e"]

HIGHER = "higher is better"
LOWER = "lower is better"


def direction(label: str) -> str | None:
    """Which way a figure is better, from its label; None: a count, not compared."""
    low = label.lower()
    if low.startswith("cpu us/") or "latency" in low or "seconds" in low or "(s)" in low:
        return LOWER
    if " us per " in low:  # a cost in microseconds (bench_kill_restart's per open order)
        return LOWER
    if low in ("refused", "rejected", "non-200 answers") or low.startswith("rss"):
        return LOWER
    if "/s" in low:
        return HIGHER
    return None


def number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


Figures = dict[tuple[str, str], float]


def parse_reports(out: str) -> Figures:
    """``== title  (date, machine)`` then ``   label<pad to 34> value`` lines -> figures keyed by
    (report, label); a report with a ``connections`` figure is named ``@<N> connections``."""
    figures: Figures = {}
    title = ""
    rows: list[tuple[str, float]] = []

    def flush() -> None:
        conns = dict(rows).get("connections")
        name = f"@{int(conns)} connections" if conns is not None else title
        for label, value in rows:
            figures[(name, label)] = value

    for line in out.splitlines():
        if line.startswith("== "):
            flush()
            title, rows = line[3:].rsplit("  (", 1)[0], []
        elif line.startswith("   ") and title:
            if line[37:38] == " ":  # the label padded to 34 columns, then the value
                label, text = line[3:37].strip(), line[38:].strip()
            else:  # a longer label: the value is its last word
                label, _, text = line[3:].rstrip().rpartition(" ")
            value = number(text)
            if label and value is not None:
                rows.append((label.strip(), value))
    flush()
    return figures


@dataclass
class Checkout:
    name: str
    root: Path
    #: PYTHONPATH for a benchmark this checkout lacks: the current tree's bench/ on its code
    overlay: Path | None = None
    #: run the current tree's bench/ for every benchmark, not only the missing ones
    always_overlay: bool = False
    best: dict[str, Figures] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def has(self, module: str) -> bool:
        return (self.root / "bench" / f"{module}.py").exists()

    def place(self, module: str) -> tuple[Path, str]:
        """Working directory and PYTHONPATH for ``module`` (``-m`` puts the working directory
        first on sys.path: for the overlay it is the overlay)."""
        if self.overlay is None or (self.has(module) and not self.always_overlay):
            return self.root, str(self.root)
        self.notes[module] = "current tree's bench/ on the baseline's code"
        return self.overlay, f"{self.overlay}{os.pathsep}{self.root}"


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def baseline_checkout(commit: str, scratch: Path) -> Checkout:
    """A detached ``git worktree`` of ``commit`` under ``scratch``, made once and reused."""
    sha = git("rev-parse", "--verify", f"{commit}^{{commit}}")
    root = scratch / sha
    if not (root / ".git").exists():
        scratch.mkdir(parents=True, exist_ok=True)
        # --force: the path may still be registered from a scratch dir someone deleted
        git("worktree", "add", "--force", "--detach", str(root), sha)
    # the checkouts find the original's spec and golden files in their sibling ../shared/
    shared, link_shared = REPO.parent / "shared", scratch / "shared"
    if shared.is_dir() and not link_shared.exists():
        link_shared.symlink_to(shared)
    return Checkout(f"baseline {sha[:7]}", root, make_overlay(scratch))


def make_overlay(scratch: Path) -> Path:
    """A directory of links to this tree's ``bench/`` and ``tests/``: first on PYTHONPATH, it
    makes ``bench`` and ``tests.support`` (the benchmarks' server helpers, which an older
    checkout lacks or has elsewhere) this tree's, while ``exchange_server`` stays the baseline's."""
    overlay = scratch / f"overlay-{hashlib.sha1(str(REPO).encode()).hexdigest()[:10]}"
    overlay.mkdir(parents=True, exist_ok=True)
    for name in ("bench", "tests"):
        link_to(overlay / name, REPO / name)
    return overlay


def link_to(link: Path, target: Path) -> None:
    """``link`` -> ``target``, replacing a link that points elsewhere."""
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target)


def run_one(checkout: Checkout, module: str, args: list[str]) -> Figures:
    cwd, path = checkout.place(module)
    env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=cwd,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"   {checkout.name} {module}: exit {proc.returncode}\n{proc.stderr[-2000:]}",
              file=sys.stderr)
    return parse_reports(proc.stdout)


def keep_best(best: Figures, new: Figures) -> None:
    for key, value in new.items():
        way = direction(key[1])
        old = best.get(key)
        if old is None or (way == HIGHER and value > old) or (way == LOWER and value < old):
            best[key] = value


def ratio(label: str, base: float, cur: float) -> float | None:
    if direction(label) == HIGHER:
        return cur / base if base else None
    if base == cur:
        return 1.0
    return base / cur if cur else None


def table(benches: list[str], base: Checkout, cur: Checkout) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for module in dict.fromkeys(spec.split(":")[0] for spec in benches):
        b, c = base.best.get(module, {}), cur.best.get(module, {})
        for key in list(dict.fromkeys([*c, *b])):
            way = direction(key[1])
            if way is None:
                continue
            report = key[0] if key[0].startswith("@") else ""
            rows.append({"benchmark": f"{module} {report}".strip(), "figure": key[1],
                         "better": way, "baseline": b.get(key), "current": c.get(key),
                         "ratio": ratio(key[1], b[key], c[key]) if key in b and key in c else None,
                         "note": base.notes.get(module, "")})
    return rows


def fmt(value: object) -> str:
    return "-" if value is None else f"{value:,.2f}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict[str, object]], base: Checkout, rounds: int) -> None:
    print(f"\n== {base.name} vs current tree, best of {rounds}, alternating "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.2f}); ratio > 1: current is better")
    head = f"{'benchmark':<32} {'figure':<34} {'baseline':>12} {'current':>12} {'ratio':>7}  better"
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio_text = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        better = "higher" if r["better"] == HIGHER else "lower"
        note = f"  ({r['note']})" if r["note"] else ""
        print(f"{r['benchmark']:<32} {r['figure']:<34} {fmt(r['baseline']):>12} "
              f"{fmt(r['current']):>12} {ratio_text:>7}  {better}{note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="commit to compare with (e.g. 105fc31)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each benchmark per checkout")
    parser.add_argument("--scratch", type=Path, default=SCRATCH,
                        help="where the baseline checkout is made (outside the repository)")
    parser.add_argument("--current-bench", action="store_true",
                        help="run the current tree's bench/ against the baseline's code for every "
                             "benchmark (e.g. for the CPU budget an old bench/ does not print)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON to this file")
    parser.add_argument("benches", nargs="*", default=DEFAULT,
                        help="bench_x or bench_x:arg,arg (default: %(default)s)")
    opts = parser.parse_args(argv)
    base = baseline_checkout(opts.baseline, opts.scratch)
    base.always_overlay = opts.current_bench
    cur = Checkout("current", REPO)
    print(f"== baseline {base.root}, current {REPO}, load average {os.getloadavg()[0]:.2f}")
    for n in range(opts.rounds):
        for spec in opts.benches:
            module, _, arg_text = spec.partition(":")
            args = [a for a in arg_text.split(",") if a]
            order = (base, cur) if (n + opts.benches.index(spec)) % 2 == 0 else (cur, base)
            for checkout in order:
                t0 = time.monotonic()
                figures = run_one(checkout, module, args)
                keep_best(checkout.best.setdefault(module, {}), figures)
                print(f"   round {n + 1}/{opts.rounds} {module:<16} {checkout.name:<17} "
                      f"{time.monotonic() - t0:6.1f} s, {len(figures)} figures", flush=True)
    rows = table(opts.benches, base, cur)
    print_table(rows, base, opts.rounds)
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
