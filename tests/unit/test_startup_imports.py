"""What ``exchange-server run`` imports before its first order, and the command line's lean parse.

Why: every module a restart imports is paid for between a SIGKILL and the first accepted order
(issue 15's restart goal: docs/operations.md section 14).  The embedded mode needs neither
MySQL's nor Kafka's client, nor the operator sub-commands' modules (deploy, status, call), nor
the binary RPC or the API client; they used to cost about a sixth of its imports.  The check
runs in a fresh interpreter, as the command does.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from exchange_server import cli
from tests.support.server import REPO

#: What ``run`` must not import (SQLite storage, the default).
NOT_ON_THE_RUN_PATH = (
    "pymysql", "confluent_kafka", "redis", "exchange_server.deploy",
    "exchange_server.status.command", "exchange_server.status.collect",
    "exchange_server.client.cli", "exchange_server.client.http_client",
    "exchange_server.client.methods", "exchange_server.rpc.client", "exchange_server.rpc.server",
    "exchange_server.process.runner", "exchange_server.accessws.standalone",
    "exchange_server.matchengine.store_mysql", "exchange_server.bus.kafka",
)

IMPORTS_OF_RUN = """
import json, sys
from exchange_server import cli
args = cli.build_parser(cli.command_word(["run"])).parse_args(["run"])
import exchange_server.embedded, exchange_server.accessws.config
print(json.dumps(sorted(sys.modules)))
"""


def test_run_imports_nothing_it_does_not_need() -> None:
    out = subprocess.run([sys.executable, "-c", IMPORTS_OF_RUN], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True)
    loaded = set(json.loads(out.stdout))
    assert "exchange_server.embedded" in loaded and "aiohttp.web" in loaded
    assert sorted(loaded.intersection(NOT_ON_THE_RUN_PATH)) == []


@pytest.mark.parametrize(("argv", "word"), [
    (["run", "--data-dir", "x"], "run"),
    (["--log-level", "DEBUG", "status", "--json"], "status"),
    (["--log-level=DEBUG", "deploy", "d"], "deploy"),
    (["--log-l", "DEBUG", "call", "x"], "call"),
    (["--help"], None),
    ([], None),
])
def test_the_command_word(argv: list[str], word: str | None) -> None:
    assert cli.command_word(argv) == word


def sub_commands(parser: object) -> set[str]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_the_lean_parser_leaves_out_only_the_separate_commands() -> None:
    everything = sub_commands(cli.build_parser())
    assert set(cli.SEPARATE_COMMANDS) <= everything
    assert sub_commands(cli.build_parser("run")) == everything - set(cli.SEPARATE_COMMANDS)
    assert sub_commands(cli.build_parser("status")) == everything
    assert sub_commands(cli.build_parser("no-such-command")) == everything  # its error lists all


def test_a_separate_command_still_parses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--log-level", "WARNING", "status", "--help"])
    assert exit_.value.code == 0
    assert "usage: exchange-server status" in capsys.readouterr().out
