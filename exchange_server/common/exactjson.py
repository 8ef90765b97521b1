"""JSON that gives back exactly what it was given: integers of any size, keys in their order.

Why: a request value travels through the operation log, the follower and the history tables,
and each hop must hand on the client's value unchanged (docs/compatibility.md: a balance.update
detail is stored in the client's key order).  orjson is fast and keeps key order, but it reads
integers beyond 64 bits as floats and refuses to write them; the standard library is exact but
slow and recursive (a value nested ~1,000 deep raises RecursionError, which used to stop the
log writer and replay).  So:

* :func:`loads` parses with orjson (which validates UTF-8 and refuses nesting beyond 1,024
  without recursing) and re-parses with the standard library only when the text holds a digit
  run of 19 or more (the only way to write an integer orjson cannot carry exactly).  Values
  nested deeper than :data:`EXACT_MAX_DEPTH` are refused (every service's own limit is far
  lower), so no reader downstream (the standard library, the history writer) can recurse into
  RecursionError on a value that came through here.
* :func:`dumps` writes with orjson and falls back to the standard library (compact, no key
  sorting) only for integers beyond 64 bits.

Every failure is a :class:`ValueError` (never TypeError or RecursionError), so callers have one
exception to turn into their protocol or storage error.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from exchange_server.common.jsondepth import json_depth

#: Deepest value re-parsed by the standard library (its recursion is safe well below this).
EXACT_MAX_DEPTH = 256

# An integer outside orjson's range (-2**63 .. 2**64-1) has at least 19 digits.  A run this long
# may also sit in a string or a float: that costs the slower parser, never exactness.
_LONG_DIGITS_TEXT = re.compile(r"\d{19}")
#: bytes: every ASCII digit made "0" (what ``\d`` matches in bytes), then a search for 19 of
#: them: two passes in C, a third of the regex's time on a request body (0.27 against 0.89 us)
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_ZEROS = b"0" * 19
#: what loads copies to bytes first; a tuple made once (``memoryview | bytearray`` in the call
#: made a union object at each one: 700 instructions per request body)
_BUFFERS = (memoryview, bytearray)


class JsonTooDeep(ValueError):
    """A value holding a long integer nested too deeply to be re-parsed exactly."""


def loads(data: bytes | bytearray | memoryview | str, *, lenient_depth: bool = False) -> Any:
    """The JSON value of ``data``, with integers of any size and object keys in their order.

    A value nested deeper than EXACT_MAX_DEPTH raises :class:`JsonTooDeep`, unless
    ``lenient_depth``: then orjson's reading is given as it is (long integers as floats).
    Request readers use that, because such params are refused by the services' much lower depth
    limit anyway, and must be answered with code 1 rather than dropped."""
    if isinstance(data, _BUFFERS):
        data = bytes(data)
    value = orjson.loads(data)  # orjson.JSONDecodeError is a ValueError
    # a text shorter than 2 * EXACT_MAX_DEPTH cannot nest deeper (the common case: no walk)
    if (len(data) > 2 * EXACT_MAX_DEPTH and _may_be_deep(data)
            and json_depth(value, EXACT_MAX_DEPTH) > EXACT_MAX_DEPTH):
        if lenient_depth:
            return value
        raise JsonTooDeep(f"JSON nested deeper than {EXACT_MAX_DEPTH}")
    if not _has_long_digits(data):
        return value
    try:
        return json.loads(data)
    except RecursionError as e:  # pragma: no cover - depth is bounded above
        raise JsonTooDeep(f"JSON nested too deeply: {e}") from None


def _has_long_digits(data: bytes | str) -> bool:
    if isinstance(data, str):
        return _LONG_DIGITS_TEXT.search(data) is not None
    # find, not ``in``: bytes' ``in`` first reads its operand as an integer (a byte value),
    # raising and clearing a TypeError: 1,100 more instructions per request body
    return data.translate(_DIGITS_AS_ZERO).find(_LONG_ZEROS) >= 0


def _may_be_deep(data: bytes | str) -> bool:
    """False when ``data`` has too few brackets to nest deeper than EXACT_MAX_DEPTH (cheap: the
    common case never walks the value)."""
    if isinstance(data, str):
        return data.count("[") + data.count("{") > EXACT_MAX_DEPTH
    return data.count(b"[") + data.count(b"{") > EXACT_MAX_DEPTH


def dumps(value: Any) -> bytes:
    """Compact JSON (UTF-8) of ``value``, keys in their order, integers exact.

    Raises ValueError for something that is not a JSON value or nests too deeply to write."""
    try:
        return orjson.dumps(value)
    except TypeError as e:
        first = e
    # orjson refuses integers beyond 64 bits (and values nested deeper than 254); the standard
    # library writes any integer exactly.  Its recursion is only entered for shallow values.
    if json_depth(value, EXACT_MAX_DEPTH) > EXACT_MAX_DEPTH:
        raise JsonTooDeep(f"cannot write JSON nested deeper than {EXACT_MAX_DEPTH}")
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode()
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"not a JSON value: {first}; {e}") from None
