"""readhistory as its own process: reads trade_history (MySQL) and answers over the binary RPC.
Several instances may run against one database.  ``exchange-server readhistory -c CONFIG``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from exchange_server.common.config import MysqlConfig, Node, SvrConfig
from exchange_server.common.configread import block, load_fields, setting
from exchange_server.process.lifecycle import Composite, Step, step
from exchange_server.readhistory.reader import MysqlHistoryReader
from exchange_server.readhistory.service import DEFAULT_WORKER_NUM, ReadHistoryService
from exchange_server.rpc.commands import service_commands
from exchange_server.rpc.config import read_rpc_server
from exchange_server.rpc.server import RpcServer

NAME = "readhistory"


@dataclass(frozen=True)
class ReadHistoryConfig:
    svr: SvrConfig = setting(read=block(read_rpc_server))
    db_history: MysqlConfig = setting()
    worker_num: int = setting(DEFAULT_WORKER_NUM, minimum=1, maximum=1000)
    debug: bool = False


def load_readhistory(data: Any) -> ReadHistoryConfig:
    return load_fields(ReadHistoryConfig, Node(data))


class StandaloneReadHistory(Composite):
    def __init__(self, config: ReadHistoryConfig) -> None:
        self.config = config
        self.service = ReadHistoryService(MysqlHistoryReader(config.db_history),
                                          worker_num=config.worker_num, debug=config.debug)
        self.rpc = RpcServer(self.service, service_commands(NAME), config.svr.max_pkg_size,
                             config.svr.heartbeat_check, name=NAME)

    def steps(self) -> list[Step]:
        return [step("readhistory", stop=self.service.close),
                step("rpc", partial(self.rpc.start, self.config.svr.bind), self.rpc.stop)]


async def build(data: dict[str, Any]) -> StandaloneReadHistory:
    return StandaloneReadHistory(load_readhistory(data))


def validate(data: dict[str, Any]) -> None:
    load_readhistory(data)
