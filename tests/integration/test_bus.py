"""The message bus: exact message bytes, ordering, the outage bound, durable marks, restarts.

Kafka tests run against the real broker of ``scripts/services.sh`` on fresh topics; the
in-process adapter is tested the same way.  Events come from real engine sessions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exchange_server.bus import BALANCES, DEALS, ORDERS, TOPICS, BusPublisher, InProcessBus, MarkFile
from exchange_server.bus.base import Message
from exchange_server.bus.kafka import KafkaBusReader, KafkaTransport
from exchange_server.bus.mark import Mark, MarkStoreError, MysqlMark
from exchange_server.common.config import MysqlConfig, load_matchengine
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import BalanceUpdated, Deal, Event, OrderChanged, order_info
from exchange_server.matchengine.methods import MatchEngineMethods
from tests.support.waiting import wait_until_async
from tests.unit.test_bus_session import CONFIG, Op, session

# -- expected bodies, built here from the event fields (engine.md 14) -----------------------------


def _sci(value: Any) -> str:
    """Decimal to-sci-string, lowercase e, no zero stripping."""
    return str(value).replace("E", "e")


def _jansson(value: Any) -> bytes:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False).encode()


def expected_body(e: Event) -> tuple[str, bytes] | None:
    if isinstance(e, Deal):
        return DEALS, _jansson([e.time, e.market, e.ask_order_id, e.bid_order_id, e.ask_user,
                                e.bid_user, _sci(e.price), _sci(e.amount), _sci(e.ask_fee),
                                _sci(e.bid_fee), e.taker_side, e.deal_id, e.stock, e.money])
    if isinstance(e, OrderChanged):
        return ORDERS, _jansson({"event": e.event, "order": order_info(e.order), "stock": e.stock,
                                 "money": e.money})
    if isinstance(e, BalanceUpdated):
        return BALANCES, _jansson([e.time, e.user, e.asset, e.business, _sci(e.change)])
    return None


def expected_topics(ops: list[Op]) -> dict[str, list[tuple[int, bytes]]]:
    """Per topic: (oper_id, body) in publishing order."""
    out: dict[str, list[tuple[int, bytes]]] = {t: [] for t in TOPICS}
    for op in ops:
        for e in op.events:
            item = expected_body(e)
            if item is not None:
                out[item[0]].append((op.oper_id, item[1]))
    return out


async def read_kafka(brokers: str, prefix: str, topic: str, count: int,
                     timeout: float = 30.0) -> list[Message]:
    reader = KafkaBusReader(brokers, prefix)
    low, high = await asyncio.to_thread(reader.watermarks, topic)
    assert low == 0
    subscription = reader.subscribe(topic, 0)
    messages: list[Message] = []
    try:
        async with asyncio.timeout(timeout):
            while len(messages) < count:
                messages.extend(await subscription.next_batch())
    finally:
        await subscription.close()
    _, high = await asyncio.to_thread(reader.watermarks, topic)
    assert high == count, f"{topic}: {high} messages in the topic, {count} expected"
    return messages


def publish(publisher: BusPublisher, ops: list[Op]) -> None:
    for op in ops:
        publisher.on_events(op.oper_id, op.events)


# -- the message layouts, literally ---------------------------------------------------------------


def test_message_layouts_literal() -> None:
    from exchange_server.bus.messages import encode_events

    engine = Engine.from_config(load_matchengine(CONFIG, embedded=True))
    methods = MatchEngineMethods(engine)
    out: list[tuple[str, bytes]] = []

    def run(method: str, t: float, params: list[Any]) -> None:
        methods.writes[method].run(t, params)
        out.extend(encode_events(engine.take_events()))

    run("balance.update", 1700000000.5, [1, "BTC", "deposit", 1, "100", {}])
    run("balance.update", 1700000000.5, [2, "BCH", "deposit", 2, "1000", {}])
    run("order.put_limit", 1700000001.25, [1, "BTCBCH", 1, "2", "10", "0.002", "0.001", "s1"])
    run("order.put_limit", 1700000002.75, [2, "BTCBCH", 2, "0.5", "11", "0.002", "0.001", "s2"])
    assert out == [
        (BALANCES, b'[1700000000.5, 1, "BTC", "deposit", "100.00000000"]'),
        (BALANCES, b'[1700000000.5, 2, "BCH", "deposit", "1000.00000000"]'),
        (ORDERS, b'{"event": 1, "order": {"id": 1, "market": "BTCBCH", "source": "s1", "type": 1, '
                 b'"side": 1, "user": 1, "ctime": 1700000001.25, "mtime": 1700000001.25, '
                 b'"price": "10", "amount": "2", "taker_fee": "0.002", "maker_fee": "0.001", '
                 b'"left": "2", "deal_stock": "0", "deal_money": "0", "deal_fee": "0"}, '
                 b'"stock": "BTC", "money": "BCH"}'),
        (DEALS, b'[1700000002.75, "BTCBCH", 1, 2, 1, 2, "10.00000000", "0.50000000", '
                b'"0.00500000000000000000", "0.001000000000", 2, 1, "BTC", "BCH"]'),
        (ORDERS, b'{"event": 2, "order": {"id": 1, "market": "BTCBCH", "source": "s1", "type": 1, '
                 b'"side": 1, "user": 1, "ctime": 1700000001.25, "mtime": 1700000002.75, '
                 b'"price": "10", "amount": "2", "taker_fee": "0.002", "maker_fee": "0.001", '
                 b'"left": "1.5", "deal_stock": "0.5", "deal_money": "5", "deal_fee": "0.005"}, '
                 b'"stock": "BTC", "money": "BCH"}'),
        (ORDERS, b'{"event": 3, "order": {"id": 2, "market": "BTCBCH", "source": "s2", "type": 1, '
                 b'"side": 2, "user": 2, "ctime": 1700000002.75, "mtime": 1700000002.75, '
                 b'"price": "11", "amount": "0.5", "taker_fee": "0.002", "maker_fee": "0.001", '
                 b'"left": "0e-8", "deal_stock": "0.5", "deal_money": "5", "deal_fee": "0.001"}, '
                 b'"stock": "BTC", "money": "BCH"}'),
    ]


# -- Kafka ----------------------------------------------------------------------------------------


async def test_kafka_session_exact_bytes(kafka_brokers: str, kafka_topics: Callable[[], str],
                                         tmp_path: Path) -> None:
    """Every message of a scripted session, read back from the broker: bodies byte-identical
    to the original's layout, in order, each with its operation id header."""
    prefix = kafka_topics()
    ops = session().ops
    publisher = BusPublisher(KafkaTransport(kafka_brokers, prefix), tmp_path / "bus.mark")
    assert publisher.durable_mark() == 0
    await publisher.start()
    publish(publisher, ops)
    assert await publisher.flush(30)
    await publisher.stop()
    assert MarkFile(tmp_path / "bus.mark").load() == Mark(ops[-1].oper_id, {})
    expected = expected_topics(ops)
    for topic in TOPICS:
        messages = await read_kafka(kafka_brokers, prefix, topic, len(expected[topic]))
        assert [m.offset for m in messages] == list(range(len(expected[topic])))
        assert [(m.oper_id, m.value) for m in messages] == expected[topic], topic


async def test_kafka_outage_buffers_up_to_the_bound_and_loses_nothing(
        kafka_brokers: str, kafka_topics: Callable[[], str], tmp_path: Path) -> None:
    """Broker unreachable: messages queue, overloaded() turns True exactly at the bound,
    nothing is acknowledged (mark stays put).  Once brokers are reachable every message
    arrives once, in order."""
    prefix = kafka_topics()
    ops = session().ops
    bound = 40
    transport = KafkaTransport("127.0.0.1:1", prefix)
    mark_path = tmp_path / "bus.mark"
    publisher = BusPublisher(transport, mark_path, max_pending=bound, mark_interval=0.05)
    await publisher.start()
    given = 0
    while not publisher.overloaded():
        assert all(publisher.pending(t) < bound for t in TOPICS)
        op = ops[given]
        publisher.on_events(op.oper_id, op.events)
        given += 1
    assert max(publisher.pending(t) for t in TOPICS) >= bound
    await asyncio.sleep(1.5)  # the outage goes on: still nothing acknowledged or dropped
    assert publisher.overloaded()
    published = expected_topics(ops[:given])
    assert publisher.pending_total() == sum(len(m) for m in published.values())
    assert publisher.current_mark().oper_id == 0
    assert MarkFile(mark_path).load().oper_id == 0

    transport.set_brokers(kafka_brokers)  # the broker is back
    assert await publisher.flush(30)
    assert not publisher.overloaded()
    # the mark file follows the acknowledgements
    await wait_until_async(lambda: MarkFile(mark_path).load().oper_id == ops[given - 1].oper_id,
                           message="the mark file written")
    publish(publisher, ops[given:])
    assert await publisher.flush(30)
    await publisher.stop()
    expected = expected_topics(ops)
    for topic in TOPICS:
        messages = await read_kafka(kafka_brokers, prefix, topic, len(expected[topic]))
        assert [(m.oper_id, m.value) for m in messages] == expected[topic], topic


class _CountingTransport(KafkaTransport):
    """Counts the messages Kafka accepted from the publisher (a resend hands some over twice)."""

    accepted = 0

    def send(self, topic: str, value: bytes, oper_id: int) -> bool:
        ok = super().send(topic, value, oper_id)
        self.accepted += ok
        return ok


async def test_kafka_producer_rebuilt_mid_stream_resends_in_order(
        kafka_brokers: str, kafka_topics: Callable[[], str]) -> None:
    """A producer lost with messages in flight: everything unacknowledged is sent again, so a
    topic holds the sequence, possibly with a repeated stretch, never a gap or a reordering."""
    prefix = kafka_topics()
    ops = session().ops
    transport = _CountingTransport(kafka_brokers, prefix)
    publisher = BusPublisher(transport, None)
    await publisher.start()
    half = len(ops) // 2
    publish(publisher, ops[:half])
    await asyncio.sleep(0.01)  # shapes the scenario (some in flight), asserts nothing by itself
    publish(publisher, ops[half:half + 50])
    transport.set_brokers(kafka_brokers)  # drops the producer with whatever it had in flight
    publish(publisher, ops[half + 50:])
    assert await publisher.flush(30)
    await publisher.stop()
    expected = expected_topics(ops)
    # the lost messages were handed to Kafka again
    assert transport.accepted > sum(len(m) for m in expected.values())
    reader = KafkaBusReader(kafka_brokers, prefix)
    for topic in TOPICS:
        _, high = await asyncio.to_thread(reader.watermarks, topic)
        got = await read_kafka(kafka_brokers, prefix, topic, high)
        sequence = [(m.oper_id or 0, m.value) for m in got]
        want = expected[topic]
        # sequence == want[:k] + want[j:] with j <= k (a resent stretch), nothing else
        k = 0
        while k < len(sequence) and k < len(want) and sequence[k] == want[k]:
            k += 1
        rest = sequence[k:]
        if rest:
            j = want.index(rest[0])
            assert j <= k
            assert rest == want[j:], topic
        else:
            assert k == len(want), topic


async def test_publisher_drops_replayed_operations_at_or_below_its_mark(
        kafka_brokers: str, kafka_topics: Callable[[], str], tmp_path: Path) -> None:
    """After a restart the matchengine replays from a slice before the mark: ids at or below
    the mark are not published again, later ones are."""
    prefix = kafka_topics()
    ops = session().ops
    mark_path = tmp_path / "bus.mark"
    first = BusPublisher(KafkaTransport(kafka_brokers, prefix), mark_path)
    await first.start()
    cut = 200
    publish(first, ops[:cut])
    await first.stop()
    second = BusPublisher(KafkaTransport(kafka_brokers, prefix), mark_path)
    assert second.durable_mark() == ops[cut - 1].oper_id
    await second.start()
    publish(second, ops[100:])  # replay from an older slice, then live operations
    assert await second.flush(30)
    await second.stop()
    expected = expected_topics(ops)
    for topic in TOPICS:
        messages = await read_kafka(kafka_brokers, prefix, topic, len(expected[topic]))
        assert [(m.oper_id, m.value) for m in messages] == expected[topic], topic


# -- in-process -----------------------------------------------------------------------------------


async def test_inprocess_session_exact_bytes_and_offsets() -> None:
    ops = session().ops
    bus = InProcessBus()
    subscriptions = {t: bus.subscribe(t, 0) for t in TOPICS}
    publisher = BusPublisher(bus)
    publish(publisher, ops[:50])  # before start (the matchengine's replay): queued
    await publisher.start()
    publish(publisher, ops[50:])
    assert await publisher.flush(5)
    expected = expected_topics(ops)
    for topic, subscription in subscriptions.items():
        got: list[Message] = []
        while len(got) < len(expected[topic]):
            got.extend(await subscription.next_batch(100))
        assert [m.offset for m in got] == list(range(len(expected[topic])))
        assert [(m.oper_id, m.value) for m in got] == expected[topic]
        await subscription.close()
    live = bus.subscribe(DEALS)  # from the end: only new messages
    await publisher.stop()
    await live.close()
    assert await live.next_batch() == []


async def test_inprocess_mark_follows_durable_consumer_commits(tmp_path: Path) -> None:
    """With a durable consumer on deals, the mark stops before the first operation whose deal
    it has not committed; topics without durable consumers are acknowledged at once."""
    ops = session().ops
    mark = MarkFile(tmp_path / "bus.mark")
    bus = InProcessBus(mark)
    consumer = bus.subscribe(DEALS, 0, durable="mp")
    publisher = BusPublisher(bus, mark, mark_interval=0.05)
    await publisher.start()
    publish(publisher, ops)
    deals = expected_topics(ops)[DEALS]
    await wait_until_async(lambda: publisher.pending(ORDERS) == publisher.pending(BALANCES) == 0,
                           message="orders and balances acknowledged")
    assert publisher.pending(DEALS) == len(deals)
    first_deal_op = deals[0][0]
    assert publisher.current_mark().oper_id == first_deal_op - 1
    consumer.commit(99)
    await asyncio.sleep(0)
    assert publisher.pending(DEALS) == len(deals) - 100
    assert publisher.current_mark().oper_id == deals[100][0] - 1
    assert publisher.current_mark().offsets[DEALS] == 100
    await wait_until_async(lambda: mark.load() == publisher.current_mark(),
                           message="the mark file written")
    consumer.commit(len(deals) - 1)
    assert await publisher.flush(5)
    assert publisher.current_mark().oper_id == ops[-1].oper_id
    await publisher.stop()
    assert mark.load().oper_id == ops[-1].oper_id


async def test_inprocess_offsets_survive_a_restart(tmp_path: Path) -> None:
    """A new process: the bus restarts each topic at the offset stored with the mark, the
    replayed operations after the mark get back their old offsets and bytes, and a durable
    consumer resumes from its own stored offset + 1."""
    ops = session().ops
    mark = MarkFile(tmp_path / "bus.mark")
    bus = InProcessBus(mark)
    consumer = bus.subscribe(DEALS, 0, durable="mp")
    publisher = BusPublisher(bus, mark)
    await publisher.start()
    publish(publisher, ops)
    before: list[Message] = []
    while len(before) < len(expected_topics(ops)[DEALS]):
        before.extend(await consumer.next_batch())
    consumer.commit(120)  # the consumer stored up to offset 120, then the process dies
    await asyncio.sleep(0)
    await publisher.stop(timeout=0)
    stored = mark.load()
    assert stored.offsets[DEALS] == 121

    bus2 = InProcessBus(mark)
    assert bus2.end_offset(DEALS) == 121
    consumer2 = bus2.subscribe(DEALS, 121, durable="mp")
    publisher2 = BusPublisher(bus2, mark)
    assert publisher2.durable_mark() == stored.oper_id
    await publisher2.start()
    publish(publisher2, ops)  # the replay re-delivers everything; the publisher drops <= mark
    after: list[Message] = []
    while len(after) < len(before) - 121:
        after.extend(await consumer2.next_batch())
    assert after == before[121:]
    consumer2.commit(after[-1].offset)
    assert await publisher2.flush(5)
    await publisher2.stop()


async def test_inprocess_bound_when_a_durable_consumer_stalls() -> None:
    ops = session().ops
    bus = InProcessBus()
    consumer = bus.subscribe(DEALS, 0, durable="mp")
    publisher = BusPublisher(bus, max_pending=20)
    await publisher.start()
    i = 0
    while not publisher.overloaded():
        publisher.on_events(ops[i].oper_id, ops[i].events)
        i += 1
        await asyncio.sleep(0)
    assert publisher.pending(DEALS) >= 20
    consumer.commit(bus.end_offset(DEALS) - 1)
    await asyncio.sleep(0)
    assert not publisher.overloaded()
    bus.forget(DEALS, "mp")
    publish(publisher, ops[i:])
    assert await publisher.flush(5)
    await publisher.stop()


async def test_inprocess_live_subscribers_hold_messages_up_to_a_bound() -> None:
    ops = session().ops
    bus = InProcessBus(retain=10, max_behind=100)
    slow = bus.subscribe(ORDERS, 0)  # reads nothing until the end
    publisher = BusPublisher(bus)
    await publisher.start()
    publish(publisher, ops[:60])
    await asyncio.sleep(0)
    assert bus.topics[ORDERS].first == 0  # kept for the slow subscriber
    publish(publisher, ops[60:])
    await asyncio.sleep(0)
    end = bus.end_offset(ORDERS)
    assert 0 < bus.topics[ORDERS].first <= end - 100
    batch = await slow.next_batch(10_000)
    assert batch[0].offset > 0  # skipped ahead: it was more than max_behind behind
    assert batch[-1].offset == end - 1
    await slow.close()
    assert not bus.topics[ORDERS].live
    await publisher.stop()


def test_mark_file_round_trip_and_bad_content(tmp_path: Path) -> None:
    mark = MarkFile(tmp_path / "m")
    assert mark.load() == Mark()
    mark.save(Mark(42, {"deals": 7}))
    assert mark.load() == Mark(42, {"deals": 7})
    (tmp_path / "m").write_text("{not json")
    assert mark.load() == Mark()
    (tmp_path / "m").write_text('{"oper_id": -1}')
    assert mark.load() == Mark()
    assert MarkFile(None).load() == Mark()


# -- the mark in the log database (production) ----------------------------------------------------


@pytest.mark.mysql
def test_mysql_mark_round_trip_and_never_lowered(mysql_config: Callable[..., MysqlConfig],
                                                 tmp_path: Path) -> None:
    cfg = mysql_config(prefix="busmark")
    store = MysqlMark(cfg, legacy=MarkFile(tmp_path / "absent.mark"))
    assert store.load() == Mark()  # no row, no file: nothing published yet
    store.save(Mark(42, {"deals": 7}))
    other_host = MysqlMark(cfg)  # another matchengine on the same log database
    assert other_host.load() == Mark(42, {"deals": 7})
    other_host.save(Mark(40, {"deals": 5}))  # a deposed active, still flushing an older mark
    assert store.load() == Mark(42, {"deals": 7})
    other_host.save(Mark(50, {"deals": 9}))
    assert MysqlMark(cfg).load() == Mark(50, {"deals": 9})
    assert MysqlMark(cfg, name="another").load() == Mark()
    store.close()
    other_host.close()


@pytest.mark.mysql
def test_mysql_mark_takes_over_the_old_mark_file_once(mysql_config: Callable[..., MysqlConfig],
                                                      tmp_path: Path) -> None:
    """An operator upgrading: the file's mark becomes the row's (neither republishing
    everything nor skipping anything); afterwards the row wins over the file."""
    cfg = mysql_config(prefix="busmark")
    legacy = MarkFile(tmp_path / "bus.mark")
    legacy.save(Mark(1234))
    assert MysqlMark(cfg, legacy=legacy).load() == Mark(1234)
    assert MysqlMark(cfg).load() == Mark(1234)  # in the database now, whatever the host
    MysqlMark(cfg).save(Mark(2000))
    legacy.save(Mark(1500))  # a stale file is no longer read
    assert MysqlMark(cfg, legacy=legacy).load() == Mark(2000)


def test_mysql_mark_unreachable_database_is_an_error_not_mark_0(tmp_path: Path) -> None:
    """A database that is down must not read as "nothing published" (that would republish
    everything): loading fails, and the matchengine does not start."""
    legacy = MarkFile(tmp_path / "bus.mark")
    legacy.save(Mark(7))
    down = MysqlConfig(host="127.0.0.1", port=1, user="x", password="", name="x")
    with pytest.raises(MarkStoreError):
        MysqlMark(down, legacy=legacy).load()
    with pytest.raises(MarkStoreError):
        MysqlMark(down).save(Mark(8))


@pytest.mark.mysql
async def test_kafka_publisher_continues_from_the_database_mark_on_another_host(
        kafka_brokers: str, kafka_topics: Callable[[], str],
        mysql_config: Callable[..., MysqlConfig], tmp_path: Path) -> None:
    """A standby built while the active still runs reads the mark when it takes over (not
    when it was built), from the log database (its own host has no mark file), and publishes
    exactly what the active had not: the topics hold every message once, in order."""
    prefix = kafka_topics()
    cfg = mysql_config(prefix="busmark")
    ops = session().ops
    active = BusPublisher(KafkaTransport(kafka_brokers, prefix),
                          MysqlMark(cfg, legacy=MarkFile(tmp_path / "host-a" / "bus.mark")))
    standby = BusPublisher(KafkaTransport(kafka_brokers, prefix),
                           MysqlMark(cfg, legacy=MarkFile(tmp_path / "host-b" / "bus.mark")))
    await active.start()
    cut = 200
    publish(active, ops[:cut])
    await active.stop()
    assert standby.durable_mark() == ops[cut - 1].oper_id
    await standby.start()
    publish(standby, ops[100:])  # replays the tail from an older slice, then live operations
    assert await standby.flush(30)
    await standby.stop()
    assert MysqlMark(cfg).load().oper_id == ops[-1].oper_id
    expected = expected_topics(ops)
    for topic in TOPICS:
        messages = await read_kafka(kafka_brokers, prefix, topic, len(expected[topic]))
        assert [(m.oper_id, m.value) for m in messages] == expected[topic], topic


@pytest.mark.mysql
async def test_a_standby_rereads_the_mark_when_it_takes_over(
        kafka_brokers: str, kafka_topics: Callable[[], str],
        mysql_config: Callable[..., MysqlConfig]) -> None:
    """A standby restored (and so read the mark) at its start; the active published more
    afterwards: ``reload_mark`` at the takeover gives the active's last mark."""
    prefix = kafka_topics()
    cfg = mysql_config(prefix="busmark")
    ops = session().ops
    active = BusPublisher(KafkaTransport(kafka_brokers, prefix), MysqlMark(cfg))
    standby = BusPublisher(KafkaTransport(kafka_brokers, prefix), MysqlMark(cfg))
    assert standby.durable_mark() == 0  # the standby's restore, before the active publishes
    await active.start()
    publish(active, ops[:150])
    await active.stop()
    assert standby.durable_mark() == 0  # read once...
    assert standby.reload_mark().oper_id == ops[149].oper_id  # ...and again at the takeover
    assert standby.durable_mark() == ops[149].oper_id
    await standby.start()
    with pytest.raises(RuntimeError):
        standby.reload_mark()
    publish(standby, ops)
    assert await standby.flush(30)
    await standby.stop()
    expected = expected_topics(ops)
    for topic in TOPICS:
        messages = await read_kafka(kafka_brokers, prefix, topic, len(expected[topic]))
        assert [(m.oper_id, m.value) for m in messages] == expected[topic], topic


@pytest.mark.parametrize("topic", TOPICS)
def test_topics_are_the_originals(topic: str) -> None:
    assert topic in ("deals", "orders", "balances")
