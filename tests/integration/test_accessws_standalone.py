"""accessws the production way: its own config file, the binary RPC to the matchengine, and
user pushes from Kafka (the real broker of ``scripts/services.sh``, fresh topics).

The matchengine runs behind an RpcServer and publishes to Kafka through the BusPublisher;
accessws is built by ``accessws.build`` from an original-format config whose marketprice and
readhistory point at nothing (their methods then answer error 2, as when a backend is down).
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from exchange_server.accessws import StandaloneAccessWs, build
from exchange_server.bus.kafka import KafkaTransport
from exchange_server.bus.publisher import BusPublisher
from exchange_server.common.backend import LocalBackend
from exchange_server.common.config import default_matchengine_data, load_matchengine
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.rpc.commands import MATCHENGINE_COMMANDS
from exchange_server.rpc.server import RpcServer
from tests.support.accessws_support import MARKET, AuthService, WsClient
from tests.support.server import free_port
from tests.unit.test_accessws_units import SAMPLE

USER = 501


@pytest.fixture
async def auth() -> AsyncIterator[AuthService]:
    service = AuthService()
    service.tokens["tok"] = USER
    await service.start()
    yield service
    await service.stop()


async def test_standalone_rpc_and_kafka(tmp_path: Path, auth: AuthService, kafka_brokers: str,
                                        kafka_topics: Callable[[], str]) -> None:
    prefix = kafka_topics()
    store = SqliteEngineStore(tmp_path / "engine")
    store.open()
    engine = MatchEngineService(load_matchengine(default_matchengine_data(), embedded=True), store)
    publisher = BusPublisher(KafkaTransport(kafka_brokers, prefix), tmp_path / "bus.mark")
    engine.add_sink(publisher)
    engine.restore()
    await publisher.start()
    await engine.start()
    rpc = RpcServer(engine, MATCHENGINE_COMMANDS, 10240, name="matchengine")
    rpc_port, ws_port, dead_port = free_port(), free_port(), free_port()
    await rpc.start([f"tcp@127.0.0.1:{rpc_port}"])

    data: dict[str, Any] = copy.deepcopy(SAMPLE)
    data["svr"]["bind"] = [f"tcp@127.0.0.1:{ws_port}"]
    data["matchengine"]["addr"] = [f"tcp@127.0.0.1:{rpc_port}"]
    data["marketprice"]["addr"] = [f"tcp@127.0.0.1:{dead_port}"]
    data["readhistory"]["addr"] = [f"tcp@127.0.0.1:{dead_port}"]
    for topic in ("orders", "balances"):
        data[topic].update(brokers=kafka_brokers, topic=prefix + topic)
    data.update(auth_url=auth.auth_url, sign_url=auth.sign_url, depth_interval=0.1)
    service: StandaloneAccessWs = await build(data)
    await service.start()
    client: WsClient | None = None
    me = LocalBackend(engine)
    bid = 0

    async def deposit(asset: str, amount: str) -> None:
        nonlocal bid
        bid += 1
        await me.call("balance.update", [USER, asset, "deposit", bid, amount, {}], 1)

    try:
        assert await service.clients["matchengine"].wait_connected(10)
        client = await WsClient.connect(f"http://127.0.0.1:{ws_port}/")
        assert await client.call("server.auth", "tok", "web") == {"status": "success"}
        await client.call("order.subscribe", MARKET)
        await client.call("asset.subscribe", "BCH")
        await deposit("BCH", "1000")
        # the consumers start at the end of the topics: wait until they are live
        deadline = time.monotonic() + 30
        while await client.quiet("asset.update", 0.5):
            assert time.monotonic() < deadline, "no push from Kafka"
            await deposit("BCH", "1")
        client.drain("asset.update")
        # forwarded over the RPC: the reply body passes through verbatim
        balance = await client.request("asset.query", "BCH")
        available = balance["result"]["BCH"]["available"]
        expected = await me.call("balance.query", [USER, "BCH"], balance["id"])
        assert client.raw_replies[balance["id"]] == expected.decode()
        # pushes from Kafka
        reply = await me.call("order.put_limit", [USER, MARKET, 2, "1", "100", "0.001", "0.001",
                                                  "x"], 1)
        order = __import__("orjson").loads(reply)["result"]
        assert await client.next("order.update") == [1, order]
        update = await client.next("asset.update")
        while update[0]["BCH"]["freeze"] == "0":  # a late push of the warm-up's balance
            update = await client.next("asset.update")
        assert update == [{"BCH": {"available": str(int(available) - 100), "freeze": "100"}}]
        # depth over the RPC
        await client.call("depth.subscribe", MARKET, 5, "0")
        assert await client.next("depth.update") == [True, {"asks": [], "bids": [["100", "1"]]},
                                                     MARKET]
        # a backend that is down: error 2
        assert await client.error("price.query", MARKET) == (2, "internal error")
        assert await client.error("order.history", MARKET, 0, 0, 0, 10, 0) == (2, "internal error")
    finally:
        if client is not None:
            await client.close()
        await service.stop()
        await rpc.stop()
        await engine.stop()
        await publisher.stop()
        store.close()
