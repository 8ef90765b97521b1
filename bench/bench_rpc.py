"""(e) Internal RPC: calls/s and latency through RpcClient -> RpcServer with a trivial service.

The server runs in a forked child process (its own event loop, uvloop), the client in this
one; both on TCP over loopback, one pipelined connection.  Two loads: 1 caller (each call
waits for its reply: round-trip latency) and 64 concurrent callers sharing the connection.

    .venv/bin/python -m bench.bench_rpc [seconds per load]   (default 3)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

from bench.common import percentile, report
from exchange_server.common import jsonfmt
from exchange_server.process.runner import run_loop
from exchange_server.rpc.client import RpcClient
from exchange_server.rpc.server import RpcServer

PARAMS = [1, "BTC", "ETH"]


class TrivialService:
    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        return jsonfmt.reply_body({"BTC": {"available": "1.5", "freeze": "0"}}, req_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, ready: Any) -> None:
    async def main() -> int:
        server = RpcServer(TrivialService(), {101: "balance.query"}, 10240, heartbeat_check=False)
        await server.start([f"tcp@127.0.0.1:{port}"])
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready.set()
        await stop.wait()
        await server.stop()
        return 0

    os._exit(run_loop(main()))


async def load(client: RpcClient, callers: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        req_id = 0
        while True:
            start = time.perf_counter()
            if start >= deadline:
                return
            req_id += 1
            await client.call("balance.query", PARAMS, req_id)
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "calls": len(latencies),
        "calls/s": len(latencies) / elapsed,
        "latency p50 (ms)": percentile(latencies, 50) * 1000,
        "latency p99 (ms)": percentile(latencies, 99) * 1000,
    }


async def run(seconds: float, port: int) -> None:
    client = RpcClient("bench", [f"tcp@127.0.0.1:{port}"], 10240, timeout=10.0)
    await client.start()
    if not await client.wait_connected(5):
        raise SystemExit("bench_rpc: cannot connect to the server process")
    await load(client, 8, 0.5)  # warm-up
    for callers in (1, 64):
        figures = await load(client, callers, seconds)
        report(f"rpc: TrivialService over TCP, {callers} concurrent caller(s), one connection",
               figures)
    await client.close()


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    port = free_port()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    server = ctx.Process(target=serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(10):
            raise SystemExit("bench_rpc: server process did not start")
        run_loop(_as_int(run(seconds, port)))
    finally:
        if server.pid is not None and server.is_alive():
            os.kill(server.pid, signal.SIGTERM)
        server.join(5)


async def _as_int(coro: Any) -> int:
    await coro
    return 0


if __name__ == "__main__":
    main()
