"""bench/engine_cache.py reads cachegrind's summary into per-order figures (valgrind itself is
not needed: the summary's format is what would break the figures unnoticed)."""

from __future__ import annotations

import pytest

from bench.engine_cache import parse

#: a cachegrind summary with cache and branch simulation (valgrind 3.19, as on this machine)
SUMMARY = """\
==10883== I   refs:      6,226,381,698
==10883== I1  misses:       91,338,421
==10883== LLi misses:           49,454
==10883== I1  miss rate:          1.47%
==10883==
==10883== D   refs:      2,858,438,184  (1,986,028,694 rd   + 872,409,490 wr)
==10883== D1  misses:       52,118,763  (   47,070,295 rd   +   5,048,468 wr)
==10883== LLd misses:        2,470,145  (    1,856,622 rd   +     613,523 wr)
==10883==
==10883== LL refs:         143,457,184  (  138,408,716 rd   +   5,048,468 wr)
==10883== LL misses:         2,519,599  (    1,906,076 rd   +     613,523 wr)
==10883==
==10883== Branches:        1,080,000,000  (1,000,000,000 cond +  80,000,000 ind)
==10883== Mispredicts:        40,000,000  (   30,000,000 cond +  10,000,000 ind)
"""


def test_every_figure_is_read_from_its_own_line() -> None:
    assert parse(SUMMARY) == {
        "instructions": 6_226_381_698,
        "I1 misses": 91_338_421,
        "D1 misses": 52_118_763,
        "D1 write misses": 5_048_468,
        "LL misses": 2_519_599,
        "branches": 1_080_000_000,
        "mispredicted": 40_000_000,
    }


def test_without_branch_simulation_the_branch_figures_are_left_out() -> None:
    figures = parse(SUMMARY.split("==10883== Branches")[0])
    assert "mispredicted" not in figures and figures["LL misses"] == 2_519_599


def test_a_summary_without_instruction_count_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no instruction count"):
        parse("==1== D1  misses: 5 (4 rd + 1 wr)\n")
