"""(e) accessws: push fan-out latency from a deal to N subscribers, connections per instance.

Run: ``.venv/bin/python -m bench.bench_ws [--connections 5000] [--deals 20] [--interval 0.5]``.

This process runs the services (matchengine on SQLite with its durable log, the in-process bus,
marketprice, accessws on a free port) on its event loop; a second process (``swarm`` mode,
below) opens N WebSocket connections, each subscribed to ``depth`` (limit 10) and ``deals`` of
one market, and timestamps every frame it receives.  Then deals are made one at a time; a
deal's latency at a subscriber is the time its ``deals.update`` arrived minus the deal's own
``time`` (same host clock), so it covers the whole path: durable commit, bus, marketprice,
accessws' poll (``deals_interval``: half of it on average), fan-out and the client socket.

Also printed: the fan-out itself (accessws' time to write one update to every subscriber), the
resident memory per idle connection on the server (RSS growth while the swarm connects, over
N), and how long connecting took.

Swarm mode (``python -m bench.bench_ws swarm --port P ...``) is used by the load test too: it
prints one JSON line when every connection is subscribed, then answers ``report`` lines on
stdin with a JSON report; ``dead`` connections stop reading after subscribing and flood
``depth.query`` requests, so their server-side buffers fill up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

MARKET = "BTCBCH"
_HANDSHAKE = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def client_frame(payload: bytes) -> bytes:
    """A masked text frame (all-zero mask key: the payload goes as is)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def request_frame(method: str, params: list[Any], req_id: int) -> bytes:
    return client_frame(orjson.dumps({"method": method, "params": params, "id": req_id}))


# -- swarm (client process) -----------------------------------------------------------------------


class SwarmConn(asyncio.Protocol):
    __slots__ = ("swarm", "dead", "transport", "buf", "open", "acks", "depth_updates",
                 "deal_updates", "closed")

    def __init__(self, swarm: Swarm, dead: bool) -> None:
        self.swarm = swarm
        self.dead = dead
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        self.acks = 0
        self.depth_updates = 0
        self.deal_updates = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.write(_HANDSHAKE.format(port=self.swarm.port).encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.swarm.lost += 1
        if self.dead:
            self.swarm.dead_closed += 1

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf
        if self.open and not buf and len(data) >= 2 and data[1] < 126 and data[0] == 0x81 \
                and len(data) == data[1] + 2:  # the common case: exactly one small text frame
            self.swarm.on_message(self, data[2:], now)
            return
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.swarm.failed += 1
                assert self.transport is not None
                self.transport.close()
                return
            del buf[:end + 4]
            self.open = True
            assert self.transport is not None
            self.transport.write(request_frame("depth.subscribe", [MARKET, 10, "0"], 1)
                                 + request_frame("deals.subscribe", [MARKET], 2))
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            if len(buf) < pos + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[pos:pos + n])
            del buf[:pos + n]
            if opcode == 1:
                self.swarm.on_message(self, payload, now)
            elif opcode == 8:
                assert self.transport is not None
                self.transport.close()
                return


class Swarm:
    def __init__(self, port: int, connections: int, dead: int, flood: int) -> None:
        self.port = port
        self.n = connections
        self.n_dead = dead
        self.flood = flood
        self.conns: list[SwarmConn] = []
        self.ready = 0
        self.lost = 0
        self.failed = 0
        self.dead_closed = 0
        #: deal id -> arrival latencies (s) of its deals.update at every live subscriber
        self.latency: dict[int, list[float]] = {}
        self._parsed: dict[bytes, list[tuple[int, float]]] = {}
        self.all_ready = asyncio.Event()

    def on_message(self, conn: SwarmConn, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"method": "deals.update"'):
            conn.deal_updates += 1
            deals = self._parsed.get(payload)
            if deals is None:
                params = orjson.loads(payload)["params"]
                deals = self._parsed[payload] = [(d["id"], d["time"]) for d in params[1]]
                if len(self._parsed) > 1000:
                    self._parsed.clear()
            if not conn.dead:
                for deal_id, deal_time in deals:
                    self.latency.setdefault(deal_id, []).append(now - deal_time)
        elif payload.startswith(b'{"method": "depth.update"'):
            conn.depth_updates += 1
        elif b'"result": {"status": "success"}' in payload:
            conn.acks += 1
            if conn.acks == 2:
                self.ready += 1
                if conn.dead:
                    self._go_dead(conn)
                if self.ready == self.n:
                    self.all_ready.set()

    def _go_dead(self, conn: SwarmConn) -> None:
        """Stop reading, and ask for big answers so the server's buffer for us fills up."""
        transport = conn.transport
        assert transport is not None
        transport.pause_reading()
        frames = b"".join(request_frame("depth.query", [MARKET, 100, "0"], 100 + i)
                          for i in range(self.flood))
        transport.write(frames)

    async def connect_all(self, parallel: int = 256) -> float:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        sem = asyncio.Semaphore(parallel)

        async def one(i: int) -> None:
            async with sem:
                dead = i < self.n_dead
                conn = SwarmConn(self, dead)
                self.conns.append(conn)
                for attempt in range(20):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    try:
                        if dead:  # a small receive window: the server's buffer fills sooner
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                        sock.setblocking(False)
                        await loop.sock_connect(sock, ("127.0.0.1", self.port))
                        await loop.create_connection(lambda: conn, sock=sock)
                        return
                    except OSError:
                        sock.close()
                        await asyncio.sleep(0.05 * (attempt + 1))
                self.failed += 1

        await asyncio.gather(*(one(i) for i in range(self.n)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_ready.wait(), 60)
        return time.monotonic() - start

    def report(self) -> dict[str, Any]:
        live = [c for c in self.conns if not c.dead]
        every: list[float] = []
        per_deal = {}
        for deal_id, values in sorted(self.latency.items()):
            values.sort()
            every += values
            per_deal[deal_id] = {"received": len(values), "p50": pct(values, 50),
                                 "p99": pct(values, 99), "max": values[-1]}
        every.sort()
        return {
            "connections": self.n, "ready": self.ready, "failed": self.failed,
            "lost": self.lost, "dead": self.n_dead, "dead_closed": self.dead_closed,
            "live_open": sum(1 for c in live if not c.closed),
            "deals": per_deal,
            "latency": {"samples": len(every), "p50": pct(every, 50), "p99": pct(every, 99),
                        "max": every[-1] if every else 0.0},
            "depth_updates_min": min((c.depth_updates for c in live), default=0),
            "deal_updates_min": min((c.deal_updates for c in live), default=0),
        }


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def swarm_main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    swarm = Swarm(args.port, args.connections, args.dead, args.flood)
    elapsed = await swarm.connect_all()
    print(json.dumps({"event": "ready", "ready": swarm.ready, "failed": swarm.failed,
                      "seconds": elapsed}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = line.decode().strip()
        if command == "report":
            print(json.dumps({"event": "report", **swarm.report()}), flush=True)
        elif command == "quit":
            break
    for conn in swarm.conns:
        if conn.transport is not None:
            conn.transport.abort()


class SwarmProcess:
    """The swarm in a child process (so its CPU and memory are not the server's)."""

    def __init__(self, port: int, connections: int, dead: int = 0, flood: int = 200) -> None:
        self.args = [sys.executable, "-m", "bench.bench_ws", "swarm", "--port", str(port),
                     "--connections", str(connections), "--dead", str(dead),
                     "--flood", str(flood)]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 120.0) -> dict[str, Any]:
        root = Path(__file__).resolve().parents[1]
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(root)))
        return await self._line(timeout)

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"swarm exited with {await self.proc.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def report(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"report\n")
        await self.proc.stdin.drain()
        return await self._line(timeout)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# -- benchmark (server process) -------------------------------------------------------------------


async def bench_main(args: argparse.Namespace) -> None:
    from bench.common import report, rss_mb
    from exchange_server.accessws import market as market_mod
    from tests.support.accessws_support import Stack, fast_config

    raise_fd_limit()
    interval = args.interval
    config = fast_config(deals_interval=interval, depth_interval=interval,
                         price_interval=interval, state_interval=interval,
                         today_interval=interval, kline_interval=interval)
    fanout: list[tuple[int, float]] = []
    original = market_mod.PollFeed.broadcast

    def timed_broadcast(self: Any, topic: Any, params: Any) -> None:
        start = time.perf_counter()
        original(self, topic, params)
        if self.name == "deals":
            fanout.append((len(topic.sessions), time.perf_counter() - start))

    market_mod.PollFeed.broadcast = timed_broadcast  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        stack = await Stack(Path(tmp), config=config, readhistory=False).start()
        assert stack.ws is not None
        swarm = SwarmProcess(stack.ws.port, args.connections)
        try:
            maker, taker = 1, 2
            await stack.deposit(maker, "BTC", "1000000")
            await stack.deposit(taker, "BCH", "100000000")
            for i in range(50):  # a book for the depth subscriptions
                await stack.limit(maker, 1, "10", str(100 + i))
            await asyncio.sleep(0.5)
            rss_before = rss_mb()
            ready = await swarm.start()
            await asyncio.sleep(1.0)
            rss_after = rss_mb()
            held = stack.ws.stats()["connections"]
            for _ in range(args.deals):
                await stack.me("order.put_market", taker, MARKET, 2, "1", "0.001", "bench")
                await asyncio.sleep(args.spacing)
            await asyncio.sleep(interval + 1.0)
            result = await swarm.report()
        finally:
            await swarm.stop()
            await stack.stop()
            market_mod.PollFeed.broadcast = original  # type: ignore[method-assign]
    lat = result["latency"]
    big = [seconds for n, seconds in fanout if n >= args.connections * 0.9]
    big.sort()
    figures = {
        "connections requested": args.connections,
        "connections held": held,
        "connect + subscribe, all (s)": ready["seconds"],
        "server RSS per idle conn (KiB)": (rss_after - rss_before) * 1024 / max(1, held),
        "deals pushed": len(result["deals"]),
        "deals_interval (s)": interval,
        "deal -> client p50 (ms)": lat["p50"] * 1000,
        "deal -> client p99 (ms)": lat["p99"] * 1000,
        "deal -> client max (ms)": lat["max"] * 1000,
        "deliveries (deal x subscriber)": lat["samples"],
        "fan-out to all, p50 (ms)": pct(big, 50) * 1000,
        "fan-out to all, max (ms)": (big[-1] if big else 0.0) * 1000,
        "fan-out per subscriber (us)": (pct(big, 50) / max(1, held)) * 1e6,
        "connections lost": result["lost"],
    }
    if args.json:
        print(json.dumps(figures))
    else:
        report("accessws fan-out", figures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_ws", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode")
    swarm = sub.add_parser("swarm", help="client side (a child process)")
    swarm.add_argument("--port", type=int, required=True)
    swarm.add_argument("--connections", type=int, default=5000)
    swarm.add_argument("--dead", type=int, default=0)
    swarm.add_argument("--flood", type=int, default=200)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--deals", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=0.3, help="seconds between deals")
    parser.add_argument("--interval", type=float, default=0.5,
                        help="accessws deals/depth polling interval (the original: 0.5)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "swarm":
        try:
            import uvloop

            uvloop.run(swarm_main(args))
        except ImportError:
            asyncio.run(swarm_main(args))
    else:
        try:
            import uvloop

            uvloop.run(bench_main(args))
        except ImportError:
            asyncio.run(bench_main(args))


if __name__ == "__main__":
    main()
