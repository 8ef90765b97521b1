"""The matchengine as its own process (production): MySQL operation log, history written by the
follower process, deals/orders/balances published to Kafka, the binary RPC server for the
gateways.  Run by ``exchange-server matchengine -c CONFIG``.

The bus publisher's mark lives in the log database (``bus_mark``, bus/mark.py), not in
``bus_mark_file``: whichever host runs the matchengine next continues from it.  The file is
only read once, on the first start after an upgrade, to take its mark over."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from exchange_server.bus.kafka import KafkaTransport
from exchange_server.bus.mark import MarkStoreError, publisher_mark
from exchange_server.bus.publisher import BusPublisher
from exchange_server.common.config import MatchEngineConfig, load_matchengine
from exchange_server.common.names import Storage
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import StoreError
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchprocess.console import Console, ConsoleServer, parse_console_address
from exchange_server.matchprocess.follower import FollowerProcess, FollowerSpec
from exchange_server.matchprocess.lifecycle import engine_steps
from exchange_server.matchprocess.observe import register_gauges
from exchange_server.process.lifecycle import Composite, StartupFailed, Step, step
from exchange_server.rpc.commands import service_commands
from exchange_server.rpc.server import RpcServer

NAME = "matchengine"


class StandaloneMatchEngine(Composite):
    def __init__(self, config: MatchEngineConfig) -> None:
        assert config.db_log and config.db_history and config.svr and config.brokers
        self.config = config
        self.store = MysqlEngineStore(config.db_log)
        self.service = MatchEngineService(config, self.store)
        self.publisher = BusPublisher(KafkaTransport(config.brokers, config.kafka_topic_prefix),
                                      publisher_mark(config),
                                      max_pending=config.kafka_max_pending)
        self.service.add_sink(self.publisher)
        self.follower = FollowerProcess(
            FollowerSpec(config.raw, False, "", Storage.MYSQL, logging.getLogger().level),
            max_pending_rows=config.history_max_pending)
        self.service.pressure.append(lambda: self.follower.overloaded(self.service.oper_id))
        self.service.durable_hooks.append(self.follower.set_durable)
        self.rpc = RpcServer(self.service, service_commands(NAME), config.svr.max_pkg_size,
                             config.svr.heartbeat_check, name=NAME)
        register_gauges(self.service, self.follower, self.publisher)
        assert config.cli is not None
        self.console_addr = parse_console_address(config.cli)
        self.console = ConsoleServer(Console(self.service, self.follower, self.publisher))

    def steps(self) -> list[Step]:
        """The start order (stopped in the reverse): the matching process's steps shared with
        embedded mode (matchprocess/lifecycle.py), then the RPC server and the console."""
        assert self.config.svr is not None
        return [
            *engine_steps(self.service, self.follower, self.publisher),
            step("rpc", partial(self.rpc.start, self.config.svr.bind), self.rpc.stop),
            step("console", partial(self.console.start, self.console_addr), self.console.stop),
        ]

    async def start(self) -> None:
        """Start every step; when one fails, those before it are stopped (in reverse)."""
        try:
            await super().start()
        except (StoreError, MarkStoreError) as e:
            raise StartupFailed(f"cannot start: {e}") from None


async def build(data: dict[str, Any]) -> StandaloneMatchEngine:
    return StandaloneMatchEngine(load_matchengine(data))


def validate(data: dict[str, Any]) -> None:
    config = load_matchengine(data)
    assert config.cli is not None
    parse_console_address(config.cli)
