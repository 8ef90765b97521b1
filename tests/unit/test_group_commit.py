"""Group commit: the writes made in one round of the event loop (every request read in it) go
to the log in one commit, started once the round is done; writes made while it runs form the
next one.  A reply waits for its own commit (call_nowait)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from exchange_server.common.errors import SERVICE_UNAVAILABLE, RpcError
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import OperRecord, StoreError
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from tests.integration.test_methods import config
from tests.support.waiting import wait_until_async


class CountingStore(SqliteEngineStore):
    """The SQLite log, recording the ids of each batch it is given."""

    def __init__(self, data: Path) -> None:
        super().__init__(data)
        self.batches: list[list[int]] = []
        #: cleared: a commit waits (in the writer thread) until it is set
        self.gate = threading.Event()
        self.gate.set()

    def append(self, records: Sequence[OperRecord]) -> None:
        self.batches.append([r.id for r in records])
        self.gate.wait(30)
        super().append(records)


def deposit(service: MatchEngineService, n: int) -> None:
    service.execute("balance.update", [1, "BTC", "deposit", n, "1", {}])


async def test_writes_of_one_loop_round_are_one_commit(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "data")
    store.open()
    service = MatchEngineService(config(), store)
    await service.start()
    try:
        for n in range(1, 6):  # five requests read in the same round
            deposit(service, n)
        assert store.batches == []  # not started before the round is over
        await service.flush()
        assert store.batches == [[1, 2, 3, 4, 5]]
        replies: list[bytes] = []
        body = service.call_nowait("balance.update", [1, "BTC", "deposit", 6, "1", {}], 7,
                                   replies.append)
        assert body is None  # answered once durable
        for n in range(7, 9):
            deposit(service, n)
        await wait_until_async(lambda: replies)
        assert replies == [b'{"error": null, "result": {"status": "success"}, "id": 7}']
        await service.flush()
        assert store.batches == [[1, 2, 3, 4, 5], [6, 7, 8]]
        assert service.durable_id == 8
    finally:
        await service.stop(final_slice=False)
        store.close()


async def test_a_write_made_during_a_commit_joins_the_next(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "data")
    store.open()
    service = MatchEngineService(config(), store)
    await service.start()
    try:
        store.gate.clear()
        deposit(service, 1)
        await wait_until_async(lambda: store.batches)  # the first commit is under way
        deposit(service, 2)
        deposit(service, 3)
        store.gate.set()
        await service.flush()
        assert store.batches == [[1], [2, 3]]
    finally:
        await service.stop(final_slice=False)
        store.close()


def test_no_loop_no_commit(tmp_path: Path) -> None:
    """Before start() (restore, tools) a write is applied and kept for the first commit."""
    store = CountingStore(tmp_path / "data")
    store.open()
    service = MatchEngineService(config(), store)
    deposit(service, 1)
    assert store.batches == [] and service.oper_id == 1 and service.durable_id == 0
    store.close()


class FailingStore(CountingStore):
    """A log whose commits fail (a full disk, say)."""

    def append(self, records: Sequence[OperRecord]) -> None:
        self.batches.append([r.id for r in records])
        raise StoreError("disk full")


async def test_a_refused_commit_answers_each_held_reply_and_waiter_code_3(tmp_path: Path) -> None:
    """Both kinds of reply held for a commit are refused with code 3 when it fails: a reply
    body to the request it answers (call_nowait, with that request's id), and a waiter's
    RpcError (flush)."""
    store = FailingStore(tmp_path / "data")
    store.open()
    service = MatchEngineService(config(), store)
    await service.start()
    try:
        replies: list[bytes] = []
        for req_id in (7, 8):
            assert service.call_nowait("balance.update",
                                       [1, "BTC", "deposit", req_id, "1", {}], req_id,
                                       replies.append) is None
        with pytest.raises(RpcError) as refused:
            async with asyncio.timeout(30):  # a waiter never settled fails, not hangs
                await service.flush()
        assert refused.value.code == SERVICE_UNAVAILABLE
        assert replies == [b'{"error": {"code": 3, "message": "service unavailable"}, '
                           b'"result": null, "id": %d}' % req_id for req_id in (7, 8)]
        assert store.batches == [[1, 2]] and service.durable_id == 0
    finally:
        await service.stop(final_slice=False)
        store.close()
