"""The matchengine as its own process (production): MySQL operation log, history written by the
follower process, deals/orders/balances published to Kafka, the binary RPC server for the
gateways.  Run by ``exchange-server matchengine -c CONFIG``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from exchange_server.bus.kafka import KafkaTransport
from exchange_server.bus.publisher import BusPublisher
from exchange_server.common import gctune
from exchange_server.common.config import MatchEngineConfig, load_matchengine
from exchange_server.common.names import Storage
from exchange_server.matchengine.console import Console, ConsoleServer, parse_console_address
from exchange_server.matchengine.follower import FollowerProcess, FollowerSpec
from exchange_server.matchengine.observe import register_gauges
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import StoreError
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.process.runner import StartupFailed
from exchange_server.rpc.commands import service_commands
from exchange_server.rpc.server import RpcServer

NAME = "matchengine"


class StandaloneMatchEngine:
    def __init__(self, config: MatchEngineConfig) -> None:
        assert config.db_log and config.db_history and config.svr and config.brokers
        self.config = config
        self.store = MysqlEngineStore(config.db_log)
        self.service = MatchEngineService(config, self.store)
        self.publisher = BusPublisher(KafkaTransport(config.brokers, config.kafka_topic_prefix),
                                      config.bus_mark_file,
                                      max_pending=config.kafka_max_pending)
        self.service.add_sink(self.publisher)
        self.follower = FollowerProcess(
            FollowerSpec(config.raw, False, "", Storage.MYSQL, logging.getLogger().level),
            max_pending_rows=config.history_max_pending)
        self.service.pressure.append(lambda: self.follower.overloaded(self.service.oper_id))
        self.service.durable_hooks.append(self.follower.set_durable)
        self.rpc = RpcServer(self.service, service_commands(NAME), config.svr.max_pkg_size,
                             config.svr.heartbeat_check, name=NAME)
        self._watch: asyncio.Task[None] | None = None
        register_gauges(self.service, self.follower, self.publisher)
        assert config.cli is not None
        self.console_addr = parse_console_address(config.cli)
        self.console = ConsoleServer(Console(self.service, self.follower, self.publisher))

    async def start(self) -> None:
        try:
            self.store.open()
            gctune.tune()
            self.service.restore()
        except StoreError as e:
            raise StartupFailed(f"cannot start: {e}") from None
        gctune.freeze_startup_state()
        self.follower.create_schema()
        self.follower.start()
        self._watch = asyncio.create_task(self.follower.watch())
        await self.publisher.start()
        await self.service.start()
        assert self.config.svr is not None
        await self.rpc.start(self.config.svr.bind)
        await self.console.start(self.console_addr)

    async def stop(self) -> None:
        await self.console.stop()
        await self.rpc.stop()
        await self.service.stop()
        # A failing log database must not hold the exit up: the bus and the history follower
        # resume from their own marks at the next start.
        failing = self.service.degraded
        await self.publisher.stop(timeout=1.0 if failing else 5.0)
        if self._watch is not None:
            self._watch.cancel()
        await asyncio.get_running_loop().run_in_executor(
            None, self.follower.stop, 2.0 if failing else 60.0)
        self.store.close()


async def build(data: dict[str, Any]) -> StandaloneMatchEngine:
    return StandaloneMatchEngine(load_matchengine(data))


def validate(data: dict[str, Any]) -> None:
    config = load_matchengine(data)
    assert config.cli is not None
    parse_console_address(config.cli)
