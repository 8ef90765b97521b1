"""exactjson re-parses a text with the exact parser when it holds a run of 19 digits; for bytes
that check is a translate and a search instead of a regex: the same answer for any bytes."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_server.common import exactjson
from exchange_server.common.exactjson import _has_long_digits

_REGEX = re.compile(rb"\d{19}")

pieces = st.one_of(st.binary(max_size=8), st.sampled_from([b"0", b"9", b"5" * 18, b"1" * 19]),
                   st.text("0123456789٠١", max_size=25).map(str.encode))


@settings(max_examples=500)
@given(st.lists(pieces, max_size=12).map(b"".join))
def test_long_digits_in_bytes_as_the_regex_finds_them(data: bytes) -> None:
    assert _has_long_digits(data) == (_REGEX.search(data) is not None)


def test_a_long_integer_is_read_exactly_from_bytes() -> None:
    assert exactjson.loads(b'{"a": [18446744073709551616, 1]}') == {
        "a": [18446744073709551616, 1]}
    assert exactjson.loads(b'["1234567890123456789", 123456789012345678]') == [
        "1234567890123456789", 123456789012345678]


def test_buffers_are_read_as_their_bytes() -> None:
    text = b'{"a": [18446744073709551616, 1]}'
    for data in (memoryview(text), bytearray(text)):
        assert exactjson.loads(data) == {"a": [18446744073709551616, 1]}
