"""aiohttp's client side imported after ``exchange-server run``'s listeners (common/aiohttp_lazy.py).

Why: the client side (and the two SSL contexts its connector builds at import) was about a third
of the instructions of the imports before a restart's first order.  Deferring it must change
nothing else: the package ends up as a plain import makes it, any other use completes it first,
and a client side that cannot be imported still fails the start.  Each case runs in a fresh
interpreter (the deferral works only before anything imports aiohttp).
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.server import REPO


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_the_server_side_alone_then_the_whole_package() -> None:
    out = run_python("""
import subprocess, sys
from exchange_server.common import aiohttp_lazy
assert aiohttp_lazy.defer_client()
import exchange_server.embedded
import aiohttp
assert aiohttp_lazy.is_deferred() and "aiohttp.web" in sys.modules
assert "aiohttp.client" not in sys.modules and "aiohttp.connector" not in sys.modules
assert not aiohttp_lazy.defer_client()  # once
aiohttp_lazy.complete()
assert not aiohttp_lazy.is_deferred() and "aiohttp.connector" in sys.modules
import aiohttp.client
assert aiohttp.ClientSession is aiohttp.client.ClientSession
assert aiohttp.__getattr__.__module__ == "aiohttp"  # the package's own
plain = subprocess.run([sys.executable, "-c", "import aiohttp; print(sorted(vars(aiohttp)))"],
                       capture_output=True, text=True, check=True).stdout
# only the server-side submodules imported before (a plain import has none of them)
diff = set(vars(aiohttp)) ^ set(eval(plain))
assert diff and all(name == "web" or name.startswith("web_") for name in diff), diff
aiohttp_lazy.complete()  # nothing left to do
print("ok")
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_any_other_name_completes_the_package_first() -> None:
    out = run_python("""
import sys
from exchange_server.common import aiohttp_lazy
assert aiohttp_lazy.defer_client()
from aiohttp import web
from aiohttp import ClientSession, WSCloseCode
assert not aiohttp_lazy.is_deferred() and "aiohttp.connector" in sys.modules
import aiohttp
try:
    aiohttp.no_such_name
except AttributeError:
    print("ok")
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_nothing_is_deferred_once_aiohttp_is_imported() -> None:
    out = run_python("""
import aiohttp
from exchange_server.common import aiohttp_lazy
assert not aiohttp_lazy.defer_client() and not aiohttp_lazy.is_deferred()
aiohttp_lazy.complete()
print("ok")
""")
    assert out.returncode == 0, out.stderr


def test_run_listens_before_it_imports_the_client_side(tmp_path: object) -> None:
    """The real command's start: when accesshttp listens, aiohttp's connector is not imported
    yet; the start's last step imports it.  (The patches need ``embedded`` imported before
    ``cmd_run`` runs, so this defers first as ``cmd_run`` does; the next test shows that
    ``cmd_run`` does it itself.)"""
    out = run_python(f"""
import os, sys
from exchange_server.common import aiohttp_lazy
assert aiohttp_lazy.defer_client()
from exchange_server import cli, embedded
start_http, steps = embedded.EmbeddedSystem._start_http, embedded.EmbeddedSystem._listener_steps
async def start_http_and_look(self):
    await start_http(self)
    print("listening", "aiohttp.connector" in sys.modules, aiohttp_lazy.is_deferred(), flush=True)
def listener_steps_then_stop(self):
    return [*steps(self), embedded.step("look", lambda: print(
        "started", "aiohttp.connector" in sys.modules, aiohttp_lazy.is_deferred(), flush=True)
        or os.kill(os.getpid(), 15))]
embedded.EmbeddedSystem._start_http = start_http_and_look
embedded.EmbeddedSystem._listener_steps = listener_steps_then_stop
sys.exit(cli.main(["--log-level", "WARNING", "run", "--data-dir", {str(tmp_path)!r},
                   "--http-port", "0", "--ws-port", "0", "--cli-port", "0"]))
""")
    assert out.returncode == 0, out.stderr
    looked = [line for line in out.stdout.splitlines() if line.startswith(("listening", "started"))]
    assert looked == ["listening False True", "started True False"], out.stdout


def test_a_client_side_that_cannot_be_imported_fails_the_start(tmp_path: object) -> None:
    """``exchange-server run`` whose aiohttp client cannot be imported exits with the import's
    traceback at its last start step, as it did when the import came first."""
    out = run_python(f"""
import sys
sys.modules["aiohttp.client"] = None  # as if the client side could not be imported
from exchange_server import cli
sys.exit(cli.main(["--log-level", "WARNING", "run", "--data-dir", {str(tmp_path)!r},
                   "--http-port", "0", "--ws-port", "0", "--cli-port", "0"]))
""")
    assert out.returncode != 0
    assert "ModuleNotFoundError: import of aiohttp.client halted" in out.stderr, out.stderr
    assert "aiohttp_lazy" in out.stderr


def test_threads_asking_while_another_completes_get_the_same_package() -> None:
    """The last start step completes the package in a thread while the loop may ask for a name
    or import a submodule: each waits for the one completion or imports beside it."""
    out = run_python("""
import sys, threading
from exchange_server.common import aiohttp_lazy
assert aiohttp_lazy.defer_client()
from aiohttp import web
got = []
def ask(name):
    import aiohttp
    got.append(getattr(aiohttp, name))
threads = [threading.Thread(target=aiohttp_lazy.complete)] + [
    threading.Thread(target=ask, args=(n,)) for n in ("ClientSession", "client_ws", "TCPConnector")]
for t in threads: t.start()
for t in threads: t.join(60)
import aiohttp, aiohttp.client_ws
assert got and sorted(map(id, got)) == sorted(map(id, (
    aiohttp.ClientSession, aiohttp.client_ws, aiohttp.TCPConnector))), got
print("ok")
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_client_side_that_failed_under_a_request_still_fails_the_start() -> None:
    """A request that asks for a client name before the start's last step (accessws's auth
    client reading ``aiohttp.TCPConnector``) runs the completion itself; if that import fails,
    the request gets the error and the last step fails the start with it all the same."""
    out = run_python("""
import asyncio, sys
from exchange_server.common import aiohttp_lazy
assert aiohttp_lazy.defer_client()
import aiohttp.web
sys.modules["aiohttp.client"] = None  # as if the client side could not be imported
from exchange_server.embedded import _complete_aiohttp
try:
    aiohttp.TCPConnector  # what a request before the last step asks for
except ImportError as e:
    print("request:", type(e).__name__)
try:
    asyncio.run(_complete_aiohttp())
    print("start: succeeded")
except ImportError as e:
    print("start:", type(e).__name__)
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["request: ModuleNotFoundError",
                                       "start: ModuleNotFoundError"], out.stdout
