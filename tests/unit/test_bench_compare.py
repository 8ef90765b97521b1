"""bench.compare and bench.cpu: the figures are read from real benchmark runs, the ratios point
the right way, and the CPU budget sees a process and its children.

Why here: the Performance issue's goals are ratios this tool prints; a misparsed label or a ratio
the wrong way round would report a regression as progress.  No timing is asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import compare
from bench.cpu import CpuMeter

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
BURN = """
import os, sys, time
if len(sys.argv) > 1:  # the child: burn 0.2 s of CPU, say so, wait for stdin to close
    while time.process_time() < 0.2:
        pass
    print("burnt", flush=True)
    sys.stdin.read()
else:
    child = __import__("subprocess").Popen([sys.executable, __file__, "x"], stdin=sys.stdin)
    print(child.pid, flush=True)
    child.wait()
"""


def test_report_lines_parse_into_figures() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.bench_engine", "2000"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    figures = compare.parse_reports(out)
    title = out.splitlines()[0][3:].rsplit("  (", 1)[0]
    assert figures[(title, "orders")] == 2000
    assert figures[(title, "orders/s")] > 0
    assert (title, "p99 latency (us)") in figures


def test_long_labels_and_connections_name_the_report() -> None:
    out = ("== end to end  (2026-12-01, vm)\n"
           f"   {'connections':<34} 16\n"
           f"   {'accepted orders/s':<34} 1,234.50\n"
           f"   {'orders accepted / answered':<34} 10 / 12\n"
           f"   {'CPU us/order matchengine: follower!!':<34} 75.25\n")
    figures = compare.parse_reports(out)
    assert figures == {("@16 connections", "connections"): 16.0,
                       ("@16 connections", "accepted orders/s"): 1234.5,
                       ("@16 connections", "CPU us/order matchengine: follower!!"): 75.25}


def test_ratio_above_one_means_better_either_way() -> None:
    assert compare.direction("accepted orders/s") == compare.HIGHER
    assert compare.direction("p99 latency (ms)") == compare.LOWER
    assert compare.direction("CPU us/order main") == compare.LOWER
    assert compare.direction("refused") == compare.LOWER
    assert compare.direction("during: restart us per open order") == compare.LOWER
    assert compare.direction("orders") is None
    assert compare.ratio("orders/s", 1000.0, 3000.0) == 3.0
    assert compare.ratio("p99 latency (ms)", 30.0, 10.0) == 3.0
    assert compare.ratio("refused", 0.0, 0.0) == 1.0
    assert compare.ratio("refused", 0.0, 5.0) == 0.0  # worse without bound
    assert compare.ratio("refused", 5.0, 0.0) is None  # better without bound: no number
    best: compare.Figures = {}
    for run in ({("r", "orders/s"): 5.0, ("r", "p99 latency (ms)"): 9.0},
                {("r", "orders/s"): 7.0, ("r", "p99 latency (ms)"): 11.0}):
        compare.keep_best(best, run)
    assert best == {("r", "orders/s"): 7.0, ("r", "p99 latency (ms)"): 9.0}


def test_cpu_budget_counts_a_child(tmp_path: Path) -> None:
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdin is not None
        child = int(parent.stdout.readline())
        meter = CpuMeter({"main": parent.pid}).begin()
        assert child in meter.names  # found as a descendant before it burnt anything
        assert parent.stdout.readline().strip() == "burnt"
        meter.end()
        figures = meter.per_order(1000)
        burnt = [v for k, v in figures.items() if k not in ("CPU us/order main",
                                                            "CPU us/order total")]
        assert burnt and max(burnt) > 0  # the child's CPU, per order, in microseconds
        assert figures["CPU us/order total"] >= max(burnt)
    finally:
        if parent.stdin is not None:
            parent.stdin.close()
        parent.wait(timeout=30)


def test_compare_runs_both_checkouts_and_the_overlay(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A real baseline worktree (this commit's parent chain: 105fc31 has no bench_e2e), one
    round of a small engine run and of bench_e2e through the overlay."""
    try:
        compare.main(["--baseline", "105fc31", "--rounds", "1", "--scratch", str(tmp_path),
                      "--json", str(tmp_path / "t.json"), "bench_engine:2000", "bench_e2e:1,2"])
        out = capsys.readouterr().out
    finally:
        for sha in tmp_path.iterdir():
            if (sha / ".git").exists():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(sha)], check=True)
    lines = [line for line in out.splitlines() if line.startswith(("bench_engine", "bench_e2e"))]
    engine = next(line for line in lines if " orders/s " in line and "bench_engine" in line)
    assert engine.split()[-2].endswith("x")  # both sides measured: a ratio
    e2e = [line for line in lines if line.startswith("bench_e2e @2 connections")]
    accepted = next(line for line in e2e if " accepted orders/s " in line)
    # the baseline's server ran too: a ratio
    assert accepted.split("  higher")[0].split()[-1].endswith("x")
    assert all("current tree's bench/ on the baseline's code" in line for line in e2e)
