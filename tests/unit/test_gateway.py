"""accesshttp's routing decisions with backends that are slow or down (in-process)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from exchange_server.accesshttp.server import BATCH_CHUNK, BATCH_SLICE, AccessHttp


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
    durable commit) after holding this thread's CPU for ``busy`` seconds; counts how many
    calls are in flight at once."""

    def __init__(self, delay: float, busy: float = 0.0) -> None:
        super().__init__(delay)
        self.busy = busy
        self.in_flight = 0
        self.most_in_flight = 0

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        held = time.thread_time()
        while time.thread_time() - held < self.busy:
            pass
        try:
            return await super().call(method, params, req_id)
        finally:
            self.in_flight -= 1


def _batch(n: int) -> bytes:
    return json.dumps([{"method": "asset.list", "params": [], "id": i} for i in range(n)]).encode()


async def test_a_batch_of_waiting_calls_keeps_its_chunks_large() -> None:
    """Calls that wait (a commit) but hold no CPU do not shrink the batch's chunks: the writes
    of one batch share commits instead of waiting for one commit each."""
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
