"""Starting a real ``exchange-server run`` process for end-to-end tests.

Why the code root and the option probe: ``bench.compare --current-bench`` drives an older
checkout's code (first on ``PYTHONPATH``) with these helpers.  The server must then run that
checkout's ``exchange_server`` (``python -m`` puts its working directory first on ``sys.path``,
so the working directory is where the imported package lives, not this repository), and an
older ``exchange-server run`` refuses options it does not know (105fc31 has no ``--cli-port``):
for a foreign code root the options are read once from its ``run --help`` and unknown ones are
left out.
"""

from __future__ import annotations

import atexit
import functools
import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until

#: Codes of the wire (errors.py; literal here: this module imports no exchange_server code, see
#: code_root): 3 "service unavailable", and balance.update's 10 "repeat update".
SERVICE_UNAVAILABLE = 3
REPEAT_UPDATE = 10
#: accesshttp's answer when a backend did not answer within its timeout (1 s in
#: ``exchange-server run``)
GATEWAY_TIMEOUT = 504

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
#: The golden recordings the tests read (copies of shared/golden/ and its rpc/, cli/ and
#: takeover/ fixtures, so a clone stands alone); EXCHANGE_SHARED_DIR points elsewhere.
SHARED = Path(os.environ.get("EXCHANGE_SHARED_DIR", REPO / "tests" / "data"))


def code_root() -> Path:
    """The directory holding the ``exchange_server`` this process imports (REPO unless an older
    checkout comes first on ``PYTHONPATH``, as under ``bench.compare``)."""
    spec = importlib.util.find_spec("exchange_server")
    if spec is None or spec.origin is None:
        return REPO
    return Path(spec.origin).resolve().parents[1]


#: Where server processes run: ``python -m exchange_server`` imports the package from here.
CODE = code_root()


def options_in_help(text: str) -> frozenset[str]:
    """The ``--long-option`` names an argparse usage/help text mentions."""
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


@functools.cache
def run_options() -> frozenset[str] | None:
    """The options ``exchange-server run`` of :data:`CODE` accepts; None: this tree's own code,
    which knows every option the helpers pass (no probe)."""
    if CODE == REPO:
        return None
    out = subprocess.run([sys.executable, "-m", "exchange_server", "run", "--help"], cwd=CODE,
                         capture_output=True, text=True, timeout=60)
    return options_in_help(out.stdout)


def known_args(args: list[str], known: Collection[str] | None) -> list[str]:
    """``args`` without the ``--option value`` pairs ``known`` lacks (None: keep everything)."""
    if known is None:
        return list(args)
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("--") and arg.split("=", 1)[0] not in known:
            skip = "=" not in arg  # the value follows unless given as --option=value
        else:
            kept.append(arg)
    return kept


#: Every server a test started: whatever a failing test left running is killed at exit.
_STARTED: list[ServerProcess] = []


@atexit.register
def _kill_leftovers() -> None:
    for server in _STARTED:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


#: every port free_port handed out in this process
_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and that this process has not handed out before: two
    binds of port 0 in a row may get the same port from the kernel (a CI run gave one server
    the same HTTP and console port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


class ServerProcess:
    """``python -m exchange_server run`` on a free port with its own data directory."""

    def __init__(self, data_dir: Path, config: Path | None = None, extra: list[str] | None = None):
        self.data_dir = data_dir
        self.config = config
        self.extra = extra or []
        self.port = free_port()
        self.ws_port = free_port()
        #: the operator console's port (its own, so servers started in parallel never collide)
        self.cli_port = free_port()
        #: metrics are on by default (HTTP port + 20000): give each test server its own port
        given = self.extra.index("--metrics-port") if "--metrics-port" in self.extra else -1
        self.metrics_port = int(self.extra[given + 1]) if given >= 0 else free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        args = [sys.executable, "-m", "exchange_server", "run", "--data-dir", str(self.data_dir),
                "--http-port", str(self.port), "--ws-port", str(self.ws_port),
                "--cli-port", str(self.cli_port)]
        if "--metrics-port" not in self.extra:
            args += ["--metrics-port", str(self.metrics_port)]
        if self.config is not None:
            args += ["--config", str(self.config)]
        args += self.extra
        args = args[:4] + known_args(args[4:], run_options())
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(args, cwd=CODE, stdout=log, stderr=subprocess.STDOUT)
        _STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start in {timeout}s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def raw(self, body: bytes | str, method: str = "POST") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, "/", body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def call(self, method: str, *params: Any, req_id: int = 1) -> Any:
        """Call a method; return ``result`` or raise :class:`CallError` with the error."""
        status, body = self.raw(json.dumps({"method": method, "params": list(params), "id": req_id}))
        if status != 200:
            raise CallError(status, None)
        reply = json.loads(body)
        if reply["error"] is not None:
            raise CallError(status, reply["error"])
        return reply["result"]


    def setup_call(self, method: str, *params: Any, timeout: float = 120.0) -> Any:
        """:meth:`call` for a test's set-up step (a deposit before the load, ...): again while
        it is refused with code 3.

        Why: on a loaded machine a log commit can outlast ``commit_timeout`` (0.7 s); the
        engine then refuses writes with code 3 until the storage answers again.  A set-up step
        is not what the test is about, so it waits that out.  A ``balance.update`` is also sent
        again after a 504 (the gateway's 1 s timeout ran out first; the deposit may still
        land).  One answered "repeat update" after such a refusal or 504 was durable after all
        (the commit landed late): that counts as done.  Never use this for a call whose
        refusal the test checks."""
        refused = False

        def attempt() -> tuple[Any] | None:
            nonlocal refused
            try:
                return (self.call(method, *params),)
            except CallError as e:
                if e.code == SERVICE_UNAVAILABLE or (
                        e.status == GATEWAY_TIMEOUT and method == "balance.update"):
                    refused = True
                    return None
                if refused and method == "balance.update" and e.code == REPEAT_UPDATE:
                    return (None,)
                raise

        return wait_until(attempt, timeout, 0.1, f"{method} accepted (refused with code 3)")[0]


class CallError(Exception):
    def __init__(self, status: int, error: dict[str, Any] | None) -> None:
        super().__init__(status, error)
        self.status = status
        self.code = error["code"] if error else None
        self.error = error
