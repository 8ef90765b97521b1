"""Instructions per order of the main process's work around the engine on the HTTP path,
counted by valgrind, on the e2e mix.

Why: ``bench_e2e``'s figure is the main process's CPU per order placed over HTTP JSON-RPC, and
``engine_instructions`` / ``bus_instructions`` count only the engine and what follows a commit.
The rest (HTTP parsing and dispatch, reading the params, the reply text and its ``write``,
the group commit's glue: the writer thread's hand-over, waiters, the 504 timer) had no
deterministic figure; wall-clock runs of it swing with the shared machine's load.

Each run is one process under cachegrind, on uvloop as ``exchange-server run``, placing
``follower_instructions``'s e2e orders (``wrk_orders.lua``'s bodies) in one of two modes:

* ``engine``: each order's params go straight to ``MatchEngineMethods.order_put_limit`` (the
  engine core and its parameter checks, nothing else);
* ``http``: each order is a request as wrk writes it, given to an ``HttpProtocol`` of a real
  ``AccessHttp`` (fake transports: ``write`` keeps the reply) in front of a real
  ``MatchEngineService`` with its SQLite operation log (fsync on) and the embedded bus
  (``BusPublisher`` -> ``InProcessBus`` -> marketprice and accessws's ``UserFeeds``).  ``BATCH``
  connections each send one request per round (a closed loop like wrk's: a connection's next
  request after its reply), so each round is one group commit of ``BATCH`` orders;
  marketprice flushes every ``RATE`` orders.

The figure is ``((http N) - (http 0)) - ((engine N) - (engine 0))`` divided by N: what the main
process spends per order placed over HTTP beyond the engine core (the writer thread included:
cachegrind counts every thread).  The child checks every reply is a 200 with ``"error": null``
or an engine refusal, and prints how many of each.

Run: ``.venv/bin/python -m bench.http_instructions [N] [TREE...]`` (default 5,000 orders, this
checkout; a tree is a checkout, e.g. ``/work/main``).
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
#: Requests in flight, one per connection, answered by one group commit (bench_e2e at 64
#: connections commits about half of them at a time).
BATCH = 32
#: wrk_orders.lua's request body, and the head wrk.format puts before it.
BODY = ('{"method":"order.put_limit","params":[%d,"BTCBCH",%d,"0.01","%s","0.002","0.001",'
        '"wrk"],"id":%d}')
#: an order placed; an order the engine refused (balance)
OK = b'"error": null'
REFUSED = b'"error": {"code": 10'
HEAD = "POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n" \
       "Content-Length: %d\r\n\r\n"


def wrk_request(params: list[Any], req_id: int) -> bytes:
    """The bytes wrk sends for one order (``wrk_orders.lua``)."""
    body = BODY % (params[0], params[2], params[4], req_id)
    return (HEAD % len(body) + body).encode()


class FakeTransport(asyncio.Transport):
    """A connection's socket: keeps what is written, tells the harness a reply came."""

    def __init__(self, replies: list[bytes], answered: Any) -> None:
        super().__init__()
        self.replies = replies
        self.answered = answered

    def write(self, data: Any) -> None:
        self.replies.append(bytes(data))
        self.answered()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


async def child(mode: str, n: int, total: int) -> None:
    """The measured loop (imports whatever tree is first on the path)."""
    from bench.common import bench_config
    from bench.follower_instructions import e2e_orders
    from exchange_server.common import gctune
    from exchange_server.matchengine.configured import Engine
    from exchange_server.matchengine.methods import MatchEngineMethods

    orders = e2e_orders(total)[:n]
    if mode == "engine":
        gctune.tune()
        engine = Engine.from_config(bench_config())
        methods = MatchEngineMethods(engine)
        now = 1_800_000_000.0
        for u in range(1, 101):
            for i, (asset, amount) in enumerate((("BTC", "100000"), ("BCH", "100000000"))):
                methods.balance_update(now, [u, asset, "deposit", 7_000_000 + u * 2 + i, amount,
                                             {}])
        engine.take_events()
        put = methods.order_put_limit
        take = engine.take_events
        placed = 0
        for params in orders:
            now += 1.0 / RATE
            try:
                put(now, params)
                placed += 1
            except Exception:  # noqa: BLE001 - a refusal (balance), as the service answers
                pass
            take()
        print(f"mode engine orders {placed}")
        return
    await _http(orders)


async def _http(orders: list[list[Any]]) -> None:
    from bench.common import bench_config
    from exchange_server.accesshttp.server import AccessHttp, HttpProtocol
    from exchange_server.accessws.user import UserFeeds
    from exchange_server.bus.base import BALANCES, ORDERS, STOPS
    from exchange_server.bus.memory import InProcessBus
    from exchange_server.bus.publisher import BusPublisher
    from exchange_server.common import gctune
    from exchange_server.common.backend import LocalBackend
    from exchange_server.marketprice.service import MarketPriceService
    from exchange_server.marketprice.store_sqlite import SqliteStore
    from exchange_server.matchengine.service import MatchEngineService
    from exchange_server.matchengine.store_sqlite import SqliteEngineStore

    scratch = Path(tempfile.mkdtemp(prefix="http-instr-"))
    clock = [1_800_000_000.0]

    def tick() -> float:
        """The service's clock: a new reading (a new float) per write, ``1 / RATE`` apart."""
        clock[0] += 1.0 / RATE
        return clock[0]

    store = SqliteEngineStore(scratch)
    store.open()
    gctune.tune()
    service = MatchEngineService(bench_config(), store, clock=tick)
    bus = InProcessBus()
    publisher = BusPublisher(bus, scratch / "bus.mark", mark_interval=1e9)
    service.add_sink(publisher)
    marketprice = MarketPriceService(
        bus, SqliteStore(scratch), markets=lambda: list(service.engine.markets),
        flush_interval=1e9, cleanup_interval=1e9, market_refresh_interval=1e9,
        clock=lambda: 1_800_000_000.0)
    service.restore()
    await publisher.start()
    # not ``service.start()``: its once-a-second tick would fork a slice child at times that
    # depend on valgrind's pace (and cachegrind would count the child)
    service._loop = asyncio.get_running_loop()
    await marketprice.start()
    feeds = UserFeeds(None, (ORDERS, BALANCES, STOPS))  # type: ignore[arg-type]
    feeds.start(bus)
    # a 504 timeout no valgrind round can reach (its timer stays armed, as under load)
    app = AccessHttp({"matchengine": LocalBackend(service)}, timeout=1e6)
    loop = asyncio.get_running_loop()
    waiting = [0]
    round_done: list[asyncio.Future[None]] = [loop.create_future()]

    def answered() -> None:
        waiting[0] -= 1
        if not waiting[0]:
            round_done[0].set_result(None)

    replies: list[bytes] = []
    connections = []
    for _ in range(BATCH):
        protocol = HttpProtocol(app)
        protocol.connection_made(FakeTransport(replies, answered))
        connections.append(protocol)

    async def send(requests: list[bytes]) -> None:
        waiting[0] = len(requests)
        round_done[0] = loop.create_future()
        for protocol, request in zip(connections, requests, strict=False):
            protocol.data_received(request)
        await round_done[0]

    funding = []
    for u in range(1, 101):
        for i, (asset, amount) in enumerate((("BTC", "100000"), ("BCH", "100000000"))):
            body = (f'{{"method":"balance.update","params":[{u},"{asset}","deposit",'
                    f'{7_000_000 + u * 2 + i},"{amount}",{{}}],"id":1}}')
            funding.append((HEAD % len(body) + body).encode())
    for start in range(0, len(funding), BATCH):
        await send(funding[start:start + BATCH])
    await marketprice.flush()
    replies.clear()
    placed = 0
    for start in range(0, len(orders), BATCH):
        chunk = orders[start:start + BATCH]
        await send([wrk_request(params, start + k) for k, params in enumerate(chunk)])
        placed += len(chunk)
        if placed % RATE < BATCH:
            await marketprice.flush()
    await marketprice.flush()
    ok = sum(OK in r for r in replies)
    refused = sum(REFUSED in r for r in replies)
    if ok + refused != len(orders) or not all(r.startswith(b"HTTP/1.1 200 OK") for r in replies):
        odd = [r for r in replies if OK not in r and REFUSED not in r][:2]
        raise SystemExit(f"unexpected replies: {ok} ok, {refused} refused of {len(orders)}: {odd}")
    await marketprice.stop()
    await feeds.stop()
    await service.stop(final_slice=False)
    await publisher.stop(5.0)
    store.close()
    print(f"mode http orders {ok} refused {refused} commits {service.commit_count}")


def run_child(mode: str, n: int, total: int) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency of exchange-server
        asyncio.run(child(mode, n, total))
    else:
        uvloop.run(child(mode, n, total))


def main(n: int, trees: list[Path]) -> dict[str, float]:
    figures = cachegrind.per_tree(n, trees, HERE, "http")
    report("main process on the HTTP path beyond the engine core (HTTP, reply, commit, bus), "
           "instructions per order (cachegrind)", figures)
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        run_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
        main(count, [Path(t).resolve() for t in sys.argv[2:]] or [REPO])
