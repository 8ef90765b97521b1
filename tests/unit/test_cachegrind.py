"""bench/cachegrind.py: the instruction count every ``*_instructions`` harness takes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import cachegrind

SUMMARY = """==123== Cachegrind, a high-precision tracing profiler
==123==
==123== I refs:        1,234,567,890
"""


def test_refs_reads_the_summarys_total() -> None:
    assert cachegrind.refs(SUMMARY) == 1_234_567_890


def test_refs_without_a_summary_names_the_output() -> None:
    with pytest.raises(RuntimeError, match="(?s)no instruction count.*valgrind: not found"):
        cachegrind.refs("valgrind: not found")


def test_the_environment_puts_the_tree_first_with_a_fixed_seed(tmp_path: Path) -> None:
    env = cachegrind.tree_environment(tmp_path)
    assert env["PYTHONHASHSEED"] == "0"
    assert env["PYTHONPATH"].split(":") == [str(tmp_path), str(cachegrind.REPO)]


def test_count_runs_the_script_under_cachegrind_in_the_tree(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """What is run (valgrind itself is exercised by each harness's own measurement)."""
    seen: dict[str, Any] = {}

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.update(argv=argv, **kwargs)
        return subprocess.CompletedProcess(argv, 0, "", SUMMARY)

    monkeypatch.setattr(subprocess, "run", run)
    script = tmp_path / "child.py"
    assert cachegrind.count(script, ["--child", "7"], tmp_path) == 1_234_567_890
    assert seen["argv"][:4] == ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                                "--cachegrind-out-file=/dev/null"]
    assert seen["argv"][4:] == [sys.executable, str(script), "--child", "7"]
    assert seen["cwd"] == tmp_path and seen["check"] is True
    assert seen["env"]["PYTHONPATH"].startswith(str(tmp_path))
    seen.clear()
    cachegrind.count(script, [], tmp_path, env={"X": "1"})
    assert seen["env"] == {"X": "1"}


def test_beyond_engine_subtracts_start_up_and_the_engine(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Per order: what the part adds beyond the engine, start-up (the runs of 0) cancelled."""
    counts = {("engine", "0"): 1_000, ("engine", "10"): 1_500,  # engine: 50 per order
              ("http", "0"): 3_000, ("http", "10"): 4_200}  # http: 120 per order in all

    def count(script: Path, args: list[str], tree: Path) -> int:
        assert args[0] == "--child" and args[3] == "10" and tree == tmp_path
        return counts[args[1], args[2]]

    monkeypatch.setattr(cachegrind, "count", count)
    assert cachegrind.beyond_engine(tmp_path / "s.py", tmp_path, 10, "http") == {
        "engine": 50.0, "http": 70.0}
    assert cachegrind.per_tree(10, [tmp_path], tmp_path / "s.py", "http") == {
        "orders": 10, f"engine instr/order {tmp_path.name[:20]}": 50.0,
        f"http instr/order {tmp_path.name[:20]}": 70.0}
