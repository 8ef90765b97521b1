"""Process behaviour: lock file, watchdog restarts, daemon mode, signals, log files, alerts,
monitor port, rlimits.  The service processes are tiny workers started with run_service."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import ConfigError
from exchange_server.process.daemon import RESTART_STATUS
from exchange_server.process.limits import apply_limits
from exchange_server.process.lock import ProcessExists, acquire_process_lock, lock_path
from exchange_server.process.logsetup import (
    ALERT_MAGIC,
    AlertHandler,
    DlogFileHandler,
    DlogFormatter,
    LevelControl,
    build_alert,
    read_flag,
    setup_logging,
)
from exchange_server.process.monitor import MonitorServer
from exchange_server.process.settings import (
    LogSettings,
    ProcessConfig,
    read_process_settings,
)
from exchange_server.process.signals import ProcessSignals
from tests.support.server import REPO
from tests.support.waiting import wait_until_async
from tests.unit.test_rpc import free_port

ROOT = REPO
#: Deadline of a process start, restart or exit: a liveness check only, long enough for a
#: heavily loaded machine.
WAIT = 60.0

WORKER = '''
import asyncio, logging, os, sys
from exchange_server.process import run_service

class Tiny:
    def __init__(self, data):
        self.cfg = data["tiny"]
        self.exit_status = self.cfg.get("exit_status")

    async def start(self):
        go = self.cfg.get("exit_when")
        # decided before the pid file tells the test this worker runs (then it may create go)
        self.restarted = go is not None and os.path.exists(go)
        pid_file = self.cfg["pid_file"]
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
        if self.cfg.get("alert"):
            logging.getLogger("tiny").critical(self.cfg["alert"])
        logging.getLogger("tiny").info("tiny started")

    async def stop(self):
        with open(self.cfg["stopped_file"], "a") as f:
            f.write(f"{os.getpid()}\\n")

    async def finished(self):
        go = self.cfg.get("exit_when")
        if go is not None:  # the first worker ends once the file exists; the next ones never
            if self.restarted:
                await asyncio.Event().wait()
            while not os.path.exists(go):
                await asyncio.sleep(0.02)
            return
        if self.cfg.get("exit_after") is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.cfg["exit_after"])

async def build(data):
    return Tiny(data)

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(run_service(args[0], args[1], build, daemon="--daemon" in args,
                         watchdog_enabled=True if "--watchdog" in args else None,
                         restart_delay=0.3))
'''


class Worker:
    def __init__(self, tmp: Path, name: str = "tinysvc", **tiny: Any) -> None:
        self.tmp = tmp
        self.name = name
        self.script = tmp / "worker.py"
        self.script.write_text(WORKER)
        self.pid_file = tmp / "worker.pid"
        self.stopped_file = tmp / "stopped"
        self.log_path = tmp / "log" / name
        self.config = tmp / "config.json"
        data: dict[str, Any] = {
            "log": {"path": str(self.log_path), "flag": "fatal,error,warn,info"},
            "tiny": {"pid_file": str(self.pid_file), "stopped_file": str(self.stopped_file),
                     **tiny},
        }
        data["alert"] = {"addr": tiny.get("alert_addr", "127.0.0.1:9"),
                         "host": tiny.get("host", "testhost")}
        self.data = data
        self.config.write_text(json.dumps(data))
        self.procs: list[subprocess.Popen[str]] = []

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["EXCHANGE_LOCK_DIR"] = str(self.tmp)
        return env

    def start(self, *flags: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(self.script), self.name, str(self.config),
                                 *flags], env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.tmp)
        self.procs.append(proc)
        return proc

    def worker_pid(self, timeout: float = WAIT, not_pid: int | None = None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(self.pid_file.read_text())
                if pid != not_pid:
                    return pid
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.01)
        raise AssertionError("no worker pid")

    def cleanup(self) -> None:
        pids = []
        try:
            pids.append(int(self.pid_file.read_text()))
        except (OSError, ValueError):
            pass
        try:
            pids.append(int(lock_path(self.name, self.tmp).read_text()))
        except (OSError, ValueError):
            pass
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pid in pids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still alive")
        time.sleep(0.02)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    w = Worker(tmp_path)
    yield w
    w.cleanup()


# -- lock -----------------------------------------------------------------------------------


def test_lock_refuses_second_holder(tmp_path: Path) -> None:
    handle = acquire_process_lock("svc", tmp_path)
    try:
        assert (tmp_path / "svc.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(ProcessExists, match="process: svc exist"):
            acquire_process_lock("svc", tmp_path)
        acquire_process_lock("other", tmp_path).close()
    finally:
        handle.close()
    acquire_process_lock("svc", tmp_path).close()  # free again once released
    assert lock_path("x", None).parent == Path(os.environ.get("EXCHANGE_LOCK_DIR", "/tmp"))


def test_second_instance_prints_exist_and_exits_1(worker: Worker) -> None:
    first = worker.start()
    worker.worker_pid()
    second = worker.start()
    out, _ = second.communicate(timeout=WAIT)
    assert second.returncode == 1
    assert out.strip() == f"process: {worker.name} exist"
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=WAIT) == 0


# -- watchdog and daemon ----------------------------------------------------------------------


def test_watchdog_restarts_killed_worker_and_sigterm_stops_all(worker: Worker) -> None:
    watchdog = worker.start("--watchdog")
    first = worker.worker_pid()
    assert first != watchdog.pid
    assert (worker.tmp / f"{worker.name}.lock").read_text().strip() == str(watchdog.pid)
    os.kill(first, signal.SIGKILL)
    second = worker.worker_pid(not_pid=first)  # restarted (when is the machine's business)
    assert alive(second) and watchdog.poll() is None
    # SIGTERM to the watchdog: the worker stops gracefully, then the watchdog exits
    watchdog.send_signal(signal.SIGTERM)
    assert watchdog.wait(timeout=WAIT) == 0
    wait_dead(second)
    assert worker.stopped_file.read_text().split() == [str(second)]
    log_text = Path(f"{worker.log_path}.log").read_text()
    assert f"process: {first}, name: {worker.name} terminated by signal: 'Killed'" in log_text
    assert "[fatal]" in log_text


def test_watchdog_restarts_a_worker_that_asks_for_it(tmp_path: Path) -> None:
    """A worker ending with RESTART_STATUS (a deposed matchengine stepping down) gets a fresh
    worker, without a fatal line; SIGTERM still stops everything."""
    go = tmp_path / "go"
    w = Worker(tmp_path, exit_when=str(go), exit_status=RESTART_STATUS)
    try:
        watchdog = w.start("--watchdog")
        first = w.worker_pid()
        # only the first worker asks for a restart, when told: the SIGTERM below can't meet a
        # worker that is itself ending (the watchdog would then return its status)
        go.touch()
        second = w.worker_pid(not_pid=first)
        assert second != first and watchdog.poll() is None
        watchdog.send_signal(signal.SIGTERM)
        assert watchdog.wait(timeout=WAIT) == 0
        log_text = Path(f"{w.log_path}.log").read_text()
        assert f"watchdog: worker {first} asked for a restart" in log_text
        assert "[fatal]" not in log_text
    finally:
        w.cleanup()


def test_watchdog_exits_when_worker_exits_normally(tmp_path: Path) -> None:
    w = Worker(tmp_path, exit_after=0.2)
    try:
        watchdog = w.start("--watchdog")
        assert watchdog.wait(timeout=WAIT) == 1  # the service ended by itself: status 1
        assert w.stopped_file.exists()
    finally:
        w.cleanup()


def test_sigterm_to_worker_is_graceful_stop(worker: Worker) -> None:
    port = free_port()
    worker.data["monitor"] = {"bind": f"tcp@127.0.0.1:{port}", "max_pkg_size": 1024}
    worker.config.write_text(json.dumps(worker.data))
    proc = worker.start()  # foreground, no watchdog
    pid = worker.worker_pid()
    assert pid == proc.pid
    deadline = time.monotonic() + WAIT
    while True:  # the monitor port answers connections (started after the service)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as probe:
                probe.sendall(b"ping")
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    os.kill(pid, signal.SIGQUIT)
    assert proc.wait(timeout=WAIT) == 0
    assert worker.stopped_file.read_text().split() == [str(pid)]


def test_daemon_detaches_and_keeps_worker_alive(worker: Worker) -> None:
    launcher = worker.start("--daemon")
    assert launcher.wait(timeout=WAIT) == 0  # the launching process returns at once
    first = worker.worker_pid()
    lock_file = worker.tmp / f"{worker.name}.lock"
    deadline = time.monotonic() + WAIT
    watchdog_pid = 0
    while time.monotonic() < deadline:
        text = lock_file.read_text().strip()
        if text and int(text) not in (launcher.pid, first):
            watchdog_pid = int(text)
            break
        time.sleep(0.02)
    assert watchdog_pid and alive(watchdog_pid)
    assert os.getsid(watchdog_pid) != os.getsid(0)  # own session, no terminal
    assert os.readlink(f"/proc/{first}/fd/1") == "/dev/null"
    os.kill(first, signal.SIGKILL)
    second = worker.worker_pid(not_pid=first)
    assert alive(second)
    # a second start while the daemon runs is refused
    again = worker.start("--daemon")
    out, _ = again.communicate(timeout=WAIT)
    assert again.returncode == 1 and "exist" in out
    os.kill(watchdog_pid, signal.SIGTERM)
    wait_dead(watchdog_pid)
    wait_dead(second)
    assert str(second) in worker.stopped_file.read_text().split()


def test_bad_config_reported_before_detaching(tmp_path: Path) -> None:
    w = Worker(tmp_path)
    try:
        w.data["log"] = {"path": str(tmp_path / "x")}  # flag missing
        w.config.write_text(json.dumps(w.data))
        proc = w.start("--daemon")
        _, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 2
        assert "log.flag: required field is missing" in err
    finally:
        w.cleanup()


# -- signals -------------------------------------------------------------------------------------


async def test_signal_handlers_level_and_reload() -> None:
    levels = LevelControl(read_flag("fatal,error,warn,info"))
    old_level = logging.getLogger().level
    signals = ProcessSignals(levels, daemon=False).install()
    try:
        # each handler runs on a later turn of the event loop
        os.kill(os.getpid(), signal.SIGTTIN)
        await wait_until_async(lambda: levels.describe() == "fatal,error,warn,info,notice")
        os.kill(os.getpid(), signal.SIGTTOU)
        os.kill(os.getpid(), signal.SIGTTOU)
        await wait_until_async(lambda: levels.describe() == "fatal,error,warn")
        assert logging.getLogger().level == logging.WARNING
        os.kill(os.getpid(), signal.SIGUSR1)
        await wait_until_async(lambda: signals.reload)
        assert signals.reload
        assert not signals.stop.is_set()
        signals.request_stop()
        assert signals.stop.is_set()
    finally:
        signals.uninstall()
        logging.getLogger().setLevel(old_level)


def test_level_control_matches_original_bits() -> None:
    levels = LevelControl(read_flag("fatal, info,DEBUG"))
    assert levels.describe() == "fatal,info,debug"
    assert levels.filter(logging.makeLogRecord({"levelno": logging.INFO}))
    assert not levels.filter(logging.makeLogRecord({"levelno": logging.ERROR}))
    levels.level_up()  # the first disabled bit: error
    assert levels.describe() == "fatal,error,info,debug"
    levels.level_down()  # the most verbose enabled bit: debug
    assert levels.describe() == "fatal,error,info"
    assert read_flag("bogus") == 0


# -- log files -------------------------------------------------------------------------------


def make_logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(f"test.process.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_size_shift_keeps_num_files(tmp_path: Path) -> None:
    base = tmp_path / "logs" / "svc"
    handler = DlogFileHandler(str(base), "size", max_bytes=300, num=3)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "size")
    for i in range(100):
        logger.info("line %03d %s", i, "x" * 40)
    handler.close()
    names = sorted(p.name for p in base.parent.iterdir())
    assert names == ["svc.log", "svc.log.1", "svc.log.2"]
    assert "line 099" in (base.parent / "svc.log").read_text()
    older = (base.parent / "svc.log.2").read_text().split("\n")[0]
    newer = (base.parent / "svc.log.1").read_text().split("\n")[0]
    assert older < newer
    assert all(p.stat().st_size <= 300 + 60 for p in base.parent.iterdir())


def test_size_shift_num_1_truncates(tmp_path: Path) -> None:
    handler = DlogFileHandler(str(tmp_path / "one"), "size", max_bytes=100, num=1)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "one")
    for i in range(20):
        logger.info("message %02d %s", i, "y" * 20)
    handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.log"]
    assert "message 19" in (tmp_path / "one.log").read_text()


def test_time_shift_names_and_expiry(tmp_path: Path) -> None:
    now = [time.mktime((2024, 5, 1, 12, 0, 0, 0, 0, -1))]
    base = tmp_path / "svc"
    for stamp in ("20240420", "20240428", "20240429", "20240430"):
        (tmp_path / f"svc.{stamp}.log").write_text("old\n")
    (tmp_path / "svc.20240420.log.1").write_text("old\n")
    handler = DlogFileHandler(str(base), "day", max_bytes=0, num=10, keep=2,
                              clock=lambda: now[0])
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "day")
    logger.info("first day")
    now[0] += 86400  # next local day
    logger.info("second day")
    handler.close()
    assert (tmp_path / "svc.20240501.log").read_text() == "first day\n"
    assert (tmp_path / "svc.20240502.log").read_text() == "second day\n"
    left = sorted(p.name for p in tmp_path.iterdir())
    # files of days older than keep=2 days before 2024-05-02 are gone
    assert left == ["svc.20240501.log", "svc.20240502.log"]


def test_hour_and_min_shift_names(tmp_path: Path) -> None:
    t = time.mktime((2024, 5, 1, 7, 8, 9, 0, 0, -1))
    assert DlogFileHandler(str(tmp_path / "h"), "hour", clock=lambda: t).current_name().endswith(
        "h.2024050107.log")
    assert DlogFileHandler(str(tmp_path / "m"), "min", clock=lambda: t).current_name().endswith(
        "m.202405010708.log")


def test_line_format_like_the_original(tmp_path: Path) -> None:
    handler = DlogFileHandler(str(tmp_path / "fmt"), "size")
    handler.setFormatter(DlogFormatter(pid=True))
    logger = make_logger(handler, "fmt")

    def emit_here() -> None:
        logger.warning("hello %s", "world")

    emit_here()
    handler.close()
    line = (tmp_path / "fmt.log").read_text().strip()
    assert re.fullmatch(
        rf"\[\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{6}}\] \[{os.getpid()}\] "
        r"\[warn\]test_process\.py:\d+\(emit_here\): hello world", line), line


def test_setup_logging_applies_flag_filter(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup = setup_logging(LogSettings(path=str(tmp_path / "f"), flag="fatal,info", pid=False))
        logging.getLogger("x").error("not written")
        logging.getLogger("x").info("written")
        logging.getLogger("x").debug("not written either")
        setup.close()
        text = (tmp_path / "f.log").read_text()
        assert "written" in text and "not written" not in text
        assert "] [info]" in text  # no [pid] with pid=false
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


# -- alerts ----------------------------------------------------------------------------------------


def test_alert_handler_sends_fatal_records_by_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(2)
        handler = AlertHandler("me.host", sink.getsockname())
        levels = LevelControl(read_flag("fatal,error"))
        handler.addFilter(levels)
        logger = make_logger(handler, "alert")

        def fail_here() -> None:
            logger.critical("disk %s\nfull", "sda")

        fail_here()
        data = sink.recv(20000)
        assert data.startswith(ALERT_MAGIC) and data.endswith(b"\n")
        assert re.fullmatch(rb"me\.host: \[fatal\]test_process\.py:\d+\(fail_here\): disk sda full",
                            data[20:-1]), data
        logger.error("not an alert")
        logger.critical("x" * 20000)
        big = sink.recv(20000)
        assert len(big) == 10240 and big.endswith(b"\n")
        sink.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sink.recv(20000)  # the error record sent nothing
        levels.mask = read_flag("error")  # fatal not in the flag: no alert either
        logger.critical("silent")
        with pytest.raises(TimeoutError):
            sink.recv(20000)
        handler.close()
    assert build_alert("é" * 6000).endswith(b"\n") and len(build_alert("é" * 6000)) <= 10240


# -- config, rlimits, monitor ----------------------------------------------------------------------


def test_process_settings() -> None:
    data = {"process": {"file_limit": 1000, "core_limit": 0},
            "log": {"path": "/var/log/trade/me", "flag": "fatal,error", "shift": "WEEK"},
            "alert": {"addr": "127.0.0.1:4444", "host": "matchengine"},
            "monitor": {"bind": "tcp@0.0.0.0:8081", "max_pkg_size": 1024}}
    s = read_process_settings(data)
    assert s.process == ProcessConfig(1000, 0)
    assert s.log.shift == "day" and s.log.pid and s.log.num == 100 and s.log.max == 100_000_000
    assert s.alert is not None and s.alert.addr == ("127.0.0.1", 4444)
    assert s.monitor is not None and s.monitor.bind == ["tcp@0.0.0.0:8081"]
    del data["alert"]
    with pytest.raises(ConfigError, match="alert: required"):
        read_process_settings(data)
    assert read_process_settings(data, alert_required=False).alert is None
    with pytest.raises(ConfigError, match=r"alert\.addr"):
        read_process_settings({**data, "alert": {"addr": "nowhere", "host": "x"}})


def test_file_limit_applied() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = soft + 1 if hard == resource.RLIM_INFINITY or soft < hard else soft
    try:
        apply_limits(ProcessConfig(file_limit=target, core_limit=0))
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= target
        apply_limits(ProcessConfig(file_limit=1))  # lower than now: left alone
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= target
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


async def test_monitor_accepts_and_ignores(tmp_path: Path) -> None:
    monitor = MonitorServer()
    await monitor.start(["tcp@127.0.0.1:0", f"stream@{tmp_path / 'mon.sock'}"])
    try:
        port = int(monitor.addresses[0].rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\n\r\nanything")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)  # nothing comes back, still open
        writer.close()
        r2, w2 = await asyncio.open_unix_connection(str(tmp_path / "mon.sock"))
        w2.close()
    finally:
        await monitor.stop()
