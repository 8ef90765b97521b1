"""After a failover the new active publishes again what the old one had already published.

Why: the bus mark (now in the log database, bus/mark.py) is written every 0.5 s, so the mark
a new active reads may be below what its predecessor had acknowledged; it then republishes
that range (at-least-once).  The consumers must not count or push anything twice: marketprice
skips a deal whose id it has applied, accessws an order/balance message whose operation id
(Kafka header) it has handled.  Everything is real: a matchengine service (SQLite log) behind
its RPC server, Kafka topics, marketprice with Redis, accessws built from its own config with
a WebSocket client subscribed to its user's orders and assets.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from exchange_server.accessws import StandaloneAccessWs, build
from exchange_server.bus import BALANCES, DEALS, ORDERS, BusPublisher, MarkFile
from exchange_server.bus.kafka import KafkaBusReader, KafkaTransport
from exchange_server.bus.mark import Mark
from exchange_server.bus.messages import encode_events
from exchange_server.common.backend import LocalBackend
from exchange_server.common.config import default_matchengine_data, load_matchengine
from exchange_server.common.decimals import fmt_raw
from exchange_server.marketprice.service import MarketPriceService
from exchange_server.marketprice.store_redis import RedisStore
from exchange_server.matchengine.core.model import Event
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.rpc.commands import MATCHENGINE_COMMANDS
from exchange_server.rpc.server import RpcServer
from tests.support.accessws_support import MARKET, AuthService, WsClient
from tests.support.server import free_port
from tests.support.waiting import wait_until_async
from tests.unit.test_accessws_units import SAMPLE

USER = 601
SELLER = 602
TRADES = 5


class Recorder:
    """An event sink keeping every operation's events (what a replay hands the new active)."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, list[Event]]] = []

    def durable_mark(self) -> int:
        return 0

    def start_after(self, oper_id: int) -> None:
        pass

    def on_events(self, oper_id: int, events: list[Event]) -> None:
        self.ops.append((oper_id, list(events)))

    def overloaded(self) -> bool:
        return False


@pytest.fixture
async def auth() -> AsyncIterator[AuthService]:
    service = AuthService()
    service.tokens["tok"] = USER
    await service.start()
    yield service
    await service.stop()


def market_state(mp: MarketPriceService) -> dict[str, Any]:
    m = mp.data.markets[MARKET]
    return {"last": fmt_raw(m.last), "deals": list(m.deals),
            "klines": [{ts: k.values() for ts, k in b.items()} for b in m.klines],
            "market.last": mp.execute("market.last", [MARKET]),
            "market.deals": mp.execute("market.deals", [MARKET, 100, 0])}


async def high_watermark(brokers: str, prefix: str, topic: str) -> int:
    _, high = await asyncio.to_thread(KafkaBusReader(brokers, prefix).watermarks, topic)
    return int(high)


async def settled_assets(ex: Exchange, client: WsClient) -> list[list[Any]]:
    """The asset.update pushes until one shows USER's balance as it is now, and those that
    follow (a query asked again after a change in flight repeats the balance)."""
    balance = await ex.call("balance.query", USER, "BCH")
    pushes: list[list[Any]] = []
    while not pushes or pushes[-1] != [balance]:
        pushes.append(await client.next("asset.update", timeout=10))
    while not await client.quiet("asset.update", 0.5):
        pushes += client.drain("asset.update")
    assert all(p == [balance] for p in pushes[pushes.index([balance]):]), pushes
    return pushes


class Exchange:
    """The matchengine with its publisher, marketprice and accessws; a client of USER."""

    def __init__(self, tmp_path: Path, brokers: str, prefix: str) -> None:
        self.tmp_path, self.brokers, self.prefix = tmp_path, brokers, prefix
        self.store = SqliteEngineStore(tmp_path / "engine")
        self.store.open()
        self.engine = MatchEngineService(
            load_matchengine(default_matchengine_data(), embedded=True), self.store)
        self.recorder = Recorder()
        self.publisher = BusPublisher(KafkaTransport(brokers, prefix), tmp_path / "old.mark")
        self.engine.add_sink(self.publisher)
        self.engine.add_sink(self.recorder)
        self.me = LocalBackend(self.engine)
        self.business_id = 0

    async def call(self, method: str, *params: Any) -> Any:
        reply = orjson.loads(await self.me.call(method, list(params), 1))
        assert reply["error"] is None, reply
        return reply["result"]

    async def deposit(self, user: int, asset: str, amount: str) -> None:
        self.business_id += 1
        await self.call("balance.update", user, asset, "deposit", self.business_id, amount, {})

    async def trade(self, price: str) -> None:
        await self.call("order.put_limit", SELLER, MARKET, 1, "1", price, "0.001", "0.001", "s")
        await self.call("order.put_limit", USER, MARKET, 2, "1", price, "0.001", "0.001", "b")

    async def fail_over(self, mark: int) -> BusPublisher:
        """The old active stops; the new one starts from ``mark`` (below what was published),
        is handed the replayed operations, then takes the live ones."""
        assert await self.publisher.flush(30)
        await self.publisher.stop()
        self.engine.sinks.remove(self.publisher)
        new_mark = MarkFile(self.tmp_path / "new.mark")
        new_mark.save(Mark(mark))
        new = BusPublisher(KafkaTransport(self.brokers, self.prefix), new_mark)
        await new.start()
        for oper_id, events in self.recorder.ops:
            new.on_events(oper_id, events)
        self.engine.add_sink(new)
        self.publisher = new
        assert await new.flush(30)
        return new


async def test_republished_range_changes_nothing_for_marketprice_and_accessws(
        tmp_path: Path, auth: AuthService, kafka_brokers: str, kafka_topics: Callable[[], str],
        redis_server: tuple[str, int], redis_prefix: str) -> None:
    prefix = kafka_topics()
    ex = Exchange(tmp_path, kafka_brokers, prefix)
    ex.engine.restore()
    await ex.publisher.start()
    await ex.engine.start()
    rpc = RpcServer(ex.engine, MATCHENGINE_COMMANDS, 10240, name="matchengine")
    rpc_port, ws_port, dead_port = free_port(), free_port(), free_port()
    await rpc.start([f"tcp@127.0.0.1:{rpc_port}"])
    mp = MarketPriceService(KafkaBusReader(kafka_brokers, prefix),
                            RedisStore.direct(*redis_server, prefix=redis_prefix),
                            lambda: [MARKET], cache_timeout=0, flush_interval=3600)
    await mp.start()
    data: dict[str, Any] = copy.deepcopy(SAMPLE)
    data["svr"]["bind"] = [f"tcp@127.0.0.1:{ws_port}"]
    data["matchengine"]["addr"] = [f"tcp@127.0.0.1:{rpc_port}"]
    data["marketprice"]["addr"] = [f"tcp@127.0.0.1:{dead_port}"]
    data["readhistory"]["addr"] = [f"tcp@127.0.0.1:{dead_port}"]
    for topic in ("orders", "balances"):
        data[topic].update(brokers=kafka_brokers, topic=prefix + topic)
    data.update(auth_url=auth.auth_url, sign_url=auth.sign_url)
    ws: StandaloneAccessWs = await build(data)
    await ws.start()
    client: WsClient | None = None
    try:
        assert await ws.clients["matchengine"].wait_connected(10)
        client = await WsClient.connect(f"http://127.0.0.1:{ws_port}/")
        assert await client.call("server.auth", "tok", "web") == {"status": "success"}
        await client.call("order.subscribe", MARKET)
        await client.call("asset.subscribe", "BCH")
        await ex.deposit(SELLER, "BTC", "100")
        # accessws reads the topics from their end: deposit until its balance consumer is live
        deadline = time.monotonic() + 30
        await ex.deposit(USER, "BCH", "10000")
        while await client.quiet("asset.update", 0.5):
            assert time.monotonic() < deadline, "no push from Kafka"
            await ex.deposit(USER, "BCH", "1")

        # trades, each seen once by marketprice and pushed once by accessws
        first_trade_op = ex.engine.oper_id + 1
        for i in range(TRADES):
            await ex.trade(str(100 + i))
            if i == 2:
                await ex.deposit(USER, "BCH", "3")  # a balances message in the range too
        deal_id = ex.engine.engine.deal_id
        await wait_until_async(lambda: mp.data.last_deal_id == deal_id, 30,
                               message="marketprice applies every deal")
        updates = [await client.next("order.update", timeout=10) for _ in range(TRADES)]
        assert await client.quiet("order.update", 0.5)
        assert [u[0] for u in updates] == [3] * TRADES, updates  # each buy, filled at once
        balances_before = await high_watermark(kafka_brokers, prefix, BALANCES)
        await settled_assets(ex, client)
        before = market_state(mp)
        deals_before = await high_watermark(kafka_brokers, prefix, DEALS)
        orders_before = await high_watermark(kafka_brokers, prefix, ORDERS)

        # failover: the new active's mark is from before the trades
        await ex.fail_over(first_trade_op - 1)
        # the range really went out again: every message of the trades, and the deposit
        again = Counter(topic for oper_id, events in ex.recorder.ops if oper_id >= first_trade_op
                        for topic, _ in encode_events(events))
        assert again == {DEALS: TRADES, ORDERS: 3 * TRADES, BALANCES: 1}
        high = await high_watermark(kafka_brokers, prefix, DEALS)
        assert high == deals_before + TRADES
        assert await high_watermark(kafka_brokers, prefix, ORDERS) == orders_before + 3 * TRADES
        assert await high_watermark(kafka_brokers, prefix, BALANCES) == balances_before + 1
        await mp.wait_offset(high - 1, timeout=30)
        assert mp.data.duplicates == TRADES
        assert market_state(mp) == before

        # one new operation on each topic, behind the republished ones: when its pushes
        # arrive, accessws has handled every republished message before it
        await ex.deposit(USER, "BCH", "5")
        order = await ex.call("order.put_limit", USER, MARKET, 2, "1", "50", "0.001",
                              "0.001", "new")
        assert await client.next("order.update", timeout=10) == [1, order]
        assert client.drain("order.update") == []
        # the deposit's and the order's; a republished deposit or order (a balance query
        # each) would add at least one unless its query happened to coalesce with these
        pushes = await settled_assets(ex, client)
        assert 1 <= len(pushes) <= 2, pushes
    finally:
        if client is not None:
            await client.close()
        await ws.stop()
        await mp.stop()
        await rpc.stop()
        await ex.engine.stop()
        await ex.publisher.stop()
        ex.store.close()
