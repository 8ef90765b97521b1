"""floattext: a float's text is float.__repr__'s, whether remembered or not, and a remembered
text is only ever given for the very object it was made from."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from exchange_server.common import floattext
from exchange_server.common.floattext import float_text, known_text
from exchange_server.matchengine.store import record_checksum


@given(st.floats(allow_nan=False))
def test_texts_are_repr_remembered_or_not(value: float) -> None:
    assert known_text(value) == repr(value)
    assert float_text(value) == repr(value)
    assert float_text(value) == repr(value)  # the remembered one
    assert known_text(value) == repr(value)


def test_an_equal_float_of_another_identity_gets_its_own_text() -> None:
    first = float("1800000000.5")
    float_text(first)
    floattext.TEXTS[id(first)] = (first, "not the text")  # what a stale entry would give
    other = float("1800000000.5")
    assert other is not first
    assert known_text(other) == float_text(other) == "1800000000.5"
    assert known_text(first) == "not the text"  # the entry is read by identity alone
    floattext.TEXTS.clear()


def test_the_table_starts_again_when_full() -> None:
    floattext.TEXTS.clear()
    kept = [float(i) + 0.5 for i in range(floattext.TEXTS_MAX + 1)]
    for value in kept:
        float_text(value)
    assert len(floattext.TEXTS) == 1
    assert float_text(kept[0]) == "0.5"


def test_a_record_checksum_is_the_same_with_its_time_remembered_or_not() -> None:
    detail = '{"method": "order.put_limit", "params": [1]}'
    when = 1_800_000_000.0 + 1 / 3

    def plain(oper_id: int, t: float) -> int:
        return zlib.crc32(f"{oper_id} {float(t)!r} {detail}".encode())

    assert record_checksum(7, when, detail) == plain(7, when)
    float_text(when)
    assert record_checksum(7, when, detail) == plain(7, when)
    assert record_checksum(7, 1_800_000_000, detail) == plain(7, 1_800_000_000)
