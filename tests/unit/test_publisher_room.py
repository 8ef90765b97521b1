"""BusPublisher.overloaded keeps the room left below ``max_pending`` between checks instead of
counting every topic before each write: it must still say True exactly when some topic holds
``max_pending`` messages or more, through publications and acknowledgements, in both modes
(bodies written at publication, and lazy bodies for a transport that writes them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exchange_server.bus import BusPublisher
from exchange_server.bus.base import ALL_TOPICS as TOPICS
from tests.unit.test_bus_session import session


class HeldTransport:
    """Takes every message and acknowledges only when told (``ack``)."""

    stable_offsets = False

    def __init__(self, lazy: bool) -> None:
        self.lazy_bodies = lazy
        if lazy:
            self.send_all = self._send_all
        self.held: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self._acked: Callable[[str, int], None] | None = None

    def open(self, on_acked: Callable[[str, int], None], on_reset: Callable[[], None]) -> None:
        self._acked = on_acked

    def send(self, topic: str, value: bytes, oper_id: int) -> bool:
        self.held[topic] = self.held.get(topic, 0) + 1
        return True

    def _send_all(self, topic: str, items: Any) -> None:
        self.held[topic] = self.held.get(topic, 0) + len(items)

    def ack(self, topic: str, count: int) -> None:
        assert self._acked is not None
        self.held[topic] -= count
        self._acked(topic, count)

    def close(self) -> None:
        return None


def truly_overloaded(publisher: BusPublisher) -> bool:
    return any(publisher.pending(t) >= publisher.max_pending for t in TOPICS)


@pytest.mark.parametrize("lazy", [False, True])
async def test_overloaded_is_the_topic_count_through_publications_and_acks(
        lazy: bool, tmp_path: Path) -> None:
    transport = HeldTransport(lazy)
    publisher = BusPublisher(transport, tmp_path / "bus.mark", max_pending=25)  # type: ignore[arg-type]
    await publisher.start()
    ops = session().ops
    seen = {True: 0, False: 0}
    for k, op in enumerate(ops[:300]):
        publisher.on_events(op.oper_id, op.events)
        publisher._pump()  # what _pump_soon runs after the callback (lazy mode)
        if k % 40 == 39:  # acknowledgements now and then: the room grows back
            for topic in TOPICS:
                if transport.held[topic] > 5:
                    transport.ack(topic, transport.held[topic] - 5)
        verdict = publisher.overloaded()
        assert verdict == truly_overloaded(publisher), k
        seen[verdict] += 1
    assert seen[True] and seen[False]  # both answers were given and checked
    for topic in TOPICS:
        transport.ack(topic, transport.held[topic])
    assert not publisher.overloaded()
