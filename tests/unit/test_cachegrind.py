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
