"""The operator console (the original's ``cli`` port) against real servers.

Why: operators' scripts parse the original's console text, so the golden session recorded from
the original right after ``transcript-1.jsonl`` (tests/data/cli/) is replayed against this
project in embedded mode and in the production topology (standalone matchengine on MariaDB and
Kafka), once the history and bus backlogs have drained: rows of ``balance list``/``get`` and the
lines of ``help`` may come in any order (the original's hash order), everything else must be
byte-equal.  Then the hardening: several commands on one connection, quoting, garbage, long
lines, idle and surplus connections, and ``makeslice`` really publishing a slice.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange_server.bus.mark import MarkFile
from exchange_server.bus.memory import InProcessBus
from exchange_server.bus.publisher import BusPublisher
from exchange_server.common.config import ConfigError, default_matchengine_data, load_matchengine
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import EngineStore
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.matchprocess.console import (
    MAX_LINE,
    Console,
    ConsoleServer,
    parse_console_address,
    split_args,
    user_id_arg,
)
from exchange_server.matchprocess.follower import FollowerProcess, FollowerSpec
from exchange_server.rpc.addr import SockAddr
from tests.support.server import REPO, SHARED, ServerProcess
from tests.support.topology import Topology
from tests.support.waiting import wait_port

FIXTURE = REPO / "tests" / "data" / "cli" / "matchengine-cli.jsonl"
GOLDEN = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
TRANSCRIPT = SHARED / "golden" / "transcript-1.jsonl"
CONFIG = SHARED / "golden" / "matchengine.json"
#: replies whose lines (after a header) come in the original's hash order
UNORDERED = ("help", "balance list", "balance get")
#: a generous bound for anything asynchronous to happen
WAIT = 60.0


# -- talking to the console -----------------------------------------------------------------------

def console(port: int, data: bytes, timeout: float = WAIT) -> bytes:
    """Send ``data`` on a fresh connection, half-close, and read everything until the server
    closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def command(port: int, line: str) -> str:
    return console(port, f"{line}\n".encode()).decode()


def wait_listening(port: int) -> None:
    wait_port(port, WAIT, "(the console)")


def wait_drained(port: int) -> str:
    """Poll ``status`` until the log, history and bus backlogs are all 0."""
    deadline = time.monotonic() + WAIT
    while True:
        status = command(port, "status")
        pending = [line for line in status.splitlines() if "pending" in line]
        if len(pending) == 5 and all(line.endswith(" 0") for line in pending):
            return status
        assert time.monotonic() < deadline, f"backlog never drained: {status}"
        time.sleep(0.1)


def normalized(cmd: str, reply: str) -> Any:
    """What must be equal: the exact text, or header plus the multiset of rows."""
    if cmd.startswith(UNORDERED):
        lines = reply.split("\n")
        head = [] if cmd == "help" else lines[:1]
        return head, sorted(lines[len(head):])
    return reply


def check_golden_session(port: int) -> None:
    wait_drained(port)
    for entry in GOLDEN:
        reply = command(port, entry["command"])
        assert normalized(entry["command"], reply) == normalized(entry["command"],
                                                                 entry["reply"]), entry["command"]


def made_slices(port: int, store: EngineStore) -> set[tuple[int, int, int]]:
    """``makeslice``, then the (operation, order, deal) ids of the slices published since: it
    answers once its slice is published (slices are named by the second they were taken)."""
    since = int(time.time())
    assert command(port, "makeslice") == "OK\n"
    return {(s.end_oper_id, s.end_order_id, s.end_deals_id) for s in store.list_slices()
            if s.time >= since}


def replay_transcript(call: Any) -> None:
    for line in TRANSCRIPT.read_text().splitlines():
        if line.strip():
            step = json.loads(line)
            raw = step.get("request_raw")
            call((raw if raw is not None else json.dumps(step["request"])).encode())


# -- embedded mode --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("console") / "data"
    # the golden session followed transcript-1, recorded without marketprice
    server = ServerProcess(data, config=CONFIG, extra=["--disable", "marketprice"]).start()
    try:
        replay_transcript(server.raw)
        yield server
    finally:
        server.stop()


def test_golden_session_embedded(embedded: ServerProcess) -> None:
    check_golden_session(embedded.cli_port)


def test_several_commands_share_a_connection(embedded: ServerProcess) -> None:
    replies = {entry["command"]: entry["reply"] for entry in GOLDEN}
    wait_drained(embedded.cli_port)
    got = console(embedded.cli_port, b"status\r\n\n   \nbalance get 2\nnosuch\nmarket\n")
    expected = replies["status"] + "\n".join(
        normalized("balance get 2", replies["balance get 2"])[0]) + "\n"
    assert got.decode().startswith(expected)
    assert got.decode().endswith("command not found\nusage market summary\n")
    assert sorted(got.decode().splitlines()) == sorted(
        (replies["status"] + replies["balance get 2"] + "command not found\n"
         "usage market summary\n").splitlines())


def test_quoting_and_arguments_as_the_original(embedded: ServerProcess) -> None:
    port = embedded.cli_port
    replies = {entry["command"]: entry["reply"] for entry in GOLDEN}
    get1 = normalized("balance get 1", replies["balance get 1"])
    for line in ('balance get "1"', "balance get '1'", "balance   get\t1", "balance get 0x1",
                 "balance get 01", 'balance "get" "\\x31"', "balance get 1\0 trailing"):
        assert normalized("balance get 1", command(port, line)) == get1, line
    assert command(port, "balance get 1 2") == "usage: balance get user_id\n"
    assert command(port, "balance get nobody") == replies["balance get 999"]
    lines = command(port, "balance get -1").splitlines()
    assert lines == replies["balance get 999"].splitlines()  # user 4294967295 has nothing
    # "balance list ASSET" filters only with exactly one asset, as the original
    btc = normalized("balance list BTC", replies["balance list BTC"])
    assert normalized("balance list BTC", command(port, "balance list 'BTC'")) == btc
    everything = normalized("balance list", replies["balance list"])
    assert normalized("balance list", command(port, "balance list BTC more")) == everything
    assert command(port, "balance list NOPE").splitlines() == ["user       asset            "
                                                               "type       amount"]
    assert command(port, "balance nonsense") == "usage: balance list/get/summary\n"
    assert command(port, "market nonsense") == "usage market summary\n"
    assert command(port, '"help"') == command(port, "help")


def test_garbage_gets_clear_errors_and_the_console_survives(embedded: ServerProcess) -> None:
    port = embedded.cli_port
    assert command(port, 'balance get "1') == "error: unbalanced quotes in the command line\n"
    assert command(port, 'balance get "1"x') == "error: unbalanced quotes in the command line\n"
    assert console(port, b"\xff\xfe\x00\x80 status\n") == b"command not found\n"
    assert console(port, b"\n\n\r\n") == b""
    assert console(port, b"status") == b""  # no "\n": never a command
    long_line = b"status " + b"x" * MAX_LINE + b"\nstatus\n"
    assert console(port, long_line) == f"error: command line longer than {MAX_LINE} bytes\n"\
        .encode()
    at_limit = b"balance get 1" + b" " * (MAX_LINE - 14) + b"\n"
    assert len(at_limit) == MAX_LINE
    assert console(port, at_limit).startswith(b"user       asset")
    over = b"balance get 1" + b" " * (MAX_LINE - 13) + b"\n"
    assert console(port, over).startswith(b"error: command line longer")
    assert command(port, "status").startswith("order last ID: 7\n")


def test_makeslice_publishes_a_slice(embedded: ServerProcess) -> None:
    port = embedded.cli_port
    wait_drained(port)
    store = SqliteEngineStore(embedded.data_dir)
    store.open()
    try:
        assert made_slices(port, store) == {(13, 7, 4)}
    finally:
        store.close()


def test_cli_port_must_be_a_port(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "exchange_server", "run", "--data-dir",
                             str(tmp_path / "d"), "--cli-port", "70000"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--cli-port 70000: not a port" in result.stderr


# -- production: the standalone matchengine on MariaDB and Kafka ----------------------------------

@pytest.mark.mysql
def test_golden_session_standalone(tmp_path: Path, mysql_config: Any) -> None:
    db_log = mysql_config("test_console_log")
    topo = Topology(tmp_path, db_log, mysql_config("test_console_history"), redis_db=8,
                    topic_prefix=f"console{uuid.uuid4().hex[:8]}_")
    services = ("matchengine", "readhistory", "accesshttp")
    try:
        for name in services:
            topo.start(name)
        port = topo.ports["cli"]
        wait_listening(port)  # the worker binds it once restored and connected
        wait_matchengine_reached(topo.http_port)
        replay_transcript(lambda body: _post(topo.http_port, body))
        check_golden_session(port)
        store = MysqlEngineStore(db_log)
        store.open()
        try:
            assert made_slices(port, store) == {(13, 7, 4)}
        finally:
            store.close()
    finally:
        for name in reversed(services):
            topo.stop(name)


def _post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/", body=body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_matchengine_reached(port: int) -> None:
    """accesshttp answers 500 until it has connected to the matchengine."""
    deadline = time.monotonic() + WAIT
    body = json.dumps({"method": "asset.list", "params": [], "id": 1}).encode()
    while _post(port, body) != 200:
        assert time.monotonic() < deadline, "accesshttp never reached the matchengine"
        time.sleep(0.1)


# -- units ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "words"), [
    ("", []),
    ("  \t\r\n", []),
    ("status\r\n", ["status"]),
    ("balance  get\t1", ["balance", "get", "1"]),
    ('a "b c" d', ["a", "b c", "d"]),
    ("a 'b \"c' d", ["a", 'b "c', "d"]),
    ('"\\x41\\n\\t\\"\\q"', ["A\n\t\"q"]),
    ("'it\\'s'", ["it's"]),
    ('x"y z"', ["xy z"]),
    ("back\\slash", ["back\\slash"]),
    ('"unterminated', None),
    ("'unterminated", None),
    ('"a"b', None),
    ("'a'b", None),
    ('"\\', None),
    ("a\0b c", ["a"]),
])
def test_split_args_as_sdssplitargs(line: str, words: list[str] | None) -> None:
    assert split_args(line) == words


@pytest.mark.parametrize(("text", "user"), [
    ("1", 1), ("42abc", 42), ("abc", 0), ("", 0), ("0x1f", 31), ("0X1F", 31), ("010", 8),
    ("08", 0), ("0x", 0), ("  +7", 7), ("-1", 4294967295), ("4294967296", 0),
    ("4294967297", 1), ("9" * 60, 4294967295), ("0" * 50 + "5", 5),
])
def test_user_id_as_strtoul(text: str, user: int) -> None:
    assert user_id_arg(text) == user


async def test_a_console_off_loopback_is_warned_about(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    config = load_matchengine(default_matchengine_data(), embedded=True)
    console_ = Console(MatchEngineService(config, SqliteEngineStore(tmp_path)))
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        server = ConsoleServer(console_)
        caplog.clear()
        await server.start(SockAddr("tcp", host, 0))
        await server.stop()
        assert ("not a loopback address" in caplog.text) is warned, host


async def test_status_counts_the_real_backlogs(tmp_path: Path) -> None:
    """Not zeros: the log's uncommitted operations, the follower's backlog, the bus's
    unacknowledged messages."""
    config = load_matchengine(default_matchengine_data(), embedded=True)
    store = SqliteEngineStore(tmp_path)
    store.open()
    service = MatchEngineService(config, store)
    mark = MarkFile(tmp_path / "bus.mark")
    publisher = BusPublisher(InProcessBus(mark), mark)  # never started: nothing acknowledged
    service.add_sink(publisher)
    # never started either: it applies nothing
    follower = FollowerProcess(FollowerSpec(config.raw, True, str(tmp_path), "sqlite"))
    console_ = Console(service, follower, publisher)

    async def status() -> dict[str, str]:
        lines = (await console_.execute(b"status\n")).decode().splitlines()
        return {line.rpartition(" ")[0].rstrip(":"): line.rpartition(" ")[2] for line in lines}

    service.execute("balance.update", [1, "BTC", "deposit", 1, "10", {}])
    assert (await status())["operlog pending"] == "1"  # not committed: the service is not running
    await service.start()
    try:
        await service.flush()
        counters = await status()
        assert counters["operlog last ID"] == "1" and counters["operlog pending"] == "0"
        assert counters["history pending"] == "1"  # the follower has not applied operation 1
        assert counters["message balances pending"] == "1"
        assert counters["message deals pending"] == counters["message orders pending"] == "0"
        follower.applied.value = 1
        follower.pending.value = 3  # three history rows not written yet
        assert (await status())["history pending"] == "3"
    finally:
        await service.stop(final_slice=False)
        store.close()


async def test_console_on_a_unix_socket(tmp_path: Path) -> None:
    config = load_matchengine(default_matchengine_data(), embedded=True)
    server = ConsoleServer(Console(MatchEngineService(config, SqliteEngineStore(tmp_path))))
    path = tmp_path / "me-cli.sock"
    path.write_text("stale")  # a left-over file is replaced, as the original's listeners do
    await server.start(parse_console_address(f"stream@{path}"))
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"status\nnosuch\n")
        writer.write_eof()
        reply = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
    finally:
        await server.stop()
    assert reply.startswith(b"order last ID: 0\n") and reply.endswith(b"command not found\n")
    assert not path.exists()


def test_console_address_from_config() -> None:
    assert parse_console_address("tcp@127.0.0.1:7317") == SockAddr("tcp", "127.0.0.1", 7317)
    assert parse_console_address("stream@/tmp/x.sock").path == "/tmp/x.sock"
    for bad in ("udp@127.0.0.1:7317", "127.0.0.1:7317", "tcp@127.0.0.1"):
        with pytest.raises(ConfigError, match="^cli: "):
            parse_console_address(bad)


async def test_idle_and_surplus_connections_are_closed(tmp_path: Path) -> None:
    config = load_matchengine(default_matchengine_data(), embedded=True)
    service = MatchEngineService(config, SqliteEngineStore(tmp_path))
    server = ConsoleServer(Console(service), max_connections=1, idle_timeout=0.5)
    await server.start(SockAddr("tcp", "127.0.0.1", 0))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"market\n")
        assert await reader.readline() == b"usage market summary\n"
        extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(extra_reader.read(), WAIT) == \
            b"error: too many console connections\n"
        extra_writer.close()
        # silent: closed by the server (EOF), not by us
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
    finally:
        await server.stop()
