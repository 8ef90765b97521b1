"""The in-process bus's lazy bodies (bus.messages.LazyMessage): a message's text is written
from its event only when a consumer reads it, and it is then the very text the publisher would
have written (and Kafka mode still gets) at publication."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from exchange_server.bus import ALL_TOPICS, BusPublisher, InProcessBus
from exchange_server.bus import messages as bus_messages
from exchange_server.bus.base import AckCallback, Message, ResetCallback
from exchange_server.bus.dedup import ReplayFilter
from exchange_server.bus.messages import LazyMessage, published_events
from tests.unit.test_bus_session import session


class EagerTransport:
    """A transport without lazy bodies (as Kafka): records what it is sent, acknowledges at
    once."""

    stable_offsets = False

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
        self._on_acked: AckCallback | None = None

    def open(self, on_acked: AckCallback, on_reset: ResetCallback) -> None:
        self._on_acked = on_acked

    def send(self, topic: str, value: bytes, oper_id: int) -> bool:
        assert type(value) is bytes
        self.sent[topic].append((oper_id, value))
        assert self._on_acked is not None
        self._on_acked(topic, 1)
        return True

    async def close(self, timeout: float) -> None:
        return None


def expected() -> dict[str, list[tuple[int, bytes]]]:
    """Per topic, (oper_id, body) as written at publication, event after event."""
    out: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for op in session().ops:
        for topic, body, _ in published_events(op.events):
            out[topic].append((op.oper_id, body))
    return out


def read_all(bus: InProcessBus) -> dict[str, list[Message]]:
    return {t: list(bus.topics[t].items) for t in ALL_TOPICS}


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every body written (the topic's name, once per write)."""
    written: list[str] = []
    for kind, (topic, encoder) in list(bus_messages.ENCODERS.items()):
        def counted(e: Any, topic: str = topic, encoder: Callable[[Any], bytes] = encoder
                    ) -> bytes:
            written.append(topic)
            return encoder(e)
        monkeypatch.setitem(bus_messages.ENCODERS, kind, (topic, counted))
    return written


async def test_no_body_is_written_until_read_and_then_byte_identical(writes: list[str]) -> None:
    want = expected()
    writes.clear()
    bus = InProcessBus()
    publisher = BusPublisher(bus)
    await publisher.start()
    for op in session().ops:
        publisher.on_events(op.oper_id, op.events)
    assert await publisher.flush(5)
    assert writes == []
    got = read_all(bus)
    assert sum(len(v) for v in want.values()) > 300
    for topic in ALL_TOPICS:
        messages = got[topic]
        assert all(type(m) is LazyMessage for m in messages)
        assert [m.offset for m in messages] == list(range(len(want[topic])))
        assert [(m.oper_id, m.value) for m in messages] == want[topic]
    assert len(writes) == sum(len(v) for v in want.values())
    await publisher.stop()


async def test_a_transport_without_lazy_bodies_gets_the_same_bytes_at_publication(
        writes: list[str]) -> None:
    transport = EagerTransport()
    publisher = BusPublisher(transport)
    await publisher.start()
    want = expected()
    writes.clear()
    for op in session().ops:
        publisher.on_events(op.oper_id, op.events)
    assert len(writes) == sum(len(v) for v in want.values())
    assert dict(transport.sent) == dict(want)
    await publisher.stop()


async def test_replay_filter_tells_in_process_repeats_by_offset_without_writing(
        writes: list[str]) -> None:
    bus = InProcessBus()
    publisher = BusPublisher(bus)
    await publisher.start()
    for op in session().ops[:40]:
        publisher.on_events(op.oper_id, op.events)
    assert await publisher.flush(5)
    orders = read_all(bus)["orders"]
    assert len(orders) > 20
    f = ReplayFilter()
    assert f.fresh(orders[:10]) == orders[:10]
    # the same messages again (offsets already seen), then new ones
    assert f.fresh(orders[5:20]) == orders[10:20]
    assert f.duplicates == 5 and f.last_oper_id == orders[19].oper_id
    assert writes == []
    await publisher.stop()


async def test_operations_handed_over_in_one_callback_reach_the_bus_together() -> None:
    """The matchengine delivers a group commit's operations in one callback: the publisher
    hands them to the in-process bus once that callback is done, one call per topic."""
    bus = InProcessBus()
    calls: list[tuple[str, int]] = []
    send_all = bus.send_all

    def counting(topic: str, messages: Any) -> None:
        calls.append((topic, len(messages)))
        send_all(topic, messages)

    bus.send_all = counting  # type: ignore[method-assign]
    publisher = BusPublisher(bus)
    await publisher.start()
    ops = session().ops[:60]
    for op in ops:
        publisher.on_events(op.oper_id, op.events)
    assert calls == []  # not yet: after the callback
    assert await publisher.flush(5)
    want = expected()
    assert sorted(t for t, _ in calls) == sorted({t for t in ALL_TOPICS if read_all(bus)[t]})
    for topic, count in calls:
        assert count == len(read_all(bus)[topic])
        assert [(m.oper_id, m.value) for m in read_all(bus)[topic]] == [
            item for item in want[topic] if item[0] <= ops[-1].oper_id]
    await publisher.stop()
