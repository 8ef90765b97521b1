"""Batches of writes: resting orders sent as JSON-RPC batches of 10, 100 and 500 calls.

Why a benchmark of its own: an exchange's back end batches its writes, and a batch's calls
share group commits only if the gateway works through them a chunk at a time (accesshttp's
``batch_chunks``).  Sizing those chunks by wall time once made a batch of writes wait for one
commit per call, 2-4x slower than 105fc31, and no other benchmark sends batches of writes.

Run: ``.venv/bin/python -m bench.bench_batch [orders_per_size] [connections]`` (default 6,000
orders for each batch size, 1 connection).  One ``exchange-server run`` (no slice by operation
count), 10,000 funded users, then for each batch size ``orders_per_size`` non-crossing
``order.put_limit`` calls (bench_kill_restart's fill orders).  Prints accepted orders/s per
batch size and any refused call.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bench_kill_restart import USERS, Rpc, fill_orders, fund, write_config
from bench.common import report
from tests.support.server import ServerProcess

SIZES = (10, 100, 500)


def send(port: int, orders: list[list[Any]], size: int, connections: int) -> tuple[float, int]:
    """Seconds to send ``orders`` in batches of ``size`` over ``connections`` clients, and
    how many calls were refused."""
    refused = [0] * connections

    def client(n: int) -> None:
        rpc = Rpc(port)
        mine = orders[n::connections]
        for i in range(0, len(mine), size):
            replies = rpc.batch([("order.put_limit", p) for p in mine[i:i + size]])
            refused[n] += sum(r["error"] is not None for r in replies)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started, sum(refused)


def main(per_size: int = 6_000, connections: int = 1) -> dict[str, Any]:
    orders = fill_orders(per_size * len(SIZES), USERS)
    figures: dict[str, Any] = {"connections": connections}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", config=write_config(Path(tmp), 0)).start(
            timeout=120)
        try:
            fund(server.port, USERS)
            for k, size in enumerate(SIZES):
                part = orders[k * per_size:(k + 1) * per_size]
                seconds, refused = send(server.port, part, size, connections)
                figures[f"batches of {size}: orders/s"] = (len(part) - refused) / seconds
                figures[f"batches of {size}: refused"] = refused
        finally:
            server.stop()
    report("batches of writes: resting put_limit orders, by batch size", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
