"""ReplayFilter (bus/dedup.py): what accessws drops when a publisher sends a range again."""

from __future__ import annotations

from exchange_server.bus.base import Message
from exchange_server.bus.dedup import ReplayFilter


def stream(*items: tuple[int | None, str]) -> list[Message]:
    return [Message(i, body.encode(), oper) for i, (oper, body) in enumerate(items)]


def bodies(messages: list[Message]) -> list[str]:
    return [m.value.decode() for m in messages]


def test_a_republished_range_is_dropped_and_new_operations_pass() -> None:
    f = ReplayFilter()
    first = stream((5, "a"), (5, "b"), (6, "c"), (7, "d"), (7, "e"))
    assert bodies(f.fresh(first)) == ["a", "b", "c", "d", "e"]
    # a new active from mark 4: operations 5..7 again, then 8
    again = stream((5, "a"), (5, "b"), (6, "c"), (7, "d"), (7, "e"), (8, "f"), (8, "g"))
    assert bodies(f.fresh(again)) == ["f", "g"]
    assert f.duplicates == 5 and f.last_oper_id == 8


def test_a_republish_starting_at_the_last_operation_seen() -> None:
    """The mark one operation behind: the newest operation comes again from its first
    message, directly after its last one (told apart by the bodies)."""
    f = ReplayFilter()
    assert bodies(f.fresh(stream((7, "d"), (7, "e")))) == ["d", "e"]
    assert bodies(f.fresh(stream((7, "d"), (7, "e"), (8, "f")))) == ["f"]


def test_an_operation_split_across_batches_and_a_resend_mid_operation() -> None:
    f = ReplayFilter()
    assert bodies(f.fresh(stream((3, "x")))) == ["x"]
    assert bodies(f.fresh(stream((3, "y"), (3, "z")))) == ["y", "z"]
    # a rebuilt producer resends from its first unacknowledged message, inside operation 3
    assert bodies(f.fresh(stream((3, "z"), (4, "w")))) == ["w"]


def test_messages_without_an_operation_id_always_pass() -> None:
    f = ReplayFilter()
    assert bodies(f.fresh(stream((None, "o"), (None, "o"), (2, "p"), (None, "o")))) == [
        "o", "o", "p", "o"]
    assert f.duplicates == 0
