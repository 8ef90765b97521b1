"""The operation log's ``detail`` text: ``{"method": ..., "params": [...]}``, exact both ways.

Why one module: both stores (SQLite, MySQL) write records, and replay and the history follower
read them.  Whatever an operation was accepted with must come back identical, because the
follower rebuilds history from it: a balance.update detail keeps the client's key order (the
original writes history details that way, me_update.c) and integers of any size.  So unlike
the original's operation log (me_operlog.c sorts keys) this codec does not sort; it is
:mod:`exchange_server.common.exactjson` (orjson, with an exact fallback for long integers).

A record that cannot be decoded is a :class:`StoreError` naming its operation id: replay and
the follower stop on it instead of retrying or skipping (docs/operations.md, "A log record that
cannot be replayed").
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson

from exchange_server.common import exactjson
from exchange_server.matchengine.store import StoreError, check_record

#: A decoded log record: (id, time, method, params), what replay feeds the methods.
LogRow = tuple[int, float, str, list[Any]]


def encode_detail(method: str, params: list[Any]) -> str:
    """The operlog ``detail`` text: compact JSON, keys in the client's order, exact integers.

    Raises ValueError when ``params`` holds something that is not a JSON value."""
    return exactjson.dumps({"method": method, "params": params}).decode()


#: exactjson's trigger for its exact (slower) parser: a run of 19 digits.
_LONG_DIGITS = re.compile(r"\d{19}")


def _loads(text: str | bytes) -> Any:
    """``exactjson.loads(text)``, with its common case inlined (replay decodes every record): a
    text too short to nest deeper than its depth limit and holding no run of 19 digits is
    exactly what orjson reads; anything else goes through exactjson itself."""
    if (type(text) is str and len(text) <= 2 * exactjson.EXACT_MAX_DEPTH
            and _LONG_DIGITS.search(text) is None):
        return orjson.loads(text)
    return exactjson.loads(text)


def decode_detail(text: str | bytes | None, oper_id: int) -> tuple[str, list[Any]]:
    """``(method, params)`` of a stored detail; StoreError if it is not a valid one."""
    if text is None:
        raise StoreError(f"operlog id {oper_id}: detail is NULL")
    try:
        obj = _loads(text)
    except ValueError as e:
        raise StoreError(f"operlog id {oper_id}: detail cannot be decoded: {e}") from None
    if (not isinstance(obj, dict) or not isinstance(obj.get("method"), str)
            or not isinstance(obj.get("params"), list)):
        raise StoreError(f"operlog id {oper_id}: detail lacks a method name or params array")
    return obj["method"], obj["params"]


#: Param types orjson reads exactly as the standard library does.  An integer beyond 64 bits
#: (the reason for exactjson's slower parser) comes out of orjson as a float, so params of only
#: these types prove the text held none, without scanning it for a run of 19 digits.
_PLAIN = frozenset({int, str, bool, type(None)})

_detail_of = itemgetter(2)
#: every ASCII digit made "0", then a search for 19 of them (exactjson's bytes test)
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_ZEROS = b"0" * 19


def _no_long_digits(rows: Sequence[tuple[Any, Any, Any, Any]]) -> bool:
    """True when every detail of ``rows`` is an ASCII str without a run of 19 digits (then
    ``_LONG_DIGITS`` finds none in any of them), tested on the page's details joined: a few
    C-level passes over one text.  Why: the per-row test of the params' types cost 3,000
    instructions a record (a call of ``type`` per param), this about a tenth of that.  False
    (then each row is tested as before) for any other page."""
    try:
        text = "".join(map(_detail_of, rows))
    except TypeError:  # a detail that is not a str
        return False
    return text.isascii() and _LONG_ZEROS not in text.encode().translate(_DIGITS_AS_ZERO)


def decode_rows(rows: Sequence[tuple[Any, Any, Any, Any]]) -> list[LogRow]:
    """Stored ``(id, time, detail, checksum)`` rows, verified and decoded, for replay.

    Why in bulk: replay reads millions of records and only needs them as plain tuples; the
    checksum is computed inline for the usual row (a float time, a str detail) and a row that
    does not match goes through :func:`~exchange_server.matchengine.store.check_record` for
    the same error as ever.  The usual detail (short, params of plain values: an order) is
    read by orjson alone, which gives what :func:`_loads` gives: on a page whose details hold
    no run of 19 digits (:func:`_no_long_digits`, the usual page) every such detail, else when
    its params are plain (see ``_PLAIN``) or its text has no such run; any other goes through
    ``_loads``' own test.

    The time's text in the inline checksum is ``orjson.dumps(t)``, not the ``repr(t)`` that
    ``record_checksum`` writes: ``repr`` of a float took 8,000 instructions (a third of
    decoding a record), orjson's 1,000.  Both are the shortest digits that read back as ``t``
    and they are written alike but for small ones (|t| < 1e-4: ``1e-05`` against
    ``0.00001``: never a log's time).  A row whose two texts differ fails the inline check and
    gets ``check_record``'s verdict, as any other row that does not match."""
    crc, dumps = zlib.crc32, orjson.dumps
    loads, search, short = orjson.loads, _LONG_DIGITS.search, 2 * exactjson.EXACT_MAX_DEPTH
    plain = _PLAIN.issuperset
    no_long = _no_long_digits(rows)
    decoded: list[LogRow] = []
    append = decoded.append
    for oper_id, t, detail, stored in rows:
        # record_checksum's CRC of the head then the detail is the CRC of the two joined: one
        # text, one encode and one crc32 call per row instead of two each; the time's text is
        # orjson's (see the docstring)
        if (type(oper_id) is not int or type(t) is not float or type(detail) is not str or (
                stored is not None
                and crc(f"{oper_id} {dumps(t).decode()} {detail}".encode()) != stored)):
            oper_id = int(oper_id)
            check_record(oper_id, t, detail, stored)  # raises unless it matches after all
            t = float(t)
            if type(detail) is not str:  # (no checksum to hold it) the other texts' way
                append((oper_id, t, *decode_detail(detail, oper_id)))
                continue
        obj = None
        if len(detail) <= short:
            try:
                obj = loads(detail)
            except ValueError:
                obj = None
        if type(obj) is dict:
            try:  # subscripts: half the cost of two get calls
                method, params = obj["method"], obj["params"]
            except KeyError:
                method = params = None
            if (type(method) is str and type(params) is list
                    and (no_long or plain(map(type, params)) or search(detail) is None)):
                append((oper_id, t, method, params))
                continue
        append((oper_id, t, *decode_detail(detail, oper_id)))  # other texts, and the errors
    return decoded
