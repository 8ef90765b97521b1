"""Headless Chromium (Debian's ``chromium`` package) driven through the Chrome DevTools
Protocol over aiohttp: just enough for page tests (navigate, evaluate, screenshot).

No browser download: the binary is /usr/bin/chromium (``apt-get install -y chromium``), or
``$CHROMIUM``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.waiting import wait_until_async

#: Deadline of chromium's start and of one DevTools command: a liveness check only, long
#: enough for a heavily loaded machine.
WAIT = 120.0
#: DevTools errors of an evaluation that met a document being replaced: not an answer yet.
NAVIGATING = ("Execution context was destroyed", "Cannot find context",
              "Cannot find default execution context")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--no-default-browser-check", "--hide-scrollbars",
    "--mute-audio", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


class Browser:
    """One headless Chromium with one page."""

    def __init__(self, width: int = 1400, height: int = 900) -> None:
        self.width = width
        self.height = height
        self.proc: subprocess.Popen[bytes] | None = None
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        #: Runtime.exceptionThrown and console error texts seen so far
        self.errors: list[str] = []
        self.console: list[str] = []

    async def start(self, timeout: float = WAIT) -> Browser:
        path = chromium_path()
        if path is None:
            raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
        args = [path, *FLAGS, f"--user-data-dir={self._profile.name}",
                f"--window-size={self.width},{self.height}", "about:blank"]
        # its own process group: close() ends chromium's helper processes too, which otherwise
        # may still write into the profile while it is being removed
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        port = await asyncio.wait_for(self._devtools_port(), timeout)
        self._session = aiohttp.ClientSession()
        async with asyncio.timeout(timeout):
            while True:
                async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    targets = await resp.json(content_type=None)
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    break
                await asyncio.sleep(0.1)
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"],
                                                  max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width,
                        height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    async def _devtools_port(self) -> int:
        assert self.proc is not None and self.proc.stderr is not None
        loop = asyncio.get_running_loop()
        stderr = self.proc.stderr
        while True:
            line = await loop.run_in_executor(None, stderr.readline)
            if not line:
                raise RuntimeError("chromium exited before DevTools started")
            match = re.search(rb"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                # keep draining stderr so chromium never blocks on a full pipe
                loop.run_in_executor(None, _drain, stderr)
                return int(match.group(1))

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(str(data["error"])))
                    else:
                        future.set_result(data.get("result", {}))
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description")
                                   or details.get("text", "exception"))
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                self.console.append(f"{data['params'].get('type')}: {text}")
                if data["params"].get("type") == "error":
                    self.errors.append(text)

    async def send(self, method: str, **params: Any) -> Any:
        assert self._ws is not None
        req_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        await self._ws.send_str(json.dumps({"id": req_id, "method": method, "params": params}))
        return await asyncio.wait_for(future, WAIT)

    async def goto(self, url: str) -> None:
        """Navigate; return once the new document has loaded.  Why the marker: right after
        Page.navigate the old document is still there, and 'complete' too, so waiting on
        readyState alone could return (and let the test read) the page being left."""
        await self.evaluate("window.__leftBehind = true")
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"{url}: {result['errorText']}")
        if result.get("loaderId"):  # a new document; none for a change of the #fragment
            await self.wait_for("!window.__leftBehind && document.readyState === 'complete'")
        else:
            await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll until ``expression`` is truthy; its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError as e:  # the document is being replaced: ask the next one
                if not any(text in str(e) for text in NAVIGATING):
                    raise
                value = None
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"page never satisfied: {expression}")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> None:
        reply = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(reply["data"]))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # helpers left behind
        await wait_until_async(self._remove_profile, timeout=60,
                               message="the chromium profile could not be removed")

    def _remove_profile(self) -> bool:
        """One try at removing the profile (a dying helper may still be writing into it)."""
        try:
            self._profile.cleanup()
        except OSError:
            return False
        return True


def _drain(stream: Any) -> None:
    with contextlib.suppress(Exception):
        while stream.readline():
            pass
