"""The slice document gives back exactly the state it was made from, or a clear StoreError.

Why: a restart reads the document instead of the slice's tables (slicedoc), so it must hold
every value exactly (Decimal exponents, ids up to 2**63 - 1, subnormal times, unicode), and any
damage (a changed byte, a lost chunk, a document of another slice) must be refused by name, so
that the store falls back to the tables instead of loading a wrong book.
"""

from __future__ import annotations

import random
import zlib
from typing import Any, cast

import orjson
import pytest

from exchange_server.matchengine import slicedoc
from exchange_server.matchengine.store import SliceInfo, StoreError, state_checksum
from tests.integration.test_store import assert_same_state, make_state

INFO = SliceInfo(1_700_000_000, 10, 0, 0)


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
    data = zlib.compress(b'{"format": 3}')
    with pytest.raises(StoreError, match=r"not a slice document of format \(1, 2\)"):
        slicedoc.decode([(zlib.crc32(data), data)], info_for(None), "here")


def document_of(chunks: list[slicedoc.Chunk]) -> dict[str, Any]:
    return cast(dict[str, Any], orjson.loads(zlib.decompress(b"".join(p for _, p in chunks))))


def chunks_of(document: dict[str, Any]) -> list[slicedoc.Chunk]:
    data = zlib.compress(orjson.dumps(document))
    return [(zlib.crc32(data), data)]


def test_format_2_indexes_the_decimals_and_texts() -> None:
    state = make_state(seed=4, orders=300, balances=20, updates=5)
    document = document_of(slicedoc.encode(state, None))
    assert document["format"] == 2
    columns = document["orders"]
    assert columns["id"] == sorted(o.id for o in state.orders)  # written in id order
    assert all(type(i) is int for name in slicedoc.ORDER_DECIMALS for i in columns[name])
    assert len(document["decimals"]) == len(set(document["decimals"]))
    assert {document["texts"][i] for i in columns["market"]} == {o.market for o in state.orders}


def format_1(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The document as the previous version wrote it: values in the columns, book order."""
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
    "index out of range", "decimal not a text", "column short", "format 1 column short"])
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
    else:
        document = format_1(document, random.Random(2))
        document["orders"]["left"].pop()
    with pytest.raises(StoreError, match="here: the document is damaged"):
        slicedoc.decode(chunks_of(document), info_for(None), "here")
