"""marketprice persistence: stop mid-stream and restart, with Redis (direct and through
Sentinel) fed by Kafka, and with SQLite fed by the in-process bus.  After the restart the
state must equal the state of a run that never stopped: no deal counted twice or missed, even
when the publisher re-sends deals (at-least-once) after its own restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from exchange_server.bus import DEALS, BusPublisher, InProcessBus, MarkFile
from exchange_server.bus.base import Message
from exchange_server.bus.kafka import KafkaBusReader, KafkaTransport
from exchange_server.bus.mark import Mark
from exchange_server.bus.messages import deal_message
from exchange_server.common.decimals import fmt, fmt_raw
from exchange_server.marketprice.markets import MarketListError, accesshttp_markets, get_markets
from exchange_server.marketprice.service import MarketPriceService
from exchange_server.marketprice.state import DEALS_MAX, KINDS, Changes, Retention, StoredMarket
from exchange_server.marketprice.store import MarketStore
from exchange_server.marketprice.store_redis import RedisStore
from exchange_server.marketprice.store_sqlite import SqliteStore
from tests.support.waiting import wait_until_async
from tests.unit.test_bus_session import TZ, Op, local, session

LISTED = ["BTCBCH", "BTCUSDT"]
MARKETS = ["BTCBCH", "ETHBCH", "BTCUSDT"]
RETENTION = Retention(sec_max=4 * 3600)
NOW = session().now


def make_service(reader: Any, store: MarketStore, **kwargs: Any) -> MarketPriceService:
    options: dict[str, Any] = {"markets": lambda: LISTED, "retention": RETENTION,
                               "cache_timeout": 0, "tz": TZ, "clock": lambda: NOW,
                               "flush_interval": 3600}
    options.update(kwargs)
    return MarketPriceService(reader, store, **options)


def baseline() -> MarketPriceService:
    """Every deal applied once, straight through."""
    service = make_service(InProcessBus(), SqliteStore("unused.db"))
    for name in LISTED:
        service.data.add_market(name)
    for offset, d in enumerate(session().deals):
        service.data.apply(Message(offset, deal_message(d), None))
    service.data.cleanup(int(NOW))
    return service


def state_of(service: MarketPriceService) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, m in sorted(service.data.markets.items()):
        out[name] = {"last": fmt_raw(m.last), "deals": list(m.deals),
                     "klines": [{ts: k.values() for ts, k in b.items()} for b in m.klines]}
    return out


def answers(service: MarketPriceService) -> dict[str, Any]:
    now = int(NOW)
    dense = int(local(2024, 3, 4, 8))
    calls: list[tuple[str, list[Any]]] = []
    for m in MARKETS:
        calls += [("market.last", [m]), ("market.deals", [m, DEALS_MAX, 0]),
                  ("market.status", [m, 3600]), ("market.status_today", [m]),
                  ("market.kline", [m, dense, now, 1]), ("market.kline", [m, 1, now, 300]),
                  ("market.kline", [m, 1, now, 3600]), ("market.kline", [m, 1, now, 86400]),
                  ("market.kline", [m, 1, now, 2592000])]
    return {f"{method} {params}": service.execute(method, params) for method, params in calls}


def assert_same_as_baseline(service: MarketPriceService) -> None:
    service.data.cleanup(int(NOW))
    expected = baseline()
    assert state_of(service) == state_of(expected)
    assert answers(service) == answers(expected)


def publish(publisher: BusPublisher, ops: list[Op]) -> None:
    for op in ops:
        publisher.on_events(op.oper_id, op.events)


def deal_count(ops: list[Op]) -> int:
    return sum(1 for op in ops for e in op.events if type(e).__name__ == "Deal")


# -- SQLite + in-process bus (embedded mode) ------------------------------------------------------


async def test_sqlite_inprocess_restart_mid_stream(tmp_path: Path) -> None:
    ops = session().ops
    mark = MarkFile(tmp_path / "bus.mark")

    # process 1: consume, store part of it, consume more, crash before the next flush
    bus = InProcessBus(mark)
    publisher = BusPublisher(bus, mark, mark_interval=0.05)
    mp = make_service(bus, SqliteStore(tmp_path))
    await mp.start()
    await publisher.start()
    publish(publisher, ops[:250])
    await mp.wait_offset(deal_count(ops[:250]) - 1)
    assert await mp.flush()
    stored = mp.data.offset
    publish(publisher, ops[250:400])
    await mp.wait_offset(deal_count(ops[:400]) - 1)
    # an absence under test: given time for its 0.05 s mark timer to run, the publisher's
    # mark still must not pass what marketprice stored (below)
    await asyncio.sleep(0.1)
    await mp.stop(flush=False)  # the deals after `stored` are lost with the process
    await publisher.stop(timeout=0)
    # the publisher's mark never passes what marketprice stored
    saved = mark.load()
    assert saved.offsets[DEALS] == stored + 1
    assert deal_count([op for op in ops if op.oper_id <= saved.oper_id]) == stored + 1

    # process 2: marketprice loads SQLite, the matchengine replays from an older slice
    bus2 = InProcessBus(mark)
    publisher2 = BusPublisher(bus2, mark)
    mp2 = make_service(bus2, SqliteStore(tmp_path))
    await mp2.start()
    assert mp2.data.offset == stored
    await publisher2.start()
    publish(publisher2, ops[100:])  # replay (ids <= mark dropped) then live operations
    await mp2.wait_offset(deal_count(ops) - 1)
    assert await mp2.flush()
    assert await publisher2.flush(5)  # every deal acknowledged once marketprice stored it
    await mp2.stop()
    await publisher2.stop()
    assert mp2.data.duplicates == 0
    assert mark.load() == Mark(ops[-1].oper_id, mark.load().offsets)

    # process 3: everything comes back from SQLite alone
    mp3 = make_service(InProcessBus(mark), SqliteStore(tmp_path))
    await mp3.start()
    await mp3.stop()
    assert_same_as_baseline(mp3)


async def test_embedded_restart_with_the_matchengine_service(tmp_path: Path) -> None:
    """The embedded wiring end to end: MatchEngineService (SQLite log) -> BusPublisher ->
    InProcessBus -> marketprice (SQLite).  Crash mid-stream, restart: the service restores
    from its log, the publisher re-publishes what marketprice had not stored, and the result
    equals a run that never stopped."""
    from exchange_server.common.config import load_matchengine
    from exchange_server.matchengine.service import MatchEngineService
    from exchange_server.matchengine.store_sqlite import SqliteEngineStore
    from tests.unit.test_bus_session import CONFIG

    ops = session().ops
    config = load_matchengine(CONFIG, embedded=True)
    clock = [0.0]
    mark = MarkFile(tmp_path / "bus.mark")

    async def boot() -> tuple[MatchEngineService, BusPublisher, MarketPriceService, Any]:
        store = SqliteEngineStore(tmp_path / "engine")
        store.open()
        bus = InProcessBus(mark)
        publisher = BusPublisher(bus, mark, mark_interval=0.05)
        mp = make_service(bus, SqliteStore(tmp_path))
        await mp.start()  # before restore: its durable subscription holds the replayed deals
        engine = MatchEngineService(config, store, clock=lambda: clock[0])
        engine.add_sink(publisher)
        engine.restore()
        await publisher.start()
        await engine.start()
        return engine, publisher, mp, store

    async def run(engine: MatchEngineService, part: list[Op]) -> None:
        for op in part:
            clock[0] = op.time
            body = json.loads(await engine.call(op.method, op.params, op.oper_id))
            assert body["error"] is None, (op, body)

    engine, publisher, mp, store = await boot()
    await run(engine, ops[:300])
    await mp.wait_offset(deal_count(ops[:300]) - 1)
    await mp.flush()
    last_deal_op = max(op.oper_id for op in ops[:300] if any(
        type(e).__name__ == "Deal" for e in op.events))
    await wait_until_async(lambda: mark.load().oper_id >= last_deal_op,
                           message="the publisher writing its mark")
    await run(engine, ops[300:420])
    # crash: marketprice's last changes and the publisher's final mark are lost
    await mp.stop(flush=False)
    await publisher.stop(timeout=0, final_mark=False)
    await engine.stop(final_slice=False)
    store.close()
    assert mark.load().oper_id < 420

    engine, publisher, mp, store = await boot()
    assert engine.oper_id == 420
    await run(engine, ops[420:])
    await mp.wait_offset(deal_count(ops) - 1)
    await mp.flush()
    assert await publisher.flush(5)
    await mp.stop()
    await publisher.stop()
    await engine.stop()
    store.close()
    assert mp.data.duplicates == 0
    assert mark.load().oper_id == ops[-1].oper_id
    assert_same_as_baseline(mp)


class FlakyStore:
    """A real store whose next write fails on demand (fault injection)."""

    def __init__(self, store: MarketStore) -> None:
        self.store = store
        self.fail_next = False

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def load_offset(self) -> int:
        return await self.store.load_offset()

    async def load_market_names(self) -> list[str]:
        return await self.store.load_market_names()

    async def load_market(self, name: str) -> StoredMarket:
        return await self.store.load_market(name)

    async def write(self, changes: Changes) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("store unavailable")
        await self.store.write(changes)


async def test_failed_flush_is_retried_without_loss(tmp_path: Path) -> None:
    ops = session().ops
    bus = InProcessBus()
    publisher = BusPublisher(bus)
    store = FlakyStore(SqliteStore(tmp_path))
    mp = make_service(bus, store)
    await mp.start()
    await publisher.start()
    publish(publisher, ops[:300])
    await mp.wait_offset(deal_count(ops[:300]) - 1)
    store.fail_next = True
    assert not await mp.flush()
    assert publisher.pending(DEALS) == deal_count(ops[:300])  # nothing acknowledged
    publish(publisher, ops[300:])
    await mp.wait_offset(deal_count(ops) - 1)
    assert await mp.flush()
    assert await publisher.flush(5)
    await mp.stop()
    await publisher.stop()
    mp2 = make_service(InProcessBus(), SqliteStore(tmp_path))
    await mp2.start()
    await mp2.stop()
    assert_same_as_baseline(mp2)


# -- Redis + Kafka (production) -------------------------------------------------------------------


async def test_redis_kafka_restart_with_republished_deals(
        kafka_brokers: str, kafka_topics: Callable[[], str], redis_server: tuple[str, int],
        redis_prefix: str, tmp_path: Path) -> None:
    ops = session().ops
    topics = kafka_topics()
    host, port = redis_server
    mark_path = tmp_path / "bus.mark"

    def store() -> RedisStore:
        return RedisStore.direct(host, port, prefix=redis_prefix)

    publisher = BusPublisher(KafkaTransport(kafka_brokers, topics), mark_path)
    await publisher.start()
    publish(publisher, ops[:250])
    mp = make_service(KafkaBusReader(kafka_brokers, topics), store())
    await mp.start()
    await mp.wait_offset(deal_count(ops[:250]) - 1, timeout=30)
    assert await mp.flush()
    stored = mp.data.offset
    publish(publisher, ops[250:400])
    await mp.wait_offset(deal_count(ops[:400]) - 1, timeout=30)
    await mp.stop(flush=False)  # crash: what was consumed after `stored` is not in Redis
    assert await publisher.flush(30)
    await publisher.stop()

    # the matchengine crashed too and its mark file lagged behind: ops after 300 go out again
    MarkFile(mark_path).save(Mark(300))
    publisher2 = BusPublisher(KafkaTransport(kafka_brokers, topics), mark_path)
    await publisher2.start()
    publish(publisher2, ops[200:])
    assert await publisher2.flush(30)
    await publisher2.stop()
    republished = deal_count(ops[300:400])
    _, high = await asyncio.to_thread(KafkaBusReader(kafka_brokers, topics).watermarks, DEALS)
    assert high == deal_count(ops) + republished

    client = redis.Redis(host=host, port=port, decode_responses=True)
    assert client.get(f"{redis_prefix}k:offset") == str(stored)
    mp2 = make_service(KafkaBusReader(kafka_brokers, topics), store())
    await mp2.start()
    assert mp2.data.offset == stored
    await mp2.wait_offset(high - 1, timeout=30)
    await mp2.stop()
    assert mp2.data.duplicates == republished
    assert client.get(f"{redis_prefix}k:offset") == str(high - 1)
    assert_same_as_baseline(mp2)

    mp3 = make_service(KafkaBusReader(kafka_brokers, topics), store())
    await mp3.start()
    await mp3.stop()
    assert_same_as_baseline(mp3)
    check_redis_layout(client, redis_prefix)


def check_redis_layout(client: redis.Redis, prefix: str) -> None:
    """The original's keys (storage.md 3) hold exactly the consumed data."""
    deals = session().deals
    for market in ("BTCBCH", "ETHBCH"):
        mine = [d for d in deals if d.market == market]
        assert client.get(f"{prefix}k:{market}:last") == fmt_raw(mine[-1].price)
        items = client.lrange(f"{prefix}k:{market}:deals", 0, -1)
        assert len(items) == len(mine)
        first = mine[-1]
        side = "sell" if first.taker_side == 1 else "buy"
        assert items[0] == (f'{{"id": {first.deal_id}, "time": {first.time!r}, '
                            f'"price": "{fmt(first.price)}", "amount": "{fmt(first.amount)}", '
                            f'"type": "{side}"}}')
        assert [json.loads(i)["id"] for i in items] == [d.deal_id for d in reversed(mine)]
        for kind in KINDS:
            hash_ = client.hgetall(f"{prefix}k:{market}:{kind}")
            assert hash_, kind
            for field, value in hash_.items():
                assert field.isdigit()
                parsed = json.loads(value)
                assert len(parsed) == 6 and all(isinstance(v, str) for v in parsed)
                assert value == json.dumps(parsed, separators=(", ", ": "))
    assert client.smembers(f"{prefix}k:markets") == {"ETHBCH"}  # seen in deals, not listed
    assert not client.exists(f"{prefix}k:BTCUSDT:deals")


async def test_retention_cleanup_deletes_from_redis(redis_server: tuple[str, int],
                                                    redis_prefix: str) -> None:
    host, port = redis_server
    bus = InProcessBus()
    publisher = BusPublisher(bus)
    long = Retention()  # 7 days of 1s buckets, then the service restarts with 1 hour
    mp = make_service(bus, RedisStore.direct(host, port, prefix=redis_prefix), retention=long)
    await mp.start()
    await publisher.start()
    publish(publisher, session().ops)
    await mp.wait_offset(len(session().deals) - 1)  # the bus's offsets start at 0
    await mp.stop()
    await publisher.stop()
    client = redis.Redis(host=host, port=port, decode_responses=True)
    key = f"{redis_prefix}k:BTCBCH:1s"
    limit = int(NOW) - 3600
    assert any(int(f) < limit for f in client.hkeys(key))

    short = Retention(sec_max=3600, min_max=60 * 24 * 3, hour_max=24 * 10)
    mp2 = make_service(InProcessBus(), RedisStore.direct(host, port, prefix=redis_prefix),
                       retention=short)
    await mp2.start()  # buckets past retention are not loaded...
    assert all(ts >= limit for ts in mp2.data.markets["BTCBCH"].klines[0])
    await mp2.stop()  # ...and deleted from Redis with the next flush
    limits = short.limits(int(NOW))
    for kind, lim in zip(KINDS, limits, strict=False):
        fields = [int(f) for f in client.hkeys(f"{redis_prefix}k:BTCBCH:{kind}")]
        assert fields and min(fields) >= lim, kind
    days = {datetime.fromtimestamp(d.time, TZ).date() for d in session().deals
            if d.market == "BTCBCH"}
    assert client.hlen(f"{redis_prefix}k:BTCBCH:1d") == len(days)  # day buckets are kept


async def test_sentinel_connection(sentinel_server: tuple[list[str], str], redis_server:
                                   tuple[str, int], redis_prefix: str) -> None:
    addrs, name = sentinel_server
    bus = InProcessBus()
    publisher = BusPublisher(bus)
    mp = make_service(bus, RedisStore.sentinel(addrs, name, prefix=redis_prefix))
    await mp.start()
    await publisher.start()
    publish(publisher, session().ops)
    await mp.wait_offset(len(session().deals) - 1)  # the bus's offsets start at 0
    await mp.stop()
    await publisher.stop()
    assert bus.end_offset(DEALS) == len(session().deals)
    client = redis.Redis(host=redis_server[0], port=redis_server[1], decode_responses=True)
    assert client.get(f"{redis_prefix}k:offset") == str(bus.end_offset(DEALS) - 1)
    mp2 = make_service(InProcessBus(), RedisStore.sentinel(addrs, name, prefix=redis_prefix))
    await mp2.start()
    await mp2.stop()
    assert_same_as_baseline(mp2)


async def test_unreachable_redis_fails_start() -> None:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    mp = make_service(InProcessBus(), RedisStore.direct("127.0.0.1", 1, prefix="x:",
                                                        retry=Retry(NoBackoff(), 0)))
    with pytest.raises(redis.exceptions.ConnectionError):
        await mp.start()


# -- market list from accesshttp ------------------------------------------------------------------


async def test_market_list_from_accesshttp(tmp_path: Path) -> None:
    from tests.support.server import ServerProcess

    server = ServerProcess(tmp_path / "data").start()
    try:
        source = accesshttp_markets(f"http://127.0.0.1:{server.port}/")
        names = await get_markets(source)
    finally:
        server.stop()
    assert names == ["BTCBCH", "LTCBCH", "ETHBCH", "ETCBCH", "ZECBCH", "XMRBCH", "DSHBCH"]
    dead = make_service(InProcessBus(), SqliteStore(tmp_path / "mp"),
                        markets=accesshttp_markets("http://127.0.0.1:1/"))
    with pytest.raises(MarketListError):
        await dead.start()
