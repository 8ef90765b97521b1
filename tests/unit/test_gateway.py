"""accesshttp's routing decisions with backends that are slow or down (in-process)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from exchange_server.accesshttp.server import BATCH_AHEAD, BATCH_CHUNK, BATCH_SLICE, AccessHttp
from tests.support.waiting import wait_until_async


class CpuClock:
    """This thread's CPU clock as accesshttp reads it (``time.thread_time``), advanced only by
    what a backend below declares it spends (``spend``).  The real clock also counts what the
    test process itself spends between calls: a full garbage collection of a heap grown over a
    whole suite once took a chunk of 16 cheap calls past BATCH_SLICE / 4 on a loaded machine,
    and the chunk sizes these tests assert came out one step short."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


CPU = CpuClock()


@pytest.fixture(autouse=True)
def _cpu_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "thread_time", CPU)


class SlowBackend:
    def __init__(self, delay: float, up: bool = True) -> None:
        self.delay = delay
        self.up = up
        self.calls: list[tuple[str, list[Any], int | None]] = []

    def connected(self) -> bool:
        return self.up

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        self.calls.append((method, params, req_id))
        await asyncio.sleep(self.delay)
        return json.dumps({"error": None, "result": "ok", "id": req_id}).encode()


async def test_timeout_is_504_with_code_5() -> None:
    app = AccessHttp({"matchengine": SlowBackend(0.5)}, timeout=0.1)
    status, body = await app.dispatch(b'{"method": "asset.list", "params": [], "id": 9}')
    assert status == 504
    assert body == b'{"error": {"code": 5, "message": "service timeout"}, "result": null, "id": 9}'


async def test_reply_passes_through_and_routes_by_method() -> None:
    me, history = SlowBackend(0), SlowBackend(0)
    app = AccessHttp({"matchengine": me, "readhistory": history})
    assert await app.dispatch(b'{"method": "order.deals", "params": [1, 0, 10], "id": 2}') == (
        200, b'{"error": null, "result": "ok", "id": 2}')
    assert history.calls == [("order.deals", [1, 0, 10], 2)] and me.calls == []


async def test_backend_down_is_500_empty() -> None:
    app = AccessHttp({"matchengine": SlowBackend(0, up=False)})
    assert await app.dispatch(b'{"method": "asset.list", "params": [], "id": 1}') == (500, b"")
    assert await app.dispatch(b'{"method": "market.last", "params": [], "id": 1}') == (500, b"")


class CommitLikeBackend(SlowBackend):
    """Each call waits ``delay`` seconds without holding the loop (as a write waits for its
    durable commit) after spending ``busy`` seconds of CPU (on ``CPU``); counts how many
    calls are in flight at once."""

    def __init__(self, delay: float, busy: float = 0.0) -> None:
        super().__init__(delay)
        self.busy = busy
        self.in_flight = 0
        self.most_in_flight = 0

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        CPU.spend(self.busy)
        try:
            return await super().call(method, params, req_id)
        finally:
            self.in_flight -= 1


def _batch(n: int) -> bytes:
    return json.dumps([{"method": "asset.list", "params": [], "id": i} for i in range(n)]).encode()


async def test_a_batch_of_waiting_calls_keeps_its_chunks_large() -> None:
    """Calls that wait (a commit) but hold no CPU do not shrink the batch's chunks: the writes
    of one batch share commits instead of waiting for one commit each.  Counting the calls' 10 ms
    waits (wall time) shrinks them."""
    backend = CommitLikeBackend(delay=0.01)
    app = AccessHttp({"matchengine": backend})
    status, _ = await app.dispatch(_batch(200))
    assert status == 200 and len(backend.calls) == 200
    assert backend.most_in_flight == BATCH_CHUNK
    assert app._batch_chunk == BATCH_CHUNK


async def test_a_batch_of_cpu_heavy_calls_shrinks_its_chunks() -> None:
    """Calls that hold the loop's CPU longer than BATCH_SLICE are worked one at a time."""
    backend = CommitLikeBackend(delay=0, busy=BATCH_SLICE * 1.5)
    app = AccessHttp({"matchengine": backend})
    status, _ = await app.dispatch(_batch(20))
    assert status == 200 and len(backend.calls) == 20
    assert app._batch_chunk == 1


class NowaitBackend:
    """Answers as the embedded matchengine does, without a task (``call_nowait``): a read at
    once, a write (``order.*``) held until ``release`` (as until its durable commit), each
    after spending ``busy`` seconds of CPU (on ``CPU``)."""

    def __init__(self, busy: float = 0.0) -> None:
        self.busy = busy
        self.calls: list[int | None] = []
        self.task_calls: list[int | None] = []
        self.held: list[tuple[int | None, Any]] = []

    def connected(self) -> bool:
        return True

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        self.task_calls.append(req_id)
        return _reply(req_id)

    def call_nowait(self, method: str, params: list[Any], req_id: int | None,
                    reply: Any) -> bytes | None:
        CPU.spend(self.busy)
        self.calls.append(req_id)
        if not method.startswith("order."):
            return _reply(req_id)
        self.held.append((req_id, reply))
        return None

    def release(self) -> None:
        held, self.held = self.held, []
        for req_id, reply in held:
            reply(_reply(req_id))


def _reply(req_id: int | None) -> bytes:
    return json.dumps({"error": None, "result": req_id, "id": req_id}).encode()


def _calls(methods: list[str]) -> bytes:
    return json.dumps([{"method": m, "params": [], "id": i} for i, m in enumerate(methods)]).encode()


async def _loop_rounds(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_batch_of_writes_is_made_a_cpu_slice_at_a_time_some_chunks_ahead() -> None:
    """Calls to a backend without a task are made as many as fit in BATCH_SLICE of CPU at a
    time, and the next chunks before the first one's replies came (their writes join the
    next commit), BATCH_AHEAD chunks at most; the replies come back whole and in order."""
    backend = NowaitBackend(busy=BATCH_SLICE * 0.4)  # 3 calls pass the slice
    app = AccessHttp({"matchengine": backend})
    answer = asyncio.ensure_future(app.dispatch(_calls(["order.put_limit"] * 20)))
    made = 3 * BATCH_AHEAD
    assert made < 20
    await wait_until_async(lambda: len(backend.held) >= made)
    await _loop_rounds()
    assert backend.calls == list(range(made)) and not answer.done()
    await wait_until_async(lambda: backend.release() or answer.done())
    status, body = await answer
    assert status == 200 and json.loads(body) == [json.loads(_reply(i)) for i in range(20)]
    assert backend.calls == list(range(20)) and backend.task_calls == []


async def test_a_batch_call_held_past_the_timeout_is_answered_504_in_its_place() -> None:
    backend = NowaitBackend()
    app = AccessHttp({"matchengine": backend}, timeout=0.1)
    status, body = await app.dispatch(_calls(["asset.list", "order.put_limit", "asset.list"]))
    assert status == 200
    assert json.loads(body) == [
        json.loads(_reply(0)),
        {"error": {"code": 5, "message": "service timeout"}, "result": None, "id": 1},
        json.loads(_reply(2))]


async def test_a_batch_mixing_inline_calls_and_others_answers_in_order() -> None:
    """A call the inline chunk cannot make (an unknown method here) ends it: the task path
    answers that one, in its place, and the calls after it are made inline again."""
    backend = NowaitBackend()
    app = AccessHttp({"matchengine": backend})
    answer = asyncio.ensure_future(app.dispatch(
        _calls(["order.put_limit", "asset.list", "no.such", "order.cancel", "asset.list"])))
    await wait_until_async(lambda: backend.release() or answer.done())
    status, body = await answer
    assert status == 200
    replies = json.loads(body)
    assert [r["id"] for r in replies] == [0, 1, 2, 3, 4]
    assert replies[2]["error"] == {"code": 4, "message": "method not found"}
    assert [r["result"] for r in replies[:2] + replies[3:]] == [0, 1, 3, 4]
    assert backend.calls == [0, 1, 3, 4] and backend.task_calls == []
