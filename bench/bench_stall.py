"""Event-loop stalls: how long a cheap request can be held up by expensive ones beside it.

Run: ``.venv/bin/python -m bench.bench_stall [seconds] [attacks]`` (attacks: a comma list of
batches, klines, pipelines, huge_heads; default all).  Starts a real ``exchange-server run``
whose marketprice holds a week of 1-second buckets (one every 30 s, written to its store before
the start), funds users and keeps an order load running (put_limit, about half crossing).  A
probe process sends ``market.last`` on a keep-alive connection one after the other and times
each reply: first beside the order load alone, then while other processes send what used to
hold the loop (accesshttp findings 4-6): batches of 1,000 ``order.book``, ``market.kline``
with interval 1 over 7 days (start varied: no cache hit), a client pipelining 100,000
``order.book`` without reading replies, 100 MB URLs and 100 MB headers.  The worst probe reply
bounds the longest stall of the event loop plus the probe's own scheduling; the server's own
loop-lag probe (common/looplag.py, read from ``/metrics``) gives the stall itself.  Target:
under 20 ms.  On a shared machine both include time the server was not scheduled at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import mixed_orders, percentile, report
from exchange_server.marketprice.state import MIN, SEC, Changes
from exchange_server.marketprice.store_sqlite import SqliteStore
from tests.support.server import ServerProcess, free_port

MARKET = "BTCBCH"
WEEK = 7 * 86400
USERS = 200


def post(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def rpc(method: str, params: list[Any], req_id: int = 1) -> bytes:
    return json.dumps({"method": method, "params": params, "id": req_id}).encode()


class Conn:
    """One keep-alive HTTP connection; replies read by Content-Length, or chunked (a batch's
    reply over the server's held size is streamed as it comes)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, body: bytes) -> bytes:
        self.sock.sendall(post(body))
        head = self._until(b"\r\n\r\n").lower()
        if b"transfer-encoding: chunked" in head:
            return self._chunked()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        return self._exactly(length)

    def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self._until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._until(b"\r\n")  # no trailers: the empty line that ends the body
                return bytes(body)
            body += self._exactly(size)
            self._exactly(2)  # the chunk's line end

    def _until(self, mark: bytes) -> bytes:
        """The bytes before ``mark`` (read as needed), ``mark`` consumed."""
        while mark not in self.buf:
            self.buf += self._recv()
        line, _, self.buf = self.buf.partition(mark)
        return line

    def _exactly(self, n: int) -> bytes:
        rest = bytearray(self.buf)
        while len(rest) < n:
            rest += self._recv()
        self.buf = bytes(rest[n:])
        return bytes(rest[:n])

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        return chunk


def seed_klines(data_dir: Path, now: int) -> int:
    """A week of 1-second buckets (one every 30 s) and their minutes, as a flush would store."""
    buckets = []
    for i, ts in enumerate(range(now - WEEK + 60, now - 60, 30)):
        price = f"{100 + i % 7}"
        text = f'["{price}", "{price}", "{price}", "{price}", "1", "{price}"]'
        buckets.append((MARKET, SEC, ts, text))
        if ts % 60 == 0:
            buckets.append((MARKET, MIN, ts, text))

    async def write() -> None:
        store = SqliteStore(data_dir)
        await store.open()
        await store.write(Changes(offset=-1, buckets=buckets, markets=[MARKET]))
        await store.close()

    asyncio.run(write())
    return len(buckets)


# -- the load processes -----------------------------------------------------------------------------


def _until(stop: Any, work: Callable[[], None]) -> None:
    while not stop.is_set():
        try:
            work()
        except OSError:
            time.sleep(0.01)


def orders(port: int, stop: Any, counter: Any) -> None:
    conn = Conn(port)
    stream = mixed_orders(1_000_000, USERS, seed=7)
    i = 0

    def one() -> None:
        nonlocal i
        conn.call(rpc("order.put_limit", stream[i % len(stream)], i))
        i += 1
        with counter.get_lock():
            counter.value += 1

    _until(stop, one)


def batches(port: int, stop: Any, counter: Any) -> None:
    conn = Conn(port)
    body = json.dumps([{"method": "order.book", "params": [MARKET, 1 + i % 2, 0, 100], "id": i}
                       for i in range(1000)]).encode()

    def one() -> None:
        assert conn.call(body).startswith(b"[")
        with counter.get_lock():
            counter.value += 1

    _until(stop, one)


def klines(port: int, stop: Any, counter: Any) -> None:
    conn = Conn(port)
    i = 0

    def one() -> None:
        nonlocal i
        now = int(time.time())
        reply = conn.call(rpc("market.kline", [MARKET, now - WEEK - i, now, 1]))
        assert b'"error": null' in reply
        i += 1
        with counter.get_lock():
            counter.value += 1

    _until(stop, one)


def pipeline(port: int, stop: Any, counter: Any) -> None:
    """100,000 order.book requests, replies never read; again once the server closes it."""
    data = post(rpc("order.book", [MARKET, 1, 0, 100])) * 100_000

    def one() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(0.5)
            sent = 0
            while not stop.is_set() and sent < len(data):
                try:
                    sent += s.send(data[sent:sent + 65536])
                except TimeoutError:
                    continue
        with counter.get_lock():
            counter.value += 1

    _until(stop, one)


def huge_heads(port: int, stop: Any, counter: Any) -> None:
    """A 100 MB URL, then a 100 MB header, again and again (each refused early)."""
    filler = b"a" * 65536
    firsts = [b"GET /", b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: "]
    i = 0

    def one() -> None:
        nonlocal i
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(5)
            s.sendall(firsts[i % 2])
            with contextlib.suppress(OSError):
                for _ in range(100 * 16):
                    s.sendall(filler)
        i += 1
        with counter.get_lock():
            counter.value += 1

    _until(stop, one)


def probe(port: int, seconds: float, out: Any) -> None:
    conn = Conn(port)
    body = rpc("market.last", [MARKET])
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        conn.call(body)
        times.append(time.perf_counter() - started)
    out.put(times)


def run_probe(port: int, seconds: float) -> list[float]:
    out: Any = mp.Queue()
    proc = mp.Process(target=probe, args=(port, seconds, out))
    proc.start()
    times: list[float] = out.get()
    proc.join()
    return sorted(times)


def worst_lag(metrics_port: int) -> tuple[float, float]:
    """The server's worst event-loop lag since the previous read, and the worst part of a lag
    it spent on the CPU (common/looplag.py), in seconds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60) as resp:
        text = resp.read().decode()
    found = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in ("exchange_event_loop_lag_worst_seconds",
                    "exchange_event_loop_busy_lag_worst_seconds"):
            found[name] = float(line.rsplit(" ", 1)[1])
    return (found["exchange_event_loop_lag_worst_seconds"],
            found["exchange_event_loop_busy_lag_worst_seconds"])


def fund(server: ServerProcess) -> None:
    for user in range(1, USERS + 1):
        server.call("balance.update", user, "BTC", "deposit", user, "1000000", {})
        server.call("balance.update", user, "BCH", "deposit", user, "100000000", {})


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    only = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        seeded = seed_klines(data_dir, int(time.time()))
        metrics_port = free_port()
        server = ServerProcess(data_dir, extra=["--metrics-port", str(metrics_port)])
        server.start(timeout=120)
        try:
            fund(server)
            stop = mp.Event()
            counters = {name: mp.Value("l", 0) for name in
                        ("orders", "batches", "klines", "pipelines", "huge heads")}
            load = [mp.Process(target=orders, args=(server.port, stop, counters["orders"]))]
            for proc in load:
                proc.start()
            worst_lag(metrics_port)
            quiet = run_probe(server.port, seconds / 2)
            quiet_lag = worst_lag(metrics_port)
            attacks = [(batches, "batches"), (klines, "klines"), (pipeline, "pipelines"),
                       (huge_heads, "huge heads")]
            for target, name in attacks:
                if only is not None and name.replace(" ", "_") not in only:
                    continue
                proc = mp.Process(target=target, args=(server.port, stop, counters[name]))
                proc.start()
                load.append(proc)
            before = {name: c.value for name, c in counters.items()}
            loud = run_probe(server.port, seconds)
            loud_lag = worst_lag(metrics_port)
            done = {name: c.value - before[name] for name, c in counters.items()}
            stop.set()
            for proc in load:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
        finally:
            server.stop()
    figures: dict[str, Any] = {"1 s and 1 min buckets seeded": seeded}
    figures["probe, orders only: requests"] = len(quiet)
    figures["  p50 / p99 ms"] = f"{percentile(quiet, 50) * 1000:.2f} / {percentile(quiet, 99) * 1000:.2f}"
    figures["  worst ms"] = quiet[-1] * 1000
    figures["  server loop lag, worst ms "] = quiet_lag[0] * 1000
    figures["  of it on the CPU, worst ms "] = quiet_lag[1] * 1000
    figures["probe, with attacks: requests"] = len(loud)
    figures["  p50 / p99 ms "] = f"{percentile(loud, 50) * 1000:.2f} / {percentile(loud, 99) * 1000:.2f}"
    figures["  worst ms "] = loud[-1] * 1000
    figures["  server loop lag, worst ms"] = loud_lag[0] * 1000
    figures["  of it on the CPU, worst ms (< 20)"] = loud_lag[1] * 1000
    for name, count in done.items():
        figures[f"{name} during the attack"] = count
    report(f"event-loop stall beside expensive requests ({seconds:g} s)", figures)


if __name__ == "__main__":
    main()
