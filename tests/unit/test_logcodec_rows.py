"""``decode_rows`` checks a record's checksum with orjson's text of its time, not the ``repr``
that ``record_checksum`` wrote: the two must agree on every time a log holds, and a row where
they do not (tiny times, written with another exponent) must still be judged as before."""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest

from exchange_server.matchengine.logcodec import decode_detail, decode_rows, encode_detail
from exchange_server.matchengine.store import StoreError, record_checksum

ORDER = ["limit_order", [7, "BTCBCH", 1, "0.90", "99.6", "0.002", "0.001", "bench"]]

#: times whose orjson text is repr's, and tiny ones whose text is not (``1e-05``/``0.00001``)
TIMES = [1_800_000_000.0001, 1_764_633_600.123456, 1.0, 0.1, 1e16, 1.7e308, -0.0,
         1e-05, 4.451317714690311e-08, 5e-324]


def _row(oper_id: int, t: float, method: str, params: list[object]) -> tuple[int, float, str, int]:
    detail = encode_detail(method, params)
    return oper_id, t, detail, record_checksum(oper_id, t, detail)


def test_orjson_writes_a_logs_times_as_repr_does() -> None:
    rng = random.Random(15)
    times = [rng.uniform(1e9, 3e9) for _ in range(20_000)]
    times += [round(t, 6) for t in times[:5000]] + [1e-4, 0.5, 123.0, 1e15]
    assert [orjson.dumps(t).decode() for t in times] == [repr(t) for t in times]


@pytest.mark.parametrize("t", TIMES)
def test_a_sound_row_decodes_whatever_the_text_of_its_time(t: float) -> None:
    rows = [_row(1, t, *ORDER), _row(2, t, "update_balance", [1, "BTC", "deposit", 2, "1", {}])]
    assert decode_rows(rows) == [(1, t, *ORDER), (2, t, "update_balance",
                                                  [1, "BTC", "deposit", 2, "1", {}])]


@pytest.mark.parametrize("t", TIMES)
def test_a_changed_row_is_an_error_naming_it_whatever_the_text_of_its_time(t: float) -> None:
    oper_id, when, detail, stored = _row(3, t, *ORDER)
    for damaged in [(oper_id, when, detail.replace("0.90", "0.91"), stored),
                    (oper_id, math.nextafter(when, math.inf), detail, stored),
                    (oper_id, when, detail, stored ^ 1)]:
        with pytest.raises(StoreError, match="id 3 is damaged"):
            decode_rows([_row(1, 1.5, *ORDER), damaged])


#: details whose params orjson alone reads exactly or not: long integers (nested and not), a
#: 19-digit run in a string and in a float, non-ASCII digits, deep nesting, damaged texts
DETAILS = [
    encode_detail(*ORDER),
    encode_detail("update_balance", [1, "BTC", "deposit", 2, "1", {}]),
    encode_detail("update_balance", [1, "BTC", "deposit", 2**64 - 1, "1", {"a": 2**70}]),
    encode_detail("update_balance", [1, "BTC", "deposit", 3, "1", {"a": [-2**63 - 1]}]),
    encode_detail("x", [{"s": "12345678901234567890", "f": 1.5}]),
    encode_detail("x", [1.2345678901234567891, {"n": 1e300}]),
    encode_detail("x", ["\u0661" * 19, 0.5, [1]]),
    encode_detail("x", [2**70]),
    '{"method":"x","params":[' + "[" * 300 + "]" * 300 + "]}",
    '{"method":"x","params":[1,',
    '{"method":"x"}',
    '["x", []]',
]


def _reference(rows: list[tuple[int, float, Any, int | None]]) -> list[object]:
    """Each row decoded alone by ``decode_detail``, or its error's text."""
    out: list[object] = []
    for oper_id, t, detail, _ in rows:
        try:
            out.append((oper_id, t, *decode_detail(detail, oper_id)))
        except StoreError as e:
            return [*out, str(e)]
    return out


def _decoded(rows: list[tuple[int, float, Any, int | None]]) -> list[object]:
    try:
        return list(decode_rows(rows))
    except StoreError as e:
        return [str(e)]


@pytest.mark.parametrize("seed", range(40))
def test_a_page_decodes_as_each_of_its_rows_alone(seed: int) -> None:
    """Whatever a page holds besides orders (a long integer, a run of 19 digits, non-ASCII
    text), each row comes out as ``decode_detail`` reads it alone, integers exact (the page's
    shared test for runs of digits only spares the per-row ones)."""
    rng = random.Random(seed)
    details = [encode_detail(*ORDER)] * rng.randint(0, 5) + rng.sample(DETAILS, rng.randint(1, 4))
    rng.shuffle(details)
    rows: list[tuple[int, float, Any, int | None]] = [
        (i, 1.5, d, record_checksum(i, 1.5, d)) for i, d in enumerate(details, 1)]
    if seed % 4 == 0:  # a detail as bytes, and one not a text at all, both unchecked
        rows.insert(rng.randint(0, len(rows)), (len(rows) + 1, 1.5, details[0].encode(), None))
    if seed % 8 == 4:
        rows.insert(rng.randint(0, len(rows)), (len(rows) + 1, 1.5, 7, None))
    expected = _reference(rows)
    got = _decoded(rows)
    if expected and isinstance(expected[-1], str):  # an error stops the page
        assert got == [expected[-1]]
    else:
        assert repr(got) == repr(expected)  # repr: 2**70 and its float are == but not alike
