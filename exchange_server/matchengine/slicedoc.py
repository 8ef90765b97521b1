"""A slice's whole state as one compressed, checksummed document, stored beside its tables.

Why: a restart after SIGKILL loads the newest slice, and reading it row by row (fetch each of
up to millions of order rows, parse nine decimal texts, checksum each row's text, build the
order) cost about 10 us per open order, most of the restart.  The same state as *columns* in
one JSON document loads about three times faster: orjson parses it in C, each distinct
decimal text becomes one shared Decimal through a C-level ``map``, and one CRC-32 per stored
chunk replaces a checksum per row.  The slice tables are still written, unchanged: operators
query them, and the original reads them after a rollback (docs/operations.md, "Going back").

Stored as table ``slice_state_<T>`` (id, checksum, data): the zlib-compressed document cut
into chunks of at most :data:`CHUNK_BYTES` (under MariaDB's default ``max_allowed_packet``),
each with the CRC-32 of its bytes.  The document also carries the slice's
:func:`~exchange_server.matchengine.store.state_checksum`, compared with ``slice_history``'s,
so a document can only stand for the slice it was written with.

Document (JSON object), format 2 (written since 2026-12-02; format 1 is still read)::

    {"format": 2, "checksum": int | null,
     "orders": {column: [value per order], ...},      # ORDER_COLUMNS, in id order
     "decimals": [text, ...],  # the distinct decimal texts of the orders
     "texts": [text | null, ...],  # the distinct markets, sources and client ids
     "balances": {column: [value per balance], ...},  # BALANCE_COLUMNS, balance as text
     "updates": [[user, asset, business, business_id text, time], ...],
     "stops": [[id, t, side, ctime, mtime, user, market, source, option, client_id, state,
                *STOP_DECIMALS texts], ...],
     "config": [[kind, name, detail JSON text], ...]}

In format 2 an order's decimal columns (:data:`ORDER_DECIMALS`) hold indexes into
``decimals`` and its :data:`INDEXED_TEXTS` columns indexes into ``texts``; format 1 held the
values themselves (the texts, unsorted).  Why: a restart then parses each distinct decimal
once from a list and looks the rest up by position (no hashing of 900,000 texts), and orjson
reads small integers instead of allocating a string per value (a third less to parse).

Format 3 (written since 2026-12-03; formats 1 and 2 are still read) is format 2's document
followed by a newline and a binary part: every column of plain integers (order ids, users,
sides, the indexes of format 2 ...) or floats (times) is stored there as a machine array of the
smallest type that holds it exactly (``array`` typecodes ``B H I q Q d``), and its place in the
document is ``{"array": typecode, "bytes": [start, stop]}``.  Format 3 also stores the balances'
assets and the updates' assets and businesses as indexes into ``texts``, and the updates as
columns (``UPDATE_COLUMNS``; a ``business_id`` column too large for an array is texts).  Why:
``orjson`` spent about a fifth of the load parsing numbers that ``array.frombytes`` +
``tolist`` copy at memory speed, and the document inflates to half the bytes.  A column that
does not fit an array (an int beyond 64 bits, a mix of types) stays a JSON list.  The previous
code reads a format 3 document as damaged and loads the slice's tables instead (slower, same
state).
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Sequence
from decimal import Decimal
from itertools import chain, islice
from operator import attrgetter, lt
from typing import Any

import orjson

from exchange_server.matchengine.core.engine import EngineState
from exchange_server.matchengine.core.model import OrderColumns
from exchange_server.matchengine.slicerows import (
    ORDER_DECIMALS,
    decode_config_detail,
    encode_config_detail,
    order_decimals,
    stop_decimals,
    stop_from_row,
)
from exchange_server.matchengine.store import SliceInfo, StoreError, decimals_of_texts

FORMAT = 3
#: The formats :func:`decode` reads.
FORMATS = (1, 2, 3)
#: The most compressed bytes in one stored chunk (MariaDB's max_allowed_packet is 16 MiB+).
CHUNK_BYTES = 1 << 20
#: zlib level: the forked slice child pays it, the restart only decompresses.
LEVEL = 1

#: The order columns after ``id`` ... ``source``: the decimals, then option and client id.
ORDER_COLUMNS = ("id", "t", "side", "create_time", "update_time", "user_id", "market", "source",
                 *ORDER_DECIMALS, "option", "client_id")
BALANCE_COLUMNS = ("user_id", "asset", "t", "balance")
#: Format 3's update columns (format 2: rows of these values, business_id as text).
UPDATE_COLUMNS = ("user_id", "asset", "business", "business_id", "time")
#: The array typecodes of integer columns, smallest first, with the values each holds.
INT_ARRAYS = (("B", 0, 2**8 - 1), ("H", 0, 2**16 - 1), ("I", 0, 2**32 - 1),
              ("q", -2**63, 2**63 - 1), ("Q", 0, 2**64 - 1))
#: Every typecode a format 3 column may name.
ARRAY_CODES = frozenset(code for code, _, _ in INT_ARRAYS) | {"d"}
#: The order columns of strings (or null) that format 2 stores as indexes into ``texts``.
INDEXED_TEXTS = ("market", "source", "client_id")
#: The order columns of indexes (into ``decimals`` or ``texts``) in formats 2 and 3.
INDEX_COLUMNS = frozenset(ORDER_DECIMALS + INDEXED_TEXTS)
#: The Order fields of the order columns not named as the field.
ORDER_FIELDS = {"t": "type", "create_time": "ctime", "update_time": "mtime", "user_id": "user"}

_by_id = attrgetter("id")

#: One stored chunk: (checksum, data).
Chunk = tuple[int, bytes]


def encode(state: EngineState, checksum: int | None) -> list[Chunk]:
    """The chunks that store ``state`` (``checksum``: its state_checksum, or None)."""
    # in id order: the restart builds the orders in document order, and filing them in the
    # book in id order then walks memory in order (in book order, cache misses cost 2x)
    orders = sorted(state.orders, key=_by_id)
    texts = [[str(d) for d in order_decimals(o)] for o in orders]
    order_columns: list[list[Any]] = [
        [o.id for o in orders], [int(o.type) for o in orders], [int(o.side) for o in orders],
        [o.ctime for o in orders], [o.mtime for o in orders], [o.user for o in orders],
        [o.market for o in orders], [o.source for o in orders],
        *([row[i] for row in texts] for i in range(len(ORDER_DECIMALS))),
        [o.option for o in orders], [o.client_id for o in orders],
    ]
    columns = dict(zip(ORDER_COLUMNS, order_columns, strict=True))
    decimals = _indexed(columns, ORDER_DECIMALS)
    balances = state.balances
    balance_columns: dict[str, list[Any]] = {
        "user_id": [b[0] for b in balances], "asset": [b[1] for b in balances],
        "t": [b[2] for b in balances], "balance": [str(b[3]) for b in balances]}
    updates = state.updates
    update_columns: dict[str, list[Any]] = {
        name: [u[i] for u in updates] for i, name in enumerate(UPDATE_COLUMNS)}
    # one list of texts for the three tables' text columns
    text_columns = {**{name: columns[name] for name in INDEXED_TEXTS},
                    "balance asset": balance_columns["asset"],
                    "update asset": update_columns["asset"],
                    "business": update_columns["business"]}
    texts = _indexed(text_columns, list(text_columns))
    columns.update((name, text_columns[name]) for name in INDEXED_TEXTS)
    balance_columns["asset"] = text_columns["balance asset"]
    update_columns["asset"] = text_columns["update asset"]
    update_columns["business"] = text_columns["business"]
    blob = bytearray()
    packed_updates = {name: _packed(column, blob) for name, column in update_columns.items()}
    if isinstance(packed_updates["business_id"], list):  # beyond 64 bits: as texts
        packed_updates["business_id"] = list(map(str, update_columns["business_id"]))
    document: dict[str, Any] = {
        "format": FORMAT,
        "checksum": checksum,
        "byteorder": sys.byteorder,
        "orders": {name: _packed(column, blob) for name, column in columns.items()},
        "decimals": decimals,
        "texts": texts,
        "balances": {name: column if name == "balance" else _packed(column, blob)
                     for name, column in balance_columns.items()},
        "updates": packed_updates,
        "stops": [[s.id, int(s.type), int(s.side), s.ctime, s.mtime, s.user, s.market, s.source,
                   s.option, s.client_id, s.state, *[str(d) for d in stop_decimals(s)]]
                  for s in state.stops],
        "config": [[kind, name, encode_config_detail(detail)]
                   for kind, name, detail in state.config],
    }
    compress = zlib.compressobj(LEVEL)
    data = compress.compress(orjson.dumps(document)) + compress.compress(b"\n")
    data += compress.compress(blob) + compress.flush()
    pieces = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    return [(zlib.crc32(piece), piece) for piece in pieces]


def _array_code(column: list[Any]) -> str | None:
    """The smallest array typecode that holds every value of ``column`` exactly, or None (an
    empty column, a value of another type than int or float, an int beyond 64 bits)."""
    kinds = set(map(type, column))
    if kinds == {float}:
        return "d"
    if kinds != {int}:  # bool, None, str, a mix, or nothing
        return None
    low, high = min(column), max(column)
    return next((code for code, least, most in INT_ARRAYS if least <= low and high <= most),
                None)


def _packed(column: list[Any], blob: bytearray) -> list[Any] | dict[str, Any]:
    """``column`` appended to ``blob`` as an array, and its reference; or the column itself if
    no array holds it exactly."""
    code = _array_code(column)
    if code is None:
        return column
    start = len(blob)
    blob += array(code, column).tobytes()
    return {"array": code, "bytes": [start, len(blob)]}


def _unpacked(column: list[Any] | dict[str, Any], blob: memoryview, swap: bool,
              as_list: bool = True) -> Sequence[Any]:
    """The values of a column as :func:`_packed` stored it (ValueError if its reference is
    not one: an unknown typecode, bytes outside the binary part or not whole items); with
    ``as_list`` False, an array stays one (a column of indexes, only mapped through its list:
    no list of the indexes made on the way)."""
    if type(column) is list:
        return column
    if not isinstance(column, dict):
        raise ValueError(f"a column is neither a list nor an array: {column!r}")
    code = column["array"]
    start, stop = column["bytes"]
    if code not in ARRAY_CODES or not 0 <= start <= stop <= len(blob):
        raise ValueError(f"a column's array is not in the document: {column!r}")
    values = array(code)
    values.frombytes(blob[start:stop])
    if swap:
        values.byteswap()
    return values.tolist() if as_list else values


def _indexed(columns: dict[str, list[Any]], names: Sequence[str]) -> list[Any]:
    """The distinct values of the ``names`` columns (first seen first); each of those columns
    replaced by the indexes of its values in that list."""
    values = dict.fromkeys(chain.from_iterable(columns[name] for name in names))
    position = {value: i for i, value in enumerate(values)}
    for name in names:
        columns[name] = list(map(position.__getitem__, columns[name]))
    return list(values)


def decode(chunks: Sequence[Chunk], info: SliceInfo, where: str) -> EngineState:
    """The state stored in ``chunks`` (in id order) for the slice ``info``; StoreError naming
    ``where`` if a chunk is damaged or missing, or the document is not this slice's."""
    for number, (checksum, piece) in enumerate(chunks, 1):
        if zlib.crc32(piece) != checksum:
            raise StoreError(f"{where}: chunk {number} is damaged (checksum mismatch)")
    try:
        inflate = zlib.decompressobj()
        text = inflate.decompress(b"".join(piece for _, piece in chunks))
        if not inflate.eof:
            raise StoreError(f"{where}: the document is cut short (a chunk is missing)")
        # format 3: the JSON document, a newline (orjson writes none), the binary part
        end = text.find(b"\n")
        view = memoryview(text)
        document = orjson.loads(text if end < 0 else view[:end])
        blob = view[len(view):] if end < 0 else view[end + 1:]
    except (zlib.error, orjson.JSONDecodeError) as e:
        raise StoreError(f"{where}: the document is damaged ({e})") from e
    if not isinstance(document, dict) or document.get("format") not in FORMATS:
        raise StoreError(f"{where}: not a slice document of format {FORMATS}")
    if info.checksum is not None and document.get("checksum") != info.checksum:
        raise StoreError(f"{where}: the document is not the one of slice_history's checksum")
    if document["format"] < 3 and end >= 0:
        raise StoreError(f"{where}: the document is damaged (data after it)")
    try:
        if document["format"] == 3:
            return _state_3(document, info, blob)
        return _state(document, info)
    except StoreError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError) as e:
        raise StoreError(f"{where}: the document is damaged ({e!r})") from e


def _state(document: dict[str, Any], info: SliceInfo) -> EngineState:
    state = EngineState(order_id=info.end_order_id, deal_id=info.end_deals_id)
    columns = (_orders(document["orders"]) if document["format"] == 1
               else _indexed_orders(document))
    state.orders, state.order_columns = columns.orders(), columns
    balances = document["balances"]
    values = decimals_of_texts(balances["balance"])
    state.balances = list(zip(balances["user_id"], balances["asset"], balances["t"],
                              map(values.__getitem__, balances["balance"]), strict=True))
    state.updates = [(user, asset, business, int(business_id), when)
                     for user, asset, business, business_id, when in document["updates"]]
    return _with_stops_and_config(state, document)


def _with_stops_and_config(state: EngineState, document: dict[str, Any]) -> EngineState:
    """``state`` with the document's stops and runtime config (stored alike in every format)."""
    state.stops = [stop_from_row(row[:11], [Decimal(v) for v in row[11:]])
                   for row in document["stops"]]
    state.config = [(kind, name, decode_config_detail(detail, f"config {name}"))
                    for kind, name, detail in document["config"]]
    return state


def _state_3(document: dict[str, Any], info: SliceInfo, blob: memoryview) -> EngineState:
    """The state of a format 3 document whose binary part is ``blob``."""
    if document["byteorder"] not in ("little", "big"):
        raise ValueError(f"unknown byte order {document['byteorder']!r}")
    swap = document["byteorder"] != sys.byteorder
    texts = document["texts"]
    text = texts.__getitem__
    columns = {name: _unpacked(column, blob, swap, name not in INDEX_COLUMNS)
               for name, column in document["orders"].items()}
    state = EngineState(order_id=info.end_order_id, deal_id=info.end_deals_id)
    order_columns = _indexed_orders({**document, "orders": columns})
    state.orders, state.order_columns = order_columns.orders(), order_columns
    balances = {name: _unpacked(document["balances"][name], blob, swap, name != "asset")
                for name in BALANCE_COLUMNS}
    if not set(map(type, balances["balance"])) <= {str}:  # Decimal(float) is inexact
        raise ValueError("a balance is not a text")
    # parsed one by one: balances are nearly all distinct (sharing one Decimal per text
    # costs two hashes per balance for little)
    state.balances = list(zip(balances["user_id"], map(text, balances["asset"]), balances["t"],
                              map(Decimal, balances["balance"]), strict=True))
    updates = {name: _unpacked(document["updates"][name], blob, swap,
                               name not in ("asset", "business"))
               for name in UPDATE_COLUMNS}
    business_ids = updates["business_id"]
    if type(document["updates"]["business_id"]) is list:  # texts (ints beyond 64 bits)
        business_ids = list(map(int, business_ids))
    state.updates = list(zip(updates["user_id"], map(text, updates["asset"]),
                             map(text, updates["business"]), business_ids, updates["time"],
                             strict=True))
    return _with_stops_and_config(state, document)


def _orders(columns: dict[str, list[Any]]) -> OrderColumns:
    """The order columns of a format 1 document, in id order: the decimal columns mapped
    through one dict of parsed texts."""
    columns = _in_id_order({name: columns[name] for name in ORDER_COLUMNS})
    decimal_columns = [columns[name] for name in ORDER_DECIMALS]
    dec = decimals_of_texts(chain.from_iterable(decimal_columns)).__getitem__
    fields = {ORDER_FIELDS.get(name, name): columns[name] for name in ORDER_COLUMNS}
    fields.update((name, list(map(dec, column)))
                  for name, column in zip(ORDER_DECIMALS, decimal_columns, strict=True))
    return OrderColumns(**fields)


def _indexed_orders(document: dict[str, Any]) -> OrderColumns:
    """The order columns of a format 2 or 3 document (its columns as lists): each distinct
    decimal parsed once, every indexed column mapped through its list by position (C-level
    passes).  The columns are in id order (:func:`encode` sorts them)."""
    columns = document["orders"]
    if len({len(columns[name]) for name in ORDER_COLUMNS}) > 1:
        raise ValueError("order columns of different lengths")
    if not set(map(type, document["decimals"])) <= {str}:  # Decimal(float) is inexact
        raise ValueError("a decimal is not a text")
    decimals = list(map(Decimal, document["decimals"]))
    texts = document["texts"]
    fields = {ORDER_FIELDS.get(name, name): columns[name] for name in ORDER_COLUMNS}
    fields.update((name, list(map(decimals.__getitem__, columns[name])))
                  for name in ORDER_DECIMALS)
    fields.update((name, list(map(texts.__getitem__, columns[name])))
                  for name in INDEXED_TEXTS)
    return OrderColumns(**fields)


def _in_id_order(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The order columns sorted by id (a document written before :func:`encode` sorted them
    is in book order).  Why: the orders are allocated in column order, and the book is built
    in id order; walking them in memory order is about twice as fast.  ValueError if the
    columns are not all of one length."""
    if len({len(column) for column in columns.values()}) > 1:
        raise ValueError("order columns of different lengths")
    ids = columns["id"]
    if all(map(lt, ids, islice(ids, 1, None))):
        return columns
    index = sorted(range(len(ids)), key=ids.__getitem__)
    return {name: list(map(column.__getitem__, index)) for name, column in columns.items()}
