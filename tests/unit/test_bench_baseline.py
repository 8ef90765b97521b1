"""Driving an older checkout's code with this tree's benchmarks (``bench.compare
--current-bench``): the server helpers start the code that is imported, with only the options its
``exchange-server run`` knows, and the overlay makes this tree's ``tests.support`` importable in
front of the baseline's ``tests``.

Why: 105fc31 has no ``tests/support`` and no ``--cli-port``; without this, bench_http, bench_e2e
and bench_topology cannot measure issue 15's ratios against it.  No timing is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import compare
from tests.support import server

REPO = server.REPO
OLD_HELP = """usage: exchange-server run [-h] [--config CONFIG] [--data-dir DATA_DIR]
                           [--http-port HTTP_PORT] [--ws-port WS_PORT]
                           [--metrics-port METRICS_PORT] [--disable SERVICE]

options:
  -h, --help            show this help message and exit
  --config CONFIG, -c CONFIG
                        matchengine config (default: the original's sample-assets)
  --metrics-port METRICS_PORT
                        serve Prometheus metrics on GET /metrics at this port
"""


def test_options_are_read_from_a_help_text() -> None:
    found = server.options_in_help(OLD_HELP)
    assert found == {"--help", "--config", "--data-dir", "--http-port", "--ws-port",
                     "--metrics-port", "--disable"}


def test_unknown_options_are_left_out_with_their_values() -> None:
    known = server.options_in_help(OLD_HELP)
    args = ["--data-dir", "/d", "--http-port", "1", "--cli-port", "2", "--metrics-port", "3",
            "--new-flag=x", "--disable", "accessws"]
    assert server.known_args(args, known) == ["--data-dir", "/d", "--http-port", "1",
                                              "--metrics-port", "3", "--disable", "accessws"]
    assert server.known_args(args, None) == args


def test_this_trees_code_is_not_probed() -> None:
    assert server.CODE == REPO
    assert server.run_options() is None


def test_the_probe_reads_a_real_run_help() -> None:
    """What ``run_options`` runs for a foreign code root, here on this tree's own code."""
    out = subprocess.run([sys.executable, "-m", "exchange_server", "run", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert {"--cli-port", "--metrics-port", "--http-port"} <= server.options_in_help(out)


def test_overlay_puts_this_trees_helpers_before_the_baseline(tmp_path: Path) -> None:
    """A fake baseline (a ``tests`` package without ``support``, an ``exchange_server`` whose
    ``run --help`` is an old one): through the overlay the helpers import from this tree, the
    code and the probed options from the baseline."""
    base = tmp_path / "base"
    for package in ("tests", "exchange_server"):
        (base / package).mkdir(parents=True)
        (base / package / "__init__.py").write_text("")
    (base / "exchange_server" / "__main__.py").write_text(f"print({OLD_HELP!r})\n")
    overlay = compare.make_overlay(tmp_path)
    assert compare.make_overlay(tmp_path) == overlay  # made once, reused
    probe = ("import tests.support.server as s; print(s.__file__); print(s.CODE); "
             "print(' '.join(sorted(s.run_options() or ['ALL'])))")
    env = dict(os.environ, PYTHONPATH=f"{overlay}{os.pathsep}{base}")
    out = subprocess.run([sys.executable, "-c", probe], cwd=overlay, env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert Path(out[0]).resolve() == REPO / "tests" / "support" / "server.py"
    assert Path(out[1]) == base.resolve()  # servers run the baseline's code
    assert set(out[2].split()) == server.options_in_help(OLD_HELP)  # its options, probed
