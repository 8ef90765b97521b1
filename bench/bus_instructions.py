"""Instructions per order of the main process's work after the engine (bus, marketprice,
accessws), counted by valgrind, on the e2e mix.

Why: in ``exchange-server run`` the main process's CPU per order bounds ``bench_e2e``; after the
engine, most of it is the in-process bus (the ``deals`` / ``orders`` messages) and marketprice
(k-lines, 24 h state, recent deals per deal).  Wall-clock figures of that slice swing with the
shared machine's load; the instructions executed do not (see ``engine_instructions``).

Each run is one process under cachegrind that funds ``follower_instructions``'s e2e users and
places its e2e orders (put_limit on BTCBCH, prices 95..105, about half crossing) through
``MatchEngineMethods`` with the reply text written as the service writes it, the clock
advancing ``1 / RATE`` s per order:

* ``engine``: the events of each operation are taken and dropped;
* ``bus``: they go to a ``BusPublisher`` on an ``InProcessBus`` read by a real
  ``MarketPriceService`` (SQLite store in a scratch directory, flushed every ``RATE`` orders:
  its 1 s flush interval) and accessws's ``UserFeeds`` (no connection), the event loop running
  the consumers every ``BATCH`` orders (an HTTP read's worth of pipelined requests).

The figure is ``((bus N) - (bus 0)) - ((engine N) - (engine 0))`` divided by N: what the bus and
its consumers cost per order placed (the SQLite worker thread included: cachegrind counts
every thread).

Run: ``.venv/bin/python -m bench.bus_instructions [N] [TREE...]`` (default 20,000 orders, this
checkout; a tree is a checkout, e.g. ``/var/tmp/exchange-bench/<sha>`` or ``/work/main``).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import cachegrind
from bench.common import report

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
#: Orders per second of simulated time (about bench_e2e's rate): one marketprice flush each.
RATE = 2000
#: Orders between two turns of the event loop (the consumers run there).
BATCH = 16


async def child(mode: str, n: int, total: int) -> None:
    """The measured loop (imports whatever tree is first on the path)."""
    from bench.common import bench_config
    from bench.follower_instructions import e2e_orders
    from exchange_server.common import gctune, jsonfmt
    from exchange_server.common.errors import RpcError
    from exchange_server.matchengine import orderjson
    from exchange_server.matchengine.configured import Engine
    from exchange_server.matchengine.methods import MatchEngineMethods

    gctune.tune()
    # the reply's order text as the service writes it (kept for the taker's message or not)
    order_text = getattr(orderjson, "kept_order_json", orderjson.order_json)
    orders = e2e_orders(total)[:n]
    engine = Engine.from_config(bench_config())
    methods = MatchEngineMethods(engine)
    scratch = Path(tempfile.mkdtemp(prefix="bus-instr-"))
    sink = await _sink(mode, engine, scratch)
    now = 1_800_000_000.0
    oper_id = 0
    for u in range(1, 101):
        for i, (asset, amount) in enumerate((("BTC", "100000"), ("BCH", "100000000"))):
            methods.balance_update(now, [u, asset, "deposit", 7_000_000 + u * 2 + i, amount, {}])
            oper_id += 1
            sink.on_events(oper_id, engine.take_events())
    await sink.turn(True)
    put = methods.order_put_limit
    take = engine.take_events
    placed = 0
    for params in orders:
        now += 1.0 / RATE
        try:
            result = put(now, params)
        except RpcError:
            continue
        jsonfmt.reply_text(order_text(result), placed)
        oper_id += 1
        placed += 1
        sink.on_events(oper_id, take())
        if placed % BATCH == 0:
            await sink.turn(placed % RATE == 0)
    await sink.turn(True)
    await sink.close()
    print(f"mode {mode} orders {placed} deals {engine.deal_id} {sink.summary()}")


class _Drop:
    async def turn(self, flush: bool) -> None:
        return None

    def on_events(self, oper_id: int, events: list[Any]) -> None:
        return None

    async def close(self) -> None:
        return None

    def summary(self) -> str:
        return ""


class _Bus(_Drop):
    """The embedded system's bus and its two consumers (embedded.py's wiring)."""

    def __init__(self, publisher: Any, marketprice: Any, feeds: Any) -> None:
        self.publisher = publisher
        self.marketprice = marketprice
        self.feeds = feeds
        self.on_events = publisher.on_events  # type: ignore[method-assign]

    async def turn(self, flush: bool) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        if flush:
            await self.marketprice.flush()
            for _ in range(3):
                await asyncio.sleep(0)

    async def close(self) -> None:
        await self.marketprice.stop()
        await self.feeds.stop()
        await self.publisher.stop(5.0)

    def summary(self) -> str:
        data = self.marketprice.data
        return f"applied {data.applied} flushes {self.marketprice.flushes}"


async def _sink(mode: str, engine: Any, scratch: Path) -> _Drop:
    if mode == "engine":
        return _Drop()
    from exchange_server.accessws.user import UserFeeds
    from exchange_server.bus.base import BALANCES, ORDERS, STOPS
    from exchange_server.bus.memory import InProcessBus
    from exchange_server.bus.publisher import BusPublisher
    from exchange_server.marketprice.service import MarketPriceService
    from exchange_server.marketprice.store_sqlite import SqliteStore

    bus = InProcessBus()
    publisher = BusPublisher(bus, scratch / "bus.mark")
    await publisher.start()
    marketprice = MarketPriceService(
        bus, SqliteStore(scratch), markets=lambda: list(engine.markets), flush_interval=1e9,
        cleanup_interval=1e9, market_refresh_interval=1e9, clock=lambda: 1_800_000_000.0)
    await marketprice.start()
    feeds = UserFeeds(None, (ORDERS, BALANCES, STOPS))  # type: ignore[arg-type]
    feeds.start(bus)
    return _Bus(publisher, marketprice, feeds)


def main(n: int, trees: list[Path]) -> dict[str, float]:
    figures = cachegrind.per_tree(n, trees, HERE, "bus")
    report("main process after the engine (bus, marketprice, accessws), instructions per order "
           "(cachegrind)", figures)
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
        main(count, [Path(t).resolve() for t in sys.argv[2:]] or [REPO])
