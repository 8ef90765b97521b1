"""A real ``exchange-server run`` process plus a stub auth service, for recording examples.

The same way tests/support/server.py starts one: ``python -m exchange_server run`` on free ports with
its own data directory.  The WebSocket side gets an accessws config whose ``auth_url`` and
``sign_url`` point at :class:`AuthStub`, a tiny HTTP service that knows a few tokens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AuthStub:
    """The operator's auth/sign web service as accessws expects it (websocket.md 5), in a
    thread (so it outlives any one event loop)."""

    def __init__(self, tokens: dict[str, int], keys: dict[str, int]) -> None:
        self.tokens = tokens
        self.keys = keys
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _answer(self, path: str, authorization: str) -> dict[str, Any]:
        url = urlsplit(path)
        user: int | None = None
        if url.path == "/auth":
            user = self.tokens.get(authorization)
            reject = "invalid token"
        else:
            access_id = parse_qs(url.query).get("access_id", [""])[0]
            user = self.keys.get(access_id) if authorization else None
            reject = "invalid signature"
        if user is None:
            return {"code": 1, "message": reject, "data": {}}
        return {"code": 0, "message": "ok", "data": {"user_id": user}}

    def start(self) -> AuthStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = json.dumps(stub._answer(self.path, self.headers.get("Authorization", "")))
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ws_config(self, **extra: Any) -> dict[str, Any]:
        return {"auth_url": f"http://127.0.0.1:{self.port}/auth",
                "sign_url": f"http://127.0.0.1:{self.port}/sign", **extra}


class LiveServer:
    """``python -m exchange_server run`` on free ports (stop() or use as a context manager)."""

    def __init__(self, data_dir: Path, ws_config: dict[str, Any] | None = None,
                 extra: list[str] | None = None, port: int = 0, ws_port: int = 0) -> None:
        self.data_dir = data_dir
        self.ws_config = ws_config
        self.extra = extra or []
        self.port = port or free_port()
        self.ws_port = ws_port or free_port()
        #: metrics (and the status page) are on by default: a free port of its own
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    def start(self, timeout: float = 30.0) -> LiveServer:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "exchange_server", "run", "--data-dir", str(self.data_dir),
                "--http-port", str(self.port), "--ws-port", str(self.ws_port),
                "--cli-port", "0"]  # no console: several live servers may run at once
        if self.ws_config is not None:
            path = self.data_dir.parent / f"{self.data_dir.name}-accessws.json"
            path.write_text(json.dumps(self.ws_config))
            args += ["--ws-config", str(path)]
        if "--metrics-port" not in self.extra:
            args += ["--metrics-port", str(self.metrics_port)]
        args += self.extra
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         env=env)
        ports = [self.port]
        if " ".join(self.extra).find("--disable accessws") < 0:
            ports.append(self.ws_port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                for port in ports:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        pass
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start in {timeout}s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
