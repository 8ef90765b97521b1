"""The in-process bus drops the messages nobody needs (bus/memory.py ``_trim``), never one a
durable consumer has not committed, and while consumers hold everything back it does not work
that out again for every message sent."""

from __future__ import annotations

import pytest

from exchange_server.bus import DEALS, InProcessBus
from exchange_server.bus import memory as bus_memory

RETAIN = 100
#: messages between two tries while consumers hold everything back (max(16, RETAIN // 8))
RETRY = 16


def send(bus: InProcessBus, count: int) -> None:
    t = bus.topics[DEALS]
    for _ in range(count):
        bus.send_all(DEALS, [(t.end + 1, b"x", None)])


@pytest.fixture
def tries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The kept list's size at every trim that looked at the consumers."""
    seen: list[int] = []
    original = bus_memory.InProcessBus._trim

    def spy(self: InProcessBus, t: bus_memory._Topic) -> None:
        if len(t.items) >= t.trim_at:
            seen.append(len(t.items))
        original(self, t)

    monkeypatch.setattr(bus_memory.InProcessBus, "_trim", spy)
    return seen


def test_a_durable_consumer_holding_back_is_not_asked_again_for_every_message(
        tries: list[int]) -> None:
    bus = InProcessBus(retain=RETAIN)
    bus.subscribe(DEALS, 0, durable="mp")  # commits nothing for a while
    send(bus, 2000)
    t = bus.topics[DEALS]
    assert t.first == 0 and len(t.items) == 2000  # nothing uncommitted ever goes
    # from 2 * RETAIN on, a try every RETRY messages, not one per message
    assert tries[0] == 2 * RETAIN
    assert len(tries) == (2000 - 2 * RETAIN) // RETRY + 1
    assert all(b - a == RETRY for a, b in zip(tries, tries[1:], strict=False))


def test_a_commit_releases_at_once_and_trimming_resumes() -> None:
    bus = InProcessBus(retain=RETAIN)
    sub = bus.subscribe(DEALS, 0, durable="mp")
    send(bus, 1000)
    t = bus.topics[DEALS]
    assert t.first == 0
    sub.commit(499)
    assert t.first == 500 and len(t.items) == 500  # trimmed by the commit itself
    send(bus, 300)
    assert t.first == 500  # 500..799 not committed
    sub.commit(t.end - 1)
    assert len(t.items) == RETAIN  # the last RETAIN kept
    longest = 0
    for _ in range(10 * RETAIN):  # committed as they come: the list stays bounded
        send(bus, 1)
        sub.commit(t.end - 1)
        longest = max(longest, len(t.items))
    assert longest <= 2 * RETAIN


def test_without_consumers_the_list_stays_bounded() -> None:
    bus = InProcessBus(retain=RETAIN)
    send(bus, 5000)
    t = bus.topics[DEALS]
    assert RETAIN <= len(t.items) < 2 * RETAIN
    assert t.end == 5000


async def test_a_lagging_live_subscriber_holds_up_to_max_behind_then_is_skipped() -> None:
    bus = InProcessBus(retain=RETAIN, max_behind=1000)
    slow = bus.subscribe(DEALS, 0)
    send(bus, 3000)
    t = bus.topics[DEALS]
    assert 0 < t.first <= t.end - 1000  # the subscriber's messages beyond max_behind went
    assert t.end - t.first <= 2 * 1000 + RETRY  # dropped in chunks of half the list
    batch = await slow.next_batch(10_000)
    assert batch[0].offset == t.first and batch[-1].offset == 2999
    await slow.close()
