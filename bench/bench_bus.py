"""Message bus throughput (messages/s), in-process and Kafka.

    .venv/bin/python -m bench.bench_bus [--orders N] [--brokers HOST:PORT]

Builds a session with the real engine (deposits, then put_limit orders of which about half cross
the book), then measures, for the same operations:

* encoding: events -> the original's message bodies (``bus.messages``);
* in-process: ``BusPublisher`` -> ``InProcessBus`` -> one durable subscriber per topic, until
  every message is received, committed and acknowledged;
* Kafka: ``BusPublisher`` -> ``KafkaTransport`` (acks=all, idempotent) on fresh topics, until
  every message is acknowledged by the broker; then ``KafkaBusReader`` reading them back;
* marketprice: deals messages applied to its state, and one SQLite flush of the result.

Kafka settings: ``--brokers`` or EXCHANGE_KAFKA_BROKERS (default 127.0.0.1:9092); the topics are
deleted afterwards.  Prints figures; no pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from typing import Any

from bench.common import bench_config, mixed_orders, report
from exchange_server.bus import DEALS, TOPICS, BusPublisher, InProcessBus
from exchange_server.bus.base import Message
from exchange_server.bus.kafka import KafkaBusReader, KafkaTransport
from exchange_server.bus.messages import encode_events
from exchange_server.common.errors import RpcError
from exchange_server.marketprice.localtime import LocalTime
from exchange_server.marketprice.state import MarketData, Retention
from exchange_server.marketprice.store_sqlite import SqliteStore
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import Event
from exchange_server.matchengine.methods import MatchEngineMethods

Ops = list[tuple[int, list[Event]]]


def make_session(n_orders: int, users: int = 1000) -> Ops:
    engine = Engine.from_config(bench_config())
    methods = MatchEngineMethods(engine)
    ops: Ops = []
    now = 1_700_000_000.0
    requests: list[tuple[str, list[Any]]] = []
    for u in range(1, users + 1):
        requests.append(("balance.update", [u, "BTC", "deposit", u, "1000000", {}]))
        requests.append(("balance.update", [u, "BCH", "deposit", 10**6 + u, "100000000", {}]))
    requests += [("order.put_limit", p) for p in mixed_orders(n_orders, users)]
    for method, params in requests:
        now += 0.001
        try:
            methods.writes[method].run(now, params)
        except RpcError:
            engine.take_events()
            continue
        ops.append((len(ops) + 1, engine.take_events()))
    return ops


def count_messages(ops: Ops) -> dict[str, int]:
    counts = dict.fromkeys(TOPICS, 0)
    for _, events in ops:
        for topic, _ in encode_events(events):
            counts[topic] += 1
    return counts


async def drain(subscription: Any, count: int) -> None:
    got = 0
    while got < count:
        batch = await subscription.next_batch(5000)
        got += len(batch)
        subscription.commit(batch[-1].offset)


async def bench_inprocess(ops: Ops, counts: dict[str, int]) -> dict[str, Any]:
    bus = InProcessBus()
    # durable subscribers (as marketprice): messages are acknowledged once they commit
    subscriptions = {t: bus.subscribe(t, 0, durable="bench") for t in TOPICS}
    publisher = BusPublisher(bus)
    await publisher.start()
    total = sum(counts.values())
    started = time.perf_counter()
    readers = [asyncio.create_task(drain(subscriptions[t], counts[t])) for t in TOPICS]
    for oper_id, events in ops:
        publisher.on_events(oper_id, events)
    publish_s = time.perf_counter() - started
    await asyncio.gather(*readers)
    await publisher.flush()
    elapsed = time.perf_counter() - started
    await publisher.stop()
    return {"in-process publish (on_events) msg/s": total / publish_s,
            "in-process end to end msg/s": total / elapsed}


async def bench_kafka(ops: Ops, counts: dict[str, int], brokers: str) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient, NewTopic

    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    admin = AdminClient({"bootstrap.servers": brokers})
    names = [prefix + t for t in TOPICS]
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(timeout=30)
    try:
        publisher = BusPublisher(KafkaTransport(brokers, prefix))
        await publisher.start()
        total = sum(counts.values())
        started = time.perf_counter()
        for oper_id, events in ops:
            publisher.on_events(oper_id, events)
        publish_s = time.perf_counter() - started
        await publisher.flush()
        elapsed = time.perf_counter() - started
        await publisher.stop()
        reader = KafkaBusReader(brokers, prefix)
        started = time.perf_counter()
        await asyncio.gather(*(drain(reader.subscribe(t, 0), counts[t]) for t in TOPICS))
        read_s = time.perf_counter() - started
        return {"kafka publish (on_events) msg/s": total / publish_s,
                "kafka acknowledged (acks=all) msg/s": total / elapsed,
                "kafka consumer read msg/s": total / read_s}
    finally:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:
                pass


async def bench_marketprice(ops: Ops) -> dict[str, Any]:
    deals = [body for _, events in ops for topic, body in encode_events(events) if topic == DEALS]
    data = MarketData(LocalTime(), Retention())
    data.add_market("BTCBCH")
    started = time.perf_counter()
    for offset, body in enumerate(deals):
        data.apply(Message(offset, body, None))
    apply_s = time.perf_counter() - started
    changes = data.take_changes()
    assert changes is not None
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(tmp)
        await store.open()
        started = time.perf_counter()
        await store.write(changes)
        flush_s = time.perf_counter() - started
        await store.close()
    return {"marketprice apply deals/s": len(deals) / apply_s,
            "marketprice SQLite flush of all (s)": flush_s}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--brokers", default=os.environ.get("EXCHANGE_KAFKA_BROKERS",
                                                            "127.0.0.1:9092"))
    args = parser.parse_args()
    ops = make_session(args.orders)
    counts = count_messages(ops)
    total = sum(counts.values())
    started = time.perf_counter()
    for _, events in ops:
        for _ in encode_events(events):
            pass
    encode_s = time.perf_counter() - started
    figures: dict[str, Any] = {"operations": len(ops), "messages": total}
    figures.update({f"  {t} messages": n for t, n in counts.items()})
    figures["encode msg/s"] = total / encode_s
    figures.update(await bench_inprocess(ops, counts))
    figures.update(await bench_kafka(ops, counts, args.brokers))
    figures.update(await bench_marketprice(ops))
    report("message bus", figures)


if __name__ == "__main__":
    asyncio.run(main())
