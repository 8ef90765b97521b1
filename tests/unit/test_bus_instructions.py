"""bench/bus_instructions.py's measured loop runs on this tree (valgrind itself is not needed
here: the loop is what would rot unnoticed when the bus's or marketprice's API moves)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.server import REPO


def test_the_measured_loop_feeds_marketprice_every_deal() -> None:
    out = subprocess.run([sys.executable, "bench/bus_instructions.py", "--child", "bus", "600",
                          "800"], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    words = out.split()
    assert words[:4] == ["mode", "bus", "orders", "600"] and words[4] == "deals"
    deals = int(words[5])
    assert deals > 100  # about half the orders cross the book
    assert words[6:8] == ["applied", str(deals)]  # marketprice consumed every deal
