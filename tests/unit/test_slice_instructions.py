"""bench/slice_instructions.py's children run on this tree (valgrind itself is not needed here:
the build and the measured load are what would rot unnoticed when the store's API moves)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.server import REPO


def child(*args: str) -> str:
    return subprocess.run([sys.executable, "bench/slice_instructions.py", *args], cwd=REPO,
                          capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout


def test_the_measured_load_loads_the_built_slice(tmp_path: Path) -> None:
    assert child("--build", str(tmp_path), "300").split() == ["open", "orders", "300"]
    assert child("--load", str(tmp_path), "1").split() == ["orders", "loaded", "300"]
    # the run subtracted from it: the same process without the load
    assert child("--load", str(tmp_path), "0").split() == ["orders", "loaded", "0"]
