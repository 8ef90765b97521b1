"""accessws under load: 5,000 connections on one instance subscribed to depth and deals of one
market, a few dead clients among them.

The clients run in a child process (``bench.bench_ws`` swarm mode: raw sockets, one event loop)
so the server's measurements are its own.  The dead clients stop reading after subscribing and
ask for big answers, with a tiny receive window: their buffers on the server pass
``send_buffer_limit`` and they must be dropped, while every live client keeps getting every
deal.  Memory per idle connection is the server's RSS growth while the swarm connects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench.bench_ws import SwarmProcess, raise_fd_limit
from exchange_server.accessws.config import WsSvrConfig
from tests.support.accessws_support import MARKET, Stack, fast_config

N = 5000
DEAD = 3


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    hard = raise_fd_limit()
    if hard < N + 500:
        pytest.fail(f"the hard open-files limit ({hard}) is too low for {N} connections")
    # svr.write_mem bounds the kernel's send buffer (else it grows to 4 MB on loopback and a
    # dead client takes long to fill it)
    svr = replace(WsSvrConfig(), write_mem=64 * 1024)
    config = fast_config(deals_interval=0.1, depth_interval=0.1, send_buffer_limit=256 * 1024,
                         svr=svr)
    st = await Stack(tmp_path, config=config, readhistory=False).start()
    yield st
    await st.stop()


def _all_received(report: dict[str, Any], live: int) -> bool:
    deals = report["deals"]
    return len(deals) == 3 and all(f["received"] == live for f in deals.values())


async def test_5000_subscribers_and_dead_clients(stack: Stack) -> None:
    ws = stack.ws
    assert ws is not None
    maker, taker = 1, 2
    await stack.deposit(maker, "BTC", "100000")
    await stack.deposit(maker, "BCH", "100000000")
    await stack.deposit(taker, "BCH", "100000000")
    for i in range(100):  # 100 levels a side: a depth.query [market, 100, "0"] is ~6 KB
        await stack.limit(maker, 1, "10", str(1000 + i))
        await stack.limit(maker, 2, "10", str(900 - i))

    rss_before = rss_kib()
    swarm = SwarmProcess(ws.port, N, dead=DEAD, flood=300)
    try:
        start = time.monotonic()
        ready = await swarm.start(timeout=90)
        connect_seconds = time.monotonic() - start
        assert ready["ready"] == N and ready["failed"] == 0, ready
        # the dead clients are dropped; everyone else stays
        deadline = time.monotonic() + 30
        while ws.stats()["dropped"] < DEAD:
            assert time.monotonic() < deadline, ws.stats()
            await asyncio.sleep(0.1)
        stats = ws.stats()
        assert stats["connections"] == N - DEAD
        assert stats["subscribers"]["depth"] == N - DEAD
        assert stats["subscribers"]["deals"] == N - DEAD
        rss_per_conn = (rss_kib() - rss_before) / (N - DEAD)

        # three deals: every live subscriber gets each of them, promptly
        for _ in range(3):
            await stack.me("order.put_market", taker, MARKET, 2, "1", "0.001", "load")
            await asyncio.sleep(0.3)  # spaces the deals (depth diffs between them): no assert
        # until every live subscriber got all three (or the deadline: the asserts below say who
        # missed what)
        report = await swarm.report()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _all_received(report, N - DEAD):
            await asyncio.sleep(0.1)
            report = await swarm.report()
    finally:
        await swarm.stop()

    assert report["live_open"] == N - DEAD
    assert len(report["deals"]) == 3, report["deals"]
    for deal_id, figures in report["deals"].items():
        assert figures["received"] == N - DEAD, (deal_id, figures)
    latency = report["latency"]
    # latency is printed, not asserted: tests never time things (bench/ measures it)
    assert report["depth_updates_min"] >= 2  # the first snapshot and at least one diff
    assert rss_per_conn < 100, rss_per_conn
    print(f"\n{N} connections: connected+subscribed in {connect_seconds:.1f} s, "
          f"{rss_per_conn:.1f} KiB RSS per connection on the server, deal->client latency "
          f"p50 {latency['p50'] * 1000:.0f} ms p99 {latency['p99'] * 1000:.0f} ms, "
          f"{DEAD} dead clients dropped")
