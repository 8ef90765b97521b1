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

Document (JSON object), format 1::

    {"format": 1, "checksum": int | null,
     "orders": {column: [value per order], ...},      # ORDER_COLUMNS, decimals as texts
     "balances": {column: [value per balance], ...},  # BALANCE_COLUMNS, balance as text
     "updates": [[user, asset, business, business_id text, time], ...],
     "stops": [[id, t, side, ctime, mtime, user, market, source, option, client_id, state,
                *STOP_DECIMALS texts], ...],
     "config": [[kind, name, detail JSON text], ...]}
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from decimal import Decimal
from itertools import chain, islice
from operator import attrgetter, lt
from typing import Any

import orjson

from exchange_server.matchengine.core.engine import EngineState
from exchange_server.matchengine.core.model import Order
from exchange_server.matchengine.slicerows import (
    ORDER_DECIMALS,
    decode_config_detail,
    encode_config_detail,
    order_decimals,
    stop_decimals,
    stop_from_row,
)
from exchange_server.matchengine.store import SliceInfo, StoreError, decimals_of_texts

FORMAT = 1
#: The most compressed bytes in one stored chunk (MariaDB's max_allowed_packet is 16 MiB+).
CHUNK_BYTES = 1 << 20
#: zlib level: the forked slice child pays it, the restart only decompresses.
LEVEL = 1

#: The order columns after ``id`` ... ``source``: the decimals, then option and client id.
ORDER_COLUMNS = ("id", "t", "side", "create_time", "update_time", "user_id", "market", "source",
                 *ORDER_DECIMALS, "option", "client_id")
BALANCE_COLUMNS = ("user_id", "asset", "t", "balance")
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
    balances = state.balances
    document = {
        "format": FORMAT,
        "checksum": checksum,
        "orders": dict(zip(ORDER_COLUMNS, order_columns, strict=True)),
        "balances": {
            "user_id": [b[0] for b in balances], "asset": [b[1] for b in balances],
            "t": [b[2] for b in balances], "balance": [str(b[3]) for b in balances],
        },
        "updates": [[user, asset, business, str(business_id), when]
                    for user, asset, business, business_id, when in state.updates],
        "stops": [[s.id, int(s.type), int(s.side), s.ctime, s.mtime, s.user, s.market, s.source,
                   s.option, s.client_id, s.state, *[str(d) for d in stop_decimals(s)]]
                  for s in state.stops],
        "config": [[kind, name, encode_config_detail(detail)]
                   for kind, name, detail in state.config],
    }
    data = zlib.compress(orjson.dumps(document), LEVEL)
    pieces = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    return [(zlib.crc32(piece), piece) for piece in pieces]


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
        document = orjson.loads(text)
    except (zlib.error, orjson.JSONDecodeError) as e:
        raise StoreError(f"{where}: the document is damaged ({e})") from e
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StoreError(f"{where}: not a slice document of format {FORMAT}")
    if info.checksum is not None and document.get("checksum") != info.checksum:
        raise StoreError(f"{where}: the document is not the one of slice_history's checksum")
    try:
        return _state(document, info)
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError, ArithmeticError) as e:
        raise StoreError(f"{where}: the document is damaged ({e!r})") from e


def _state(document: dict[str, Any], info: SliceInfo) -> EngineState:
    state = EngineState(order_id=info.end_order_id, deal_id=info.end_deals_id)
    state.orders = _orders(document["orders"])
    balances = document["balances"]
    values = decimals_of_texts(balances["balance"])
    state.balances = list(zip(balances["user_id"], balances["asset"], balances["t"],
                              map(values.__getitem__, balances["balance"]), strict=True))
    state.updates = [(user, asset, business, int(business_id), when)
                     for user, asset, business, business_id, when in document["updates"]]
    state.stops = [stop_from_row(row[:11], [Decimal(v) for v in row[11:]])
                   for row in document["stops"]]
    state.config = [(kind, name, decode_config_detail(detail, f"config {name}"))
                    for kind, name, detail in document["config"]]
    return state


def _orders(columns: dict[str, list[Any]]) -> list[Order]:
    """The orders of the order columns: the decimal columns mapped through one dict of parsed
    texts, then the orders built a field at a time (both C-level passes over the columns)."""
    columns = _in_id_order({name: columns[name] for name in ORDER_COLUMNS})
    decimal_columns = [columns[name] for name in ORDER_DECIMALS]
    dec = decimals_of_texts(chain.from_iterable(decimal_columns)).__getitem__
    fields = {ORDER_FIELDS.get(name, name): columns[name] for name in ORDER_COLUMNS}
    fields.update((name, list(map(dec, column)))
                  for name, column in zip(ORDER_DECIMALS, decimal_columns, strict=True))
    return Order.restored_columns(fields)


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
