"""``decode_rows`` checks a record's checksum with orjson's text of its time, not the ``repr``
that ``record_checksum`` wrote: the two must agree on every time a log holds, and a row where
they do not (tiny times, written with another exponent) must still be judged as before."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from exchange_server.matchengine.logcodec import decode_rows, encode_detail
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
