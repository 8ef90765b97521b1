"""bench/engine_instructions.py's measured loop runs on this tree (valgrind itself is not needed
here: the loop is what would rot unnoticed when the engine's API moves)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.server import REPO


def test_the_measured_loop_places_orders_and_makes_deals() -> None:
    out = subprocess.run([sys.executable, "bench/engine_instructions.py", "--child", "300", "400"],
                         cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    words = out.split()
    assert words[:2] == ["orders", "300"] and words[2] == "deals"
    assert int(words[3]) > 100  # about half the orders cross the book
