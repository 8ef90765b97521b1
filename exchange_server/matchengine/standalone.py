"""The matchengine as its own process (production): MySQL operation log and history, the
binary RPC server for the gateways.  Run by ``exchange-server matchengine -c CONFIG``."""

from __future__ import annotations

from typing import Any

from exchange_server.common import gctune
from exchange_server.common.config import MatchEngineConfig, load_matchengine
from exchange_server.history.store_mysql import MysqlHistoryStore
from exchange_server.history.writer import HistoryWriter
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.rpc.commands import service_commands
from exchange_server.rpc.server import RpcServer

NAME = "matchengine"


class StandaloneMatchEngine:
    def __init__(self, config: MatchEngineConfig) -> None:
        assert config.db_log and config.db_history and config.svr
        self.config = config
        self.store = MysqlEngineStore(config.db_log)
        self.service = MatchEngineService(config, self.store)
        self.history = HistoryWriter(MysqlHistoryStore(config.db_history),
                                     max_pending_rows=config.history_max_pending)
        self.service.add_sink(self.history)
        self.rpc = RpcServer(self.service, service_commands(NAME), config.svr.max_pkg_size,
                             config.svr.heartbeat_check, name=NAME)

    async def start(self) -> None:
        self.store.open()
        gctune.tune()
        self.service.restore()
        gctune.freeze_startup_state()
        self.history.start()
        await self.service.start()
        assert self.config.svr is not None
        await self.rpc.start(self.config.svr.bind)

    async def stop(self) -> None:
        await self.rpc.stop()
        await self.service.stop()
        await self.history.aclose(timeout=30)
        self.store.close()


async def build(data: dict[str, Any]) -> StandaloneMatchEngine:
    return StandaloneMatchEngine(load_matchengine(data))


def validate(data: dict[str, Any]) -> None:
    load_matchengine(data)
