"""Lifecycles as a stack: one start order, the reverse stop, and a failed step N stops 1..N-1.

Unit tests drive process/lifecycle.py with fakes that record what they are told; the others
start the real thing with one of its ports already taken -- an embedded system in-process (its
follower process, listeners and data-directory lock must all be released), a real
``exchange-server run`` and a real standalone matchengine (one error line, no traceback, no
process left behind).  Orphaned descendants are found with a child subreaper: the command runs
under a small wrapper that becomes the parent of whatever the command leaves behind.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import default_matchengine_data, load_matchengine
from exchange_server.embedded import EmbeddedOptions, EmbeddedSystem, lock_data_dir
from exchange_server.matchprocess.standalone import StandaloneMatchEngine
from exchange_server.process import lifecycle
from exchange_server.process.lifecycle import (
    Composite,
    StartupFailed,
    Step,
    start_steps,
    step,
    timing_line,
)
from tests.support.server import REPO, free_port
from tests.support.topology import Topology


class Recorder:
    """Fake components: each start and stop is written down; ``fail_at`` fails one start."""

    def __init__(self, fail_at: str | None = None, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.error = error or RuntimeError("boom")

    def steps(self, *names: str) -> list[Step]:
        return [step(name, self._start(name), self._stop(name)) for name in names]

    def _start(self, name: str) -> Any:
        async def start() -> None:
            self.calls.append(f"start {name}")
            if name == self.fail_at:
                raise self.error
        return start

    def _stop(self, name: str) -> Any:
        def stop() -> None:  # a plain function: steps take both kinds
            self.calls.append(f"stop {name}")
        return stop


async def test_steps_stop_in_the_reverse_order() -> None:
    rec = Recorder()
    stack = await start_steps(rec.steps("a", "b", "c"))
    assert rec.calls == ["start a", "start b", "start c"]
    await stack.aclose()
    assert rec.calls[3:] == ["stop c", "stop b", "stop a"]


async def test_a_start_logs_where_its_time_went(caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One line per start with the slow steps, slowest first, and the seconds since exec:
    where a restart's time goes, from the log alone.  The clock is the test's: the "restore"
    step moves it on by 1.25 s."""
    now = [100.0]
    monkeypatch.setattr(lifecycle.time, "perf_counter", lambda: now[0])

    def restore() -> None:
        now[0] += 1.25

    caplog.set_level(logging.INFO, logger="exchange_server")
    stack = await start_steps([step("quick"), step("restore", restore)])
    await stack.aclose()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("started in")]
    assert len(lines) == 1
    assert lines[0].startswith("started in 1.250 s (")
    assert lines[0].endswith(" s after exec): restore 1.250 s")


def test_the_timing_line_lists_slow_steps_slowest_first() -> None:
    line = timing_line(1.5, [("a", 0.001), ("gc freeze", 0.1), ("restore", 1.2)], 2.25)
    assert line == "started in 1.500 s (2.25 s after exec): restore 1.200 s, gc freeze 0.100 s"
    assert timing_line(0.002, [("a", 0.001)]) == "started in 0.002 s"


async def test_a_failure_at_step_n_stops_steps_1_to_n_minus_1_in_reverse() -> None:
    rec = Recorder(fail_at="c")
    with pytest.raises(RuntimeError, match="boom"):
        await start_steps(rec.steps("a", "b", "c", "d"))
    assert rec.calls == ["start a", "start b", "start c", "stop b", "stop a"]


async def test_an_os_error_is_one_startup_line_naming_the_step() -> None:
    rec = Recorder(fail_at="accessws", error=OSError(98, "address already in use"))
    with pytest.raises(StartupFailed) as failed:
        await start_steps(rec.steps("log", "accessws"))
    assert str(failed.value) == "cannot start: accessws: [Errno 98] address already in use"
    assert rec.calls == ["start log", "start accessws", "stop log"]


async def test_every_stop_runs_even_when_one_fails() -> None:
    calls: list[str] = []

    def broken() -> None:
        calls.append("stop b")
        raise RuntimeError("stop failed")

    stack = await start_steps([step("a", stop=lambda: calls.append("stop a")),
                               step("b", stop=broken),
                               step("c", stop=lambda: calls.append("stop c"))])
    with pytest.raises(RuntimeError, match="stop failed"):
        await stack.aclose()
    assert calls == ["stop c", "stop b", "stop a"]


async def test_a_composite_is_an_async_context_manager() -> None:
    rec = Recorder()

    class Two(Composite):
        def steps(self) -> list[Step]:
            return rec.steps("x", "y")

    async with Two() as two:
        assert isinstance(two, Two)
        assert rec.calls == ["start x", "start y"]
    assert rec.calls[2:] == ["stop y", "stop x"]


# -- the real components -------------------------------------------------------------------------

@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _names(steps: list[Step]) -> list[str]:
    return [s.name for s in steps]


SHARED_ORDER = ["operation log", "gc tuning", "history schema check", "restore", "gc freeze",
                "history follower", "bus publisher", "matchengine"]


async def test_embedded_with_the_websocket_port_taken_releases_everything(
        tmp_path: Path, taken_port: int) -> None:
    config = load_matchengine(default_matchengine_data(), embedded=True)
    http_port, cli_port = free_port(), free_port()
    system = EmbeddedSystem(config, EmbeddedOptions(
        data_dir=tmp_path / "data", http_port=http_port, ws_port=taken_port, cli_port=cli_port))
    with pytest.raises(StartupFailed, match=rf"cannot start: accessws: .*{taken_port}"):
        await system.start()
    assert system.follower._process is None  # stopped, not left running
    assert _free(http_port) and _free(cli_port)  # accesshttp was started, then stopped
    lock_data_dir(tmp_path / "data").close()  # the data directory lock is released
    # started again on free ports, the same system comes up with everything it had
    system = EmbeddedSystem(config, EmbeddedOptions(
        data_dir=tmp_path / "data", http_port=http_port, ws_port=free_port(), cli_port=cli_port))
    async with system:
        assert system.follower._process.is_alive()
        assert not _free(http_port)
    assert _free(http_port) and system.follower._process is None


def test_embedded_and_standalone_share_the_matching_process_order(tmp_path: Path) -> None:
    embedded = EmbeddedSystem(load_matchengine(default_matchengine_data(), embedded=True),
                              EmbeddedOptions(data_dir=tmp_path / "data"))
    names = _names(embedded.steps())
    assert [n for n in names if n in SHARED_ORDER] == SHARED_ORDER
    assert names.index("marketprice") < names.index("restore")  # a durable bus consumer
    # its state loads once the listeners take orders (the first order does not wait for it)
    assert names.index("accesshttp") < names.index("marketprice load") < names.index(
        "marketprice state") < names.index("console")
    assert names[0] == "data directory" and names[-1] == "console"
    data = {**default_matchengine_data(), "svr": {"bind": ["tcp@127.0.0.1:1"]},
            "db_log": _db(), "db_history": _db(), "brokers": "127.0.0.1:1",
            "cli": "tcp@127.0.0.1:1", "log": {"path": str(tmp_path / "log"), "flag": "error"}}
    standalone = StandaloneMatchEngine(load_matchengine(data))
    assert _names(standalone.steps()) == [*SHARED_ORDER, "rpc", "console"]


def _db() -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": 1, "user": "u", "pass": "p", "name": "n"}


# -- real processes ------------------------------------------------------------------------------

#: Runs a command as a child subreaper: prints its exit status, output and the pids of the
#: descendants it left behind (after they had up to 30 s to go away by themselves).
SUBREAPER = r"""
import ctypes, json, os, signal, subprocess, sys, time

ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=300)

def left():
    out = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rpartition(")")[2].split()[:2]
        except (OSError, ValueError):
            continue
        if ppid == str(os.getpid()):
            if state == "Z":
                os.waitpid(int(entry), 0)
            else:
                out.append(int(entry))
    return out

deadline = time.monotonic() + 120
while left() and time.monotonic() < deadline:
    time.sleep(0.05)
remaining = left()
for pid in remaining:
    os.kill(pid, signal.SIGKILL)
print(json.dumps({"code": done.returncode, "output": done.stdout + done.stderr,
                  "left": remaining}))
"""


def _run_reaped(tmp_path: Path, *args: str) -> dict[str, Any]:
    script = tmp_path / "subreaper.py"
    script.write_text(SUBREAPER)
    out = subprocess.run([sys.executable, str(script), sys.executable, "-m", "exchange_server",
                          *args], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _error_lines(output: str) -> list[str]:
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if "cannot start" in line]


def test_exchange_server_run_with_the_websocket_port_taken(tmp_path: Path,
                                                           taken_port: int) -> None:
    http_port, cli_port = free_port(), free_port()
    result = _run_reaped(tmp_path, "run", "--data-dir", str(tmp_path / "data"),
                         "--http-port", str(http_port), "--ws-port", str(taken_port),
                         "--cli-port", str(cli_port), "--metrics-port", "0")
    assert result["code"] == 1, result["output"]
    lines = _error_lines(result["output"])
    assert len(lines) == 1 and "accessws" in lines[0] and str(taken_port) in lines[0], lines
    assert result["left"] == [], "processes left behind (the history follower?)"
    assert _free(http_port) and _free(cli_port)


def test_exchange_server_run_with_the_console_port_taken(tmp_path: Path,
                                                         taken_port: int) -> None:
    http_port, ws_port = free_port(), free_port()
    result = _run_reaped(tmp_path, "run", "--data-dir", str(tmp_path / "data"),
                         "--http-port", str(http_port), "--ws-port", str(ws_port),
                         "--cli-port", str(taken_port), "--metrics-port", "0")
    assert result["code"] == 1, result["output"]
    lines = _error_lines(result["output"])
    assert len(lines) == 1 and "console" in lines[0] and str(taken_port) in lines[0], lines
    assert result["left"] == []
    assert _free(http_port) and _free(ws_port)


@pytest.mark.mysql
def test_standalone_matchengine_with_the_console_port_taken(
        tmp_path: Path, mysql_config: Any, taken_port: int) -> None:
    topo = Topology(tmp_path, mysql_config("test_lifecycle_log"),
                    mysql_config("test_lifecycle_history"), redis_db=9)
    conf = topo.configs["matchengine"]
    conf["cli"] = f"tcp@127.0.0.1:{taken_port}"
    path = topo.conf / "matchengine.json"
    path.write_text(json.dumps(conf))
    result = _run_reaped(tmp_path, "matchengine", "-c", str(path), "--lock-dir",
                         str(topo.lock_dir))
    assert result["code"] == 1, result["output"]
    lines = [line for line in _error_lines(result["output"]) if "init server fail" in line]
    assert len(lines) == 1 and "console" in lines[0] and str(taken_port) in lines[0], lines
    assert result["left"] == [], "processes left behind (the history follower?)"
    assert _free(topo.ports["matchengine"])  # the RPC listener was stopped
