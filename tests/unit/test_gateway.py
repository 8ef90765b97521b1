"""accesshttp's routing decisions with backends that are slow or down (in-process)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from exchange_server.accesshttp.server import AccessHttp


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
