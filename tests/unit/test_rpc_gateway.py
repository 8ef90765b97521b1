"""accesshttp -> RpcClient -> RpcServer -> the real MatchEngineService (SQLite store): the
gateway's answers over the internal RPC are byte for byte those of the in-process service."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path
from typing import Any

import orjson

from exchange_server.accesshttp.server import AccessHttp
from exchange_server.common.backend import Backend
from exchange_server.common.config import default_matchengine_data, load_matchengine
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.rpc.client import RpcClient
from exchange_server.rpc.commands import MATCHENGINE_COMMANDS
from exchange_server.rpc.server import RpcServer
from tests.support.waiting import wait_until_async


def post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/", body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_http_gateway_over_rpc_to_matchengine(tmp_path: Path) -> None:
    config = load_matchengine(default_matchengine_data(), embedded=True)
    store = SqliteEngineStore(tmp_path)
    store.open()
    service = MatchEngineService(config, store)
    service.restore()
    await service.start()
    server = RpcServer(service, MATCHENGINE_COMMANDS, 10240, heartbeat_check=True,
                       name="matchengine")
    await server.start(["tcp@127.0.0.1:0"])
    client = RpcClient("matchengine", server.addresses, 2_000_000, heartbeat_timeout=3.0)
    await client.start()
    backends: dict[str, Backend] = {"matchengine": client}
    http = AccessHttp(backends, timeout=30.0)  # a deadline only
    await http.start("127.0.0.1", 0)
    try:
        assert await client.wait_connected(30)

        async def call(method: str, params: list[Any], req_id: int) -> tuple[int, bytes]:
            body = orjson.dumps({"method": method, "params": params, "id": req_id})
            return await asyncio.to_thread(post, http.port, body)

        status, body = await call("balance.update", [1, "BCH", "deposit", 1, "100", {}], 5)
        assert status == 200 and orjson.loads(body) == {
            "error": None, "result": {"status": "success"}, "id": 5}
        status, body = await call("order.put_limit",
                                  [1, "BTCBCH", 2, "1", "10", "0.002", "0.001", "rpc"], 6)
        assert status == 200 and orjson.loads(body)["result"]["source"] == "rpc"
        # reads: the same bytes as the service gives in-process
        for method, params in (("balance.query", [1]), ("order.pending", [1, "BTCBCH", 0, 10]),
                               ("order.depth", ["BTCBCH", 10, "0"]), ("market.list", [])):
            status, body = await call(method, params, 77)
            assert status == 200
            assert body == await service.call(method, params, 77)
        status, body = await call("balance.query", [0], 8)  # error bodies pass through too
        assert orjson.loads(body)["error"]["code"] == 1
        # the backend goes away: 500 with an empty body, as when it is not connected
        await server.stop()
        await wait_until_async(lambda: not client.connected(), message="the client sees it")
        assert await call("balance.query", [1], 9) == (500, b"")
    finally:
        await http.stop()
        await client.close()
        await server.stop()
        await service.stop()
        store.close()
