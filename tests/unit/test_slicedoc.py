"""The slice document gives back exactly the state it was made from, or a clear StoreError.

Why: a restart reads the document instead of the slice's tables (slicedoc), so it must hold
every value exactly (Decimal exponents, ids up to 2**63 - 1, subnormal times, unicode), and any
damage (a changed byte, a lost chunk, a document of another slice) must be refused by name, so
that the store falls back to the tables instead of loading a wrong book.
"""

from __future__ import annotations

import random
import sys
import zlib
from array import array
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from exchange_server.matchengine import slicedoc
from exchange_server.matchengine.store import SliceInfo, StoreError, state_checksum
from tests.integration.test_store import assert_same_state, make_state

INFO = SliceInfo(1_700_000_000, 10, 0, 0)
DATA = Path(__file__).resolve().parent.parent / "data"


def info_for(checksum: int | None) -> SliceInfo:
    state = make_state(seed=4, orders=300, balances=200, updates=50)
    return SliceInfo(INFO.time, INFO.end_oper_id, state.order_id, state.deal_id, checksum)


def test_round_trip_is_exact() -> None:
    state = make_state(seed=4, orders=300, balances=200, updates=50)
    checksum = state_checksum(state)
    chunks = slicedoc.encode(state, checksum)
    got = slicedoc.decode(chunks, info_for(checksum), "here")
    assert_same_state(got, state)
    assert state_checksum(got) == checksum


def test_an_empty_state_round_trips() -> None:
    state = make_state(seed=1, orders=0, balances=0, updates=0)
    state.orders.clear()
    state.balances.clear()
    state.updates.clear()
    got = slicedoc.decode(slicedoc.encode(state, None), info_for(None), "here")
    assert (got.orders, got.balances, got.updates, got.stops, got.config) == ([], [], [], [], [])


@pytest.fixture
def chunked(monkeypatch: pytest.MonkeyPatch) -> tuple[list[slicedoc.Chunk], SliceInfo]:
    """A document cut into several small chunks."""
    monkeypatch.setattr(slicedoc, "CHUNK_BYTES", 4096)
    state = make_state(seed=4, orders=300, balances=200, updates=50)
    checksum = state_checksum(state)
    chunks = slicedoc.encode(state, checksum)
    assert len(chunks) > 3
    return chunks, info_for(checksum)


def test_several_chunks_round_trip(chunked: tuple[list[slicedoc.Chunk], SliceInfo]) -> None:
    chunks, info = chunked
    got = slicedoc.decode(chunks, info, "here")
    assert len(got.orders) == 300


def test_a_changed_byte_names_its_chunk(chunked: tuple[list[slicedoc.Chunk], SliceInfo]) -> None:
    chunks, info = chunked
    crc, data = chunks[2]
    chunks[2] = (crc, data[:10] + bytes([data[10] ^ 1]) + data[11:])
    with pytest.raises(StoreError, match="here: chunk 3 is damaged"):
        slicedoc.decode(chunks, info, "here")


def test_a_lost_last_chunk_is_a_document_cut_short(
        chunked: tuple[list[slicedoc.Chunk], SliceInfo]) -> None:
    chunks, info = chunked
    with pytest.raises(StoreError, match="cut short"):
        slicedoc.decode(chunks[:-1], info, "here")


def test_a_lost_middle_chunk_is_damaged(
        chunked: tuple[list[slicedoc.Chunk], SliceInfo]) -> None:
    chunks, info = chunked
    with pytest.raises(StoreError, match="here: "):
        slicedoc.decode(chunks[:1] + chunks[2:], info, "here")


def test_the_document_of_another_slice_is_refused(
        chunked: tuple[list[slicedoc.Chunk], SliceInfo]) -> None:
    chunks, info = chunked
    other = SliceInfo(info.time, info.end_oper_id, info.end_order_id, info.end_deals_id,
                      (info.checksum or 0) ^ 1)
    with pytest.raises(StoreError, match="not the one of slice_history"):
        slicedoc.decode(chunks, other, "here")


def test_a_document_of_another_format_is_refused() -> None:
    data = zlib.compress(b'{"format": 4}')
    with pytest.raises(StoreError, match=r"not a slice document of format \(1, 2, 3\)"):
        slicedoc.decode([(zlib.crc32(data), data)], info_for(None), "here")


def parts_of(chunks: list[slicedoc.Chunk]) -> tuple[dict[str, Any], bytes]:
    """A format 3 document as stored: its JSON part and its binary part."""
    head, newline, blob = zlib.decompress(b"".join(p for _, p in chunks)).partition(b"\n")
    assert newline
    return cast(dict[str, Any], orjson.loads(head)), blob


def arrays_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The references of the document's columns stored as arrays."""
    return [column for table in ("orders", "balances", "updates")
            for column in document[table].values() if isinstance(column, dict)]


def document_of(chunks: list[slicedoc.Chunk]) -> dict[str, Any]:
    """A format 3 document with every array column as a JSON list (also a valid document)."""
    document, blob = parts_of(chunks)
    for table in ("orders", "balances", "updates"):
        document[table] = {name: slicedoc._unpacked(column, memoryview(blob), False)
                           for name, column in document[table].items()}
    return document


def chunks_of(document: dict[str, Any], blob: bytes | None = None) -> list[slicedoc.Chunk]:
    data = zlib.compress(orjson.dumps(document) + (b"" if blob is None else b"\n" + blob))
    return [(zlib.crc32(data), data)]


def test_format_3_indexes_the_decimals_and_texts_and_packs_numbers() -> None:
    state = make_state(seed=4, orders=300, balances=20, updates=5)
    chunks = slicedoc.encode(state, None)
    packed, _ = parts_of(chunks)
    assert packed["format"] == 3
    # every order column is numbers or indexes: all in the binary part, none in the JSON
    assert all(isinstance(packed["orders"][name], dict) for name in slicedoc.ORDER_COLUMNS)
    assert packed["orders"]["side"]["array"] == "B"  # the smallest type that holds them
    assert packed["orders"]["create_time"]["array"] == "d"
    document = document_of(chunks)
    columns = document["orders"]
    assert columns["id"] == sorted(o.id for o in state.orders)  # written in id order
    assert all(type(i) is int for name in slicedoc.ORDER_DECIMALS for i in columns[name])
    assert len(document["decimals"]) == len(set(document["decimals"]))
    assert {document["texts"][i] for i in columns["market"]} == {o.market for o in state.orders}
    assert ({document["texts"][i] for i in document["balances"]["asset"]}
            == {b[1] for b in state.balances})


def test_a_document_without_its_binary_part_loads_the_same() -> None:
    """Every column may be a JSON list instead (as one that no array holds exactly)."""
    state = make_state(seed=4, orders=300, balances=200, updates=50)
    checksum = state_checksum(state)
    got = slicedoc.decode(chunks_of(document_of(slicedoc.encode(state, checksum))),
                          info_for(checksum), "here")
    assert_same_state(got, state)


def test_values_no_array_holds_round_trip_exactly() -> None:
    """An int beyond 64 bits (texts), an int time among floats (a JSON list), a negative
    option (a signed array): exact."""
    state = make_state(seed=4, orders=30, balances=20, updates=5)
    state.orders[5].ctime = 5  # type: ignore[assignment]
    state.orders[6].option = -1
    state.updates.append((3, "BTC", "deposit", 2**64, 1.5))
    document, _ = parts_of(slicedoc.encode(state, None))
    assert isinstance(document["orders"]["create_time"], list)
    assert document["orders"]["option"]["array"] == "q"
    assert document["updates"]["business_id"][-1] == str(2**64)
    assert_same_state(slicedoc.decode(slicedoc.encode(state, None), info_for(None), "here"),
                      state)


def test_a_document_of_the_other_byte_order_loads_the_same() -> None:
    state = make_state(seed=4, orders=300, balances=200, updates=50)
    checksum = state_checksum(state)
    document, blob = parts_of(slicedoc.encode(state, checksum))
    swapped = bytearray(blob)
    for column in arrays_of(document):
        start, stop = column["bytes"]
        values = array(column["array"], blob[start:stop])
        values.byteswap()
        swapped[start:stop] = values.tobytes()
    document["byteorder"] = "big" if sys.byteorder == "little" else "little"
    assert swapped != blob
    got = slicedoc.decode(chunks_of(document, bytes(swapped)), info_for(checksum), "here")
    assert_same_state(got, state)


def test_a_format_2_document_written_by_the_previous_version_still_loads() -> None:
    """tests/data/slice_document_format2.zlib: the document f04c9d3 (main of 2026-12-03,
    format 2) wrote for this state; a slice written before an upgrade loads unchanged."""
    state = make_state(seed=4, orders=300, balances=200, updates=50)
    checksum = state_checksum(state)
    data = (DATA / "slice_document_format2.zlib").read_bytes()
    assert orjson.loads(zlib.decompress(data))["format"] == 2
    got = slicedoc.decode([(zlib.crc32(data), data)], info_for(checksum), "here")
    state.orders.sort(key=lambda o: o.id)
    assert_same_state(got, state)
    assert state_checksum(got) == checksum


def format_2(document: dict[str, Any]) -> dict[str, Any]:
    """A format 3 document (its columns as lists) as format 2 had it: balance assets as texts,
    updates as rows with their business ids as texts."""
    texts = document["texts"]
    balances = dict(document["balances"], asset=[texts[i] for i in document["balances"]["asset"]])
    u = document["updates"]
    updates = [[user, texts[asset], texts[business], str(business_id), when]
               for user, asset, business, business_id, when in zip(
                   u["user_id"], u["asset"], u["business"], u["business_id"], u["time"],
                   strict=True)]
    old = {k: v for k, v in document.items() if k != "byteorder"}
    return {**old, "format": 2, "balances": balances, "updates": updates}


def test_a_format_2_document_still_loads() -> None:
    state = make_state(seed=4, orders=300, balances=200, updates=50)
    checksum = state_checksum(state)
    old = format_2(document_of(slicedoc.encode(state, checksum)))
    got = slicedoc.decode(chunks_of(old), info_for(checksum), "here")
    assert_same_state(got, state)


def format_1(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The document as the version before that wrote it: values in the columns, book order."""
    document = format_2(document)
    columns = dict(document["orders"])
    for name in slicedoc.ORDER_DECIMALS:
        columns[name] = [document["decimals"][i] for i in columns[name]]
    for name in slicedoc.INDEXED_TEXTS:
        columns[name] = [document["texts"][i] for i in columns[name]]
    order = list(range(len(columns["id"])))
    rng.shuffle(order)
    columns = {name: [column[i] for i in order] for name, column in columns.items()}
    old = {k: v for k, v in document.items() if k not in ("decimals", "texts")}
    return {**old, "format": 1, "orders": columns}


def test_a_format_1_document_still_loads() -> None:
    """A slice written by the previous version (values in the columns, orders in book order)
    gives the same state, orders in id order."""
    state = make_state(seed=4, orders=300, balances=200, updates=50)
    checksum = state_checksum(state)
    old = format_1(document_of(slicedoc.encode(state, checksum)), random.Random(1))
    got = slicedoc.decode(chunks_of(old), info_for(checksum), "here")
    assert [o.id for o in got.orders] == sorted(o.id for o in state.orders)
    state.orders.sort(key=lambda o: o.id)
    assert_same_state(got, state)


@pytest.mark.parametrize("damage", [
    "index out of range", "decimal not a text", "column short", "format 1 column short",
    "array short", "array outside", "array of no type", "array of a float index",
    "text index out of range", "bytes after a format 2 document", "balance not a text"])
def test_a_well_formed_but_wrong_document_is_a_store_error(damage: str) -> None:
    """Damage the chunk checksums cannot see (a document written wrong) is refused by name,
    never a crash or a wrong order."""
    state = make_state(seed=4, orders=50, balances=5, updates=5)
    document = document_of(slicedoc.encode(state, None))
    columns = document["orders"]
    if damage == "index out of range":
        columns["price"][3] = len(document["decimals"])
    elif damage == "decimal not a text":
        document["decimals"][0] = 1.5
    elif damage == "column short":
        columns["client_id"].pop()
    elif damage == "format 1 column short":
        document = format_1(document, random.Random(2))
        document["orders"]["left"].pop()
    elif damage == "balance not a text":
        document["balances"]["balance"][0] = 1.5
    elif damage == "text index out of range":
        document["balances"]["asset"][0] = len(document["texts"])
    if damage == "bytes after a format 2 document":
        chunks = chunks_of(format_2(document), b"\x00")
    elif damage.startswith("array"):
        document, blob = parts_of(slicedoc.encode(state, None))
        reference = document["orders"]["user_id"]
        start, stop = reference["bytes"]
        if damage == "array short":
            reference["bytes"] = [start, stop - 1]
        elif damage == "array outside":
            reference["bytes"] = [start, len(blob) + 8]
        elif damage == "array of no type":
            reference["array"] = "x"
        elif damage == "array of a float index":
            document["orders"]["price"]["array"] = "d"
        chunks = chunks_of(document, blob)
    else:
        chunks = chunks_of(document)
    with pytest.raises(StoreError, match="here: the document is damaged"):
        slicedoc.decode(chunks, info_for(None), "here")
