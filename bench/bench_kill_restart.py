"""Restart after SIGKILL under a sustained order load, with N open orders on the book.

Run: ``.venv/bin/python -m bench.bench_kill_restart [open_orders] [rounds]`` (default 100,000
open orders, 3 kills of each kind).  Why: issue 15's restart goal is "under 3 s after SIGKILL
at any moment of sustained load, whatever the uptime, with up to 100,000 open orders".
bench_slice times a restore from files written by a graceful service; this one kills a real
``exchange-server run`` (slices by operation count, ``slice_oper_interval`` 20,000, the
default) in the middle of a concurrent HTTP order load, at two kinds of moment:

* ``between``: no slice child alive (a random moment after the last slice was published);
* ``during``: while a slice child (a forked copy of the engine, same command line) writes a
  slice: the engine and its follower die; the child is not killed by the benchmark, as when
  the engine alone is killed (OOM killer, crash): since branch restart5 the kernel kills it
  with its engine, before that it lived on and finished by itself.

Each kill is SIGKILL of the main process and its other children (the history follower, the
resource tracker), never of the slice child; the kind is whether a slice child was alive
when the engine was killed.  The restart runs on the same data directory and
the same ports (a slice child still holding the dead engine's ports or data-dir lock would
make it fail), and is timed from the command to the reply of the first order accepted.  Then,
with the load stopped, every order whose ``put_limit`` reply arrived before any kill so far is
looked up (``order.pending_detail``, else ``order.finished_detail`` once the history has caught
up) and the balances of every user are summed per asset: with fees at 0, each sum must equal
the deposits exactly.  The next round loads the restarted server, so the uptime and the log
grow from round to round.

Figures: per kind, the restart seconds (worst and mean), the restart time per open order on
the book after the restart (process start and log tail included), the operations replayed
and the open orders; the load's accepted orders/s.  A lost order or a conservation error makes
the run exit with status 1 after its report.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import report
from bench.cpu import children, cpu_seconds
from exchange_server.common.config import default_matchengine_data
from tests.support.server import ServerProcess
from tests.support.waiting import wait_until

USERS = 10_000
#: Every user's deposits; fees are 0, so each asset's balances must sum to USERS times this.
DEPOSITS = {"BTC": Decimal("1000000"), "BCH": Decimal("100000000")}
MARKET = "BTCBCH"
#: ``slice_oper_interval`` of the runs: None leaves it to the checkout's default (the
#: configuration the restart goal is about: 20,000 until 2026-12-03, 10,000 since).
SLICE_EVERY: int | None = None
#: Requests per batch (accesshttp takes at most 1,000 and 100 KiB a request).
BATCH = 500
LOAD_CONNECTIONS = 8
KINDS = ("between", "during")
#: The probe order after a restart: a bid in the gap between the load (98-102) and the
#: filled bids (at most 90), so it never trades.
PROBE = [1, MARKET, 2, "0.001", "95", "0", "0", "probe"]

#: an order the client saw accepted: order id -> (side, amount, price) as replied
Acked = dict[int, tuple[int, str, str]]


# -- pure helpers (tests/unit/test_kill_restart_helpers.py) ------------------------------------

def fill_orders(n: int, users: int = USERS, seed: int = 3) -> list[list[Any]]:
    """``n`` put_limit params that never cross each other nor the load: asks at 110-130,
    bids at 70-90 (2,000 price levels a side, as bench_slice), fees 0."""
    rng = random.Random(seed)
    orders = []
    for i in range(n):
        side = 1 + (i & 1)
        level = rng.randint(1, 2000) / 100
        price = 110 + level if side == 1 else 90 - level
        amount = rng.randint(1, 10000) / 1000
        orders.append([rng.randint(1, users), MARKET, side, f"{amount:.3f}", f"{price:.2f}",
                       "0", "0", "fill"])
    return orders


def load_order(rng: random.Random, users: int = USERS) -> list[Any]:
    """One order of the sustained load: around 100 (98-102), both sides, about half crossing;
    fees 0."""
    side = rng.choice((1, 2))
    price = f"{rng.randint(980, 1020) / 10:.1f}"
    amount = f"{rng.randint(1, 100) / 100:.2f}"
    return [rng.randint(1, users), MARKET, side, amount, price, "0", "0", "load"]


def is_slice_child(cmdline: bytes | None, main_cmdline: bytes | None) -> bool:
    """A slice writer is a fork of the engine without exec: the same command line.  The
    follower and the resource tracker are spawned interpreters (``-c ...spawn_main``)."""
    return cmdline is not None and cmdline == main_cmdline


RESTORED = re.compile(r"restored: slice (\S+), (\d+) operations replayed")


def restored_line(log: str) -> tuple[str, int] | None:
    """(slice time or "none", operations replayed) from the server log's restore line."""
    found = RESTORED.search(log)
    return (found.group(1), int(found.group(2))) if found else None


STARTED = re.compile(r"started in [^\n]*")


def started_line(log: str) -> str:
    """The server's start-up timing line (``started in T s (A s after exec): step s, ...``,
    process/lifecycle.py); "" from a checkout that does not log it."""
    found = STARTED.search(log)
    return found.group(0) if found else ""


def balance_sums(results: Iterable[dict[str, dict[str, str]]]) -> dict[str, Decimal]:
    """Per asset, available + frozen summed over ``balance.query`` results."""
    sums: dict[str, Decimal] = {}
    for result in results:
        for asset, row in result.items():
            sums[asset] = sums.get(asset, Decimal(0)) + Decimal(row["available"]) + \
                Decimal(row["freeze"])
    return sums


def conservation_errors(sums: dict[str, Decimal], users: int) -> list[str]:
    """What differs from every user's deposits (fees are 0, nothing is withdrawn)."""
    errors = []
    for asset, each in DEPOSITS.items():
        if sums.get(asset, Decimal(0)) != each * users:
            errors.append(f"{asset}: balances sum to {sums.get(asset)}, deposits {each * users}")
    return errors


def order_matches(order: dict[str, Any] | None, expected: tuple[int, str, str]) -> bool:
    """Whether an order looked up is the one whose reply the client got."""
    if not order:
        return False
    side, amount, price = expected
    return (order["side"] == side and Decimal(order["amount"]) == Decimal(amount)
            and Decimal(order["price"]) == Decimal(price))


@dataclass
class Kill:
    """One round: how the engine was killed and how the restart went."""

    kind: str
    restart_seconds: float
    replayed: int
    open_orders: int
    slice_time: str
    acked_before: int
    #: the killed engine's slice child was still running when the first order was accepted
    child_outlived_restart: bool = False
    #: the restarted server's start-up timing line (where its seconds went)
    startup: str = ""
    #: CPU seconds of the restarted main process at its first accepted order (its start, the
    #: restore, the listeners): what the restart costs whatever the machine's load
    cpu_seconds: float = 0.0

    @property
    def us_per_open_order(self) -> float:
        return self.restart_seconds * 1e6 / max(self.open_orders, 1)


def kind_figures(kind: str, kills: list[Kill]) -> dict[str, Any]:
    """The report's figures for one kind of kill (labels within the 34 columns)."""
    mine = [k for k in kills if k.kind == kind]
    figures: dict[str, Any] = {f"{kind}: kills": len(mine)}
    if not mine:
        return figures
    seconds = [k.restart_seconds for k in mine]
    figures[f"{kind}: restart seconds, worst"] = max(seconds)
    figures[f"{kind}: restart seconds, mean"] = sum(seconds) / len(seconds)
    figures[f"{kind}: restart us per open order"] = max(k.us_per_open_order for k in mine)
    figures[f"{kind}: restart CPU seconds, mean"] = sum(k.cpu_seconds for k in mine) / len(mine)
    figures[f"{kind}: operations replayed, max"] = max(k.replayed for k in mine)
    figures[f"{kind}: open orders, min"] = min(k.open_orders for k in mine)
    if kind == "during":
        figures["during: child outlived the restart"] = sum(k.child_outlived_restart
                                                            for k in mine)
    return figures


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# -- the server's processes --------------------------------------------------------------------

def cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def slice_children(main: int) -> list[int]:
    main_cmd = cmdline(main)
    return [c for c in children(main) if is_slice_child(cmdline(c), main_cmd)]


def same_command(main_cmd: bytes) -> list[int]:
    """Every live process with the engine's command line (after the kill: its orphaned slice
    children; the data directory in it makes it this server's)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and cmdline(int(name)) == main_cmd and alive(int(name)):
            found.append(int(name))
    return found


def listen_inodes(table: str) -> set[int]:
    """Socket inodes in LISTEN state (``st`` 0A) in a /proc/net/tcp or tcp6 table."""
    found = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] == "0A":
            found.add(int(fields[9]))
    return found


def holds_inherited(pid: int, lock: Path) -> bool:
    """Whether ``pid`` still has the data directory's lock file or a listening socket open
    (a slice child lets go of both at once after its fork: process/inherited.py)."""
    listening: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            listening |= listen_inodes(Path(name).read_text())
        except OSError:
            continue
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == str(lock) or (target.startswith("socket:[")
                                   and int(target[8:-1]) in listening):
            return True
    return False


def kill_engine(server: ServerProcess) -> tuple[list[int], list[int]]:
    """SIGKILL the main process, then its children other than slice writers (the follower, the
    resource tracker); return the slice children alive at the kill, and every process with
    the engine's command line alive after it (orphaned slice children, also older ones)."""
    assert server.proc is not None
    main = server.proc.pid
    main_cmd = cmdline(main) or b""
    found = children(main)
    others = [c for c in found if not is_slice_child(cmdline(c), main_cmd)]
    writers = [c for c in found if c not in others and alive(c)]
    os.kill(main, signal.SIGKILL)
    for pid in others:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.proc.wait(60)
    return writers, same_command(main_cmd)


# -- JSON-RPC over one keep-alive connection (raw: works with any checkout's server) -----------

class Rpc:
    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        body = json.dumps([{"method": m, "params": p, "id": i} for i, (m, p) in enumerate(calls)])
        self.conn.request("POST", "/", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"batch: HTTP {resp.status}: {data[:200]!r}")
        replies: list[dict[str, Any]] = json.loads(data)
        return sorted(replies, key=lambda r: int(r["id"]))

    def call(self, method: str, *params: Any) -> dict[str, Any]:
        body = json.dumps({"method": method, "params": list(params), "id": 1})
        self.conn.request("POST", "/", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method}: HTTP {resp.status}")
        reply: dict[str, Any] = json.loads(data)
        return reply

    def results(self, calls: list[tuple[str, list[Any]]], errors: bool = True) -> list[Any]:
        """Results of ``calls`` (BATCH at a time); an error raises (None for it if not
        ``errors``: a service still starting answers code 3)."""
        out: list[Any] = []
        for part in chunks(calls, BATCH):
            for reply in self.batch(part):
                if reply["error"] is not None and errors:
                    raise RuntimeError(f"{part[0][0]}: {reply['error']}")
                out.append(reply["result"] if reply["error"] is None else None)
        return out

    def close(self) -> None:
        self.conn.close()


def fund(port: int, users: int) -> None:
    rpc = Rpc(port)
    try:
        calls = [("balance.update", [u, asset, "deposit", u, str(each), {}])
                 for u in range(1, users + 1) for asset, each in DEPOSITS.items()]
        put_all(rpc, calls)
    finally:
        rpc.close()


def put_all(rpc: Rpc, calls: list[tuple[str, list[Any]]], acked: Acked | None = None) -> None:
    """Send every call, again and again for those refused (code 3: the history follower's
    backlog is full while the book fills), recording the accepted orders in ``acked``."""
    todo = calls
    while todo:
        refused = []
        for part in chunks(todo, BATCH):
            for (method, params), reply in zip(part, rpc.batch(part), strict=True):
                if reply["error"] is not None:
                    refused.append((method, params))
                elif acked is not None:
                    acked[reply["result"]["id"]] = (params[2], params[3], params[4])
        if len(refused) == len(todo):
            time.sleep(0.2)  # everything refused: let the backlog drain
        todo = refused


def fill(port: int, n: int, users: int, acked: Acked, connections: int = 4) -> None:
    """Rest ``n`` non-crossing orders, ``connections`` batches in flight."""
    orders = fill_orders(n, users)
    parts = [orders[i::connections] for i in range(connections)]

    def one(part: list[list[Any]]) -> None:
        rpc = Rpc(port)
        try:
            put_all(rpc, [("order.put_limit", p) for p in part], acked)
        finally:
            rpc.close()

    threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- the load ----------------------------------------------------------------------------------

@dataclass
class Load:
    """``connections`` clients putting one order after another until stopped or the server
    dies; accepted orders go to ``acked``."""

    port: int
    users: int
    seed: int
    acked: Acked = field(default_factory=dict)
    connections: int = LOAD_CONNECTIONS
    accepted: int = 0
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self.started = time.monotonic()
        for i in range(self.connections):
            t = threading.Thread(target=self._client, args=(self.seed * 100 + i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while not self._stop.is_set():
                params = load_order(rng, self.users)
                body = json.dumps({"method": "order.put_limit", "params": params, "id": 1})
                try:
                    conn.request("POST", "/", body)
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException):
                    return  # the server died
                reply = json.loads(data) if resp.status == 200 else {"error": resp.status}
                if reply["error"] is None:
                    self.acked[reply["result"]["id"]] = (params[2], params[3], params[4])
                    self.accepted += 1
                else:
                    self.refused += 1
        finally:
            conn.close()

    def stop(self) -> float:
        """Stop (or, after a kill, reap) the clients; the seconds they ran."""
        self._stop.set()
        for t in self._threads:
            t.join(60)
        return time.monotonic() - self.started


def wait_moment(server: ServerProcess, kind: str, load: Load, rng: random.Random,
                min_acks: int, jitter: bool = True, timeout: float = 300.0) -> None:
    """Return at a moment of ``kind``: the load running (``min_acks`` accepted this round),
    then ``between``: a random moment (0-2 s; at once without ``jitter``) into a stretch with
    no slice child; ``during``: a random moment (0-1 s) into a slice child's life."""
    assert server.proc is not None
    main = server.proc.pid
    wait_until(lambda: load.accepted >= min_acks, timeout, 0.01, "a sustained load")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kind == "between":
            wait_until(lambda: not slice_children(main), timeout, 0.01, "no slice child")
            if jitter:
                time.sleep(rng.uniform(0, 2))
            if not slice_children(main):
                return
        else:
            child = wait_until(lambda: slice_children(main), timeout, 0.002, "a slice child")[0]
            if jitter:
                time.sleep(rng.uniform(0, 1))
            if alive(child) and child in slice_children(main):
                return
    raise RuntimeError(f"no {kind} moment within {timeout} s")


def freeze_slice_child(main: int, lock: Path, cpu: float = 0.02) -> int | None:
    """SIGSTOP the engine's slice child once it has let go of what it inherited (the test's
    way to make the child outlive the restart whatever the book's size); None if it is gone.
    A child still holding the lock or a port after ``cpu`` seconds of its own CPU (letting go
    takes about a millisecond) is stopped all the same: the restart then shows the damage."""
    found = slice_children(main)
    if not found:
        return None
    child = found[0]
    while alive(child) and holds_inherited(child, lock) and (cpu_seconds(child) or 0) < cpu:
        time.sleep(0.001)
    try:
        os.kill(child, signal.SIGSTOP)
    except ProcessLookupError:
        return None
    if alive(child):
        return child
    os.kill(child, signal.SIGCONT)
    return None


# -- restart and checks ------------------------------------------------------------------------

def restart(old: ServerProcess,
            config: Path) -> tuple[ServerProcess, float, dict[str, Any], str, float]:
    """Start on the same data and ports; seconds to the first accepted order, that order,
    what the server logged meanwhile and the CPU seconds its main process had used then."""
    offset = old.log_path.stat().st_size if old.log_path.exists() else 0
    new = ServerProcess(old.data_dir, config=config)
    new.port, new.ws_port, new.cli_port, new.metrics_port = (
        old.port, old.ws_port, old.cli_port, old.metrics_port)
    t0 = time.perf_counter()
    new.start(timeout=600)
    result = wait_until(lambda: probe(new), 600, 0.01, "an order accepted after the restart")
    elapsed = time.perf_counter() - t0
    assert new.proc is not None
    cpu = cpu_seconds(new.proc.pid) or 0.0
    if offset and started_line(logged_since(old.log_path, 0)):
        # the start-up line comes once every step is done, which may be after the first
        # order (marketprice's state loads behind the listeners since 2026-12-03)
        wait_until(lambda: started_line(logged_since(new.log_path, offset)), 60, 0.05,
                   "the start-up timing line")
    return new, elapsed, result, logged_since(new.log_path, offset), cpu


def logged_since(path: Path, offset: int) -> str:
    """What the server logged from byte ``offset`` on."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def probe(server: ServerProcess) -> dict[str, Any] | None:
    """The probe order's result once accepted; None while refused or unanswered.  A server
    that exited (refused to start: the data directory locked, the port taken) raises."""
    assert server.proc is not None
    if server.proc.poll() is not None:
        raise RuntimeError(f"the restarted server exited with {server.proc.returncode}: "
                           f"{server.log()}")
    rpc = Rpc(server.port, timeout=5)
    try:
        reply = rpc.call("order.put_limit", *PROBE)
    except (OSError, RuntimeError, http.client.HTTPException):
        return None
    finally:
        rpc.close()
    result: dict[str, Any] | None = reply["result"] if reply["error"] is None else None
    return result


def open_orders(port: int) -> int:
    rpc = Rpc(port)
    try:
        return sum(rpc.call("order.book", MARKET, side, 0, 1)["result"]["total"]
                   for side in (1, 2))
    finally:
        rpc.close()


def lost_orders(port: int, acked: Acked, timeout: float = 120.0) -> list[int]:
    """Acknowledged orders that are neither open nor finished (the history follower may still
    be writing finished ones after a restart: looked up again until ``timeout``)."""
    rpc = Rpc(port)
    try:
        ids = sorted(acked)
        pending = rpc.results([("order.pending_detail", [MARKET, i]) for i in ids])
        missing = [i for i, order in zip(ids, pending, strict=True)
                   if not order_matches(order, acked[i])]
        deadline = time.monotonic() + timeout
        while missing:
            finished = rpc.results([("order.finished_detail", [i]) for i in missing], False)
            missing = [i for i, order in zip(missing, finished, strict=True)
                       if not order_matches(order, acked[i])]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return missing
    finally:
        rpc.close()


def money_errors(port: int, users: int) -> list[str]:
    rpc = Rpc(port)
    try:
        results = rpc.results([("balance.query", [u]) for u in range(1, users + 1)])
    finally:
        rpc.close()
    return conservation_errors(balance_sums(results), users)


def write_config(directory: Path, every: int | None = SLICE_EVERY) -> Path:
    """The default matchengine config with slices by operation count only (``every``
    operations, None: the checkout's default; the time slice never falls within a run)."""
    config: dict[str, Any] = default_matchengine_data()
    config["slice_interval"] = 86400
    if every is not None:
        config["slice_oper_interval"] = every
    path = directory / "matchengine.json"
    path.write_text(json.dumps(config))
    return path


# -- the run -----------------------------------------------------------------------------------

@dataclass
class Run:
    """The state of one benchmark run: the server now up, everything acknowledged so far."""

    server: ServerProcess
    config: Path
    users: int
    acked: Acked
    kills: list[Kill] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    load_seconds: float = 0.0
    load_accepted: int = 0
    frozen: list[int] = field(default_factory=list)

    def round(self, kind: str, rng: random.Random, min_acks: int, freeze: bool = False,
              jitter: bool = True) -> Kill:
        """Load, kill at a moment of ``kind``, restart, check; the kind actually hit.  With
        ``freeze`` (``during``), the slice child is stopped before the kill and continued
        after the checks, so it outlives the restart."""
        load = Load(self.server.port, self.users, seed=len(self.kills) + 1).start()
        try:
            while True:
                wait_moment(self.server, kind, load, rng, min_acks, jitter)
                if not freeze or kind != "during":
                    break
                assert self.server.proc is not None
                lock = self.server.data_dir / "exchange-server.lock"
                child = freeze_slice_child(self.server.proc.pid, lock)
                if child is not None:
                    self.frozen.append(child)
                    break
            writers, orphans = kill_engine(self.server)
        finally:
            self.load_seconds += load.stop()
        self.load_accepted += load.accepted
        self.acked.update(load.acked)
        self.server, seconds, probe, logged, cpu = restart(self.server, self.config)
        self.acked[probe["id"]] = (PROBE[2], PROBE[3], PROBE[4])
        outlived = any(alive(pid) for pid in writers)
        restored = restored_line(logged) or ("?", -1)
        kill = Kill("during" if writers else "between", seconds, restored[1],
                    open_orders(self.server.port), restored[0], len(self.acked), outlived,
                    started_line(logged), cpu)
        self.lost += lost_orders(self.server.port, self.acked)
        self.errors += money_errors(self.server.port, self.users)
        self.thaw()
        for pid in orphans:  # the next round starts without them
            wait_until(lambda p=pid: not alive(p), 600, 0.05, f"slice child {pid} to finish")
        self.kills.append(kill)
        return kill

    def thaw(self) -> None:
        """Continue the slice children stopped by ``round``."""
        for pid in self.frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen.clear()


def plan(kills: list[Kill], rounds: int, slices: bool) -> str | None:
    """The kind to aim at next: whichever has fewer kills (only ``between`` when the checkout
    takes no slice by operation count), None once each has ``rounds``."""
    counts = {kind: sum(k.kind == kind for k in kills) for kind in KINDS}
    wanted = [kind for kind in KINDS if counts[kind] < rounds and (slices or kind == "between")]
    return min(wanted, key=lambda kind: counts[kind]) if wanted else None


def print_round(n: int, kill: Kill) -> None:
    print(f"   round {n}: {kill.kind:<7} restart {kill.restart_seconds:6.2f} s "
          f"(CPU {kill.cpu_seconds:.2f} s), "
          f"{kill.open_orders:,} open orders ({kill.us_per_open_order:.1f} us each), "
          f"slice {kill.slice_time}, {kill.replayed:,} operations replayed, "
          f"{kill.acked_before:,} orders acknowledged so far"
          f"{', the slice child outlived the restart' if kill.child_outlived_restart else ''}",
          flush=True)
    if kill.startup:
        print(f"      {kill.startup}", flush=True)


SLICE_STARTED = re.compile(r"slice \d+: child \d+ dumping")


def takes_slices(server: ServerProcess) -> bool:
    """Whether the server has forked a slice writer so far (the fill is several times
    ``slice_oper_interval``; an old checkout without it takes none)."""
    return SLICE_STARTED.search(server.log_path.read_text(errors="replace")) is not None


def main(n: int = 100_000, rounds: int = 3, users: int = USERS, min_acks: int = 2_000,
         every: int | None = SLICE_EVERY) -> dict[str, Any]:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), every)
        server = ServerProcess(Path(tmp) / "data", config=config).start(timeout=120)
        fund(server.port, users)
        acked: Acked = {}
        t0 = time.monotonic()
        fill(server.port, n, users, acked)
        filled = time.monotonic() - t0
        run = Run(server, config, users, acked)
        slices = takes_slices(server)
        if not slices:
            print(f"   no slice taken while {n:,} orders were put: this checkout takes no "
                  "slice by operation count; only 'between' kills", flush=True)
        try:
            while (kind := plan(run.kills, rounds, slices)) is not None:
                if len(run.kills) >= 4 * rounds:
                    break  # the moments keep missing: report what there is
                print_round(len(run.kills) + 1, run.round(kind, rng, min_acks))
        finally:
            run.server.stop()
    figures: dict[str, Any] = {"open orders filled": n, "fill orders/s": n / filled}
    for kind in KINDS:
        figures.update(kind_figures(kind, run.kills))
    figures["load: accepted orders/s"] = run.load_accepted / max(run.load_seconds, 1e-9)
    figures["orders checked after the last kill"] = len(run.acked)
    figures["acknowledged orders lost"] = len(set(run.lost))
    figures["conservation errors"] = len(run.errors)
    report("restart after SIGKILL under load", figures)
    for line in [*(f"lost order {i}" for i in sorted(set(run.lost))[:20]), *run.errors[:20]]:
        print(f"   ! {line}")
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    result = main(*args)
    sys.exit(1 if result["acknowledged orders lost"] or result["conservation errors"] else 0)
