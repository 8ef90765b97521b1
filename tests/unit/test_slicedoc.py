"""The slice document gives back exactly the state it was made from, or a clear StoreError.

Why: a restart reads the document instead of the slice's tables (slicedoc), so it must hold
every value exactly (Decimal exponents, ids up to 2**63 - 1, subnormal times, unicode), and any
damage (a changed byte, a lost chunk, a document of another slice) must be refused by name, so
that the store falls back to the tables instead of loading a wrong book.
"""

from __future__ import annotations

import zlib

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
    data = zlib.compress(b'{"format": 2}')
    with pytest.raises(StoreError, match="not a slice document of format 1"):
        slicedoc.decode([(zlib.crc32(data), data)], info_for(None), "here")
