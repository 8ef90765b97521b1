"""readhistory as its own process: reads trade_history (MySQL) and answers over the binary RPC.
Several instances may run against one database.  ``exchange-server readhistory -c CONFIG``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from exchange_server.common.config import MysqlConfig, Node, SvrConfig, read_mysql
from exchange_server.process.lifecycle import Composite, Step, step
from exchange_server.readhistory.reader import MysqlHistoryReader
from exchange_server.readhistory.service import DEFAULT_WORKER_NUM, ReadHistoryService
from exchange_server.rpc.commands import service_commands
from exchange_server.rpc.config import read_rpc_server
from exchange_server.rpc.server import RpcServer

NAME = "readhistory"


@dataclass(frozen=True)
class ReadHistoryConfig:
    svr: SvrConfig
    db_history: MysqlConfig
    worker_num: int = DEFAULT_WORKER_NUM
    debug: bool = False


def load_readhistory(data: Any) -> ReadHistoryConfig:
    root = Node(data)
    return ReadHistoryConfig(
        svr=read_rpc_server(root.obj("svr")),
        db_history=read_mysql(root.obj("db_history")),
        worker_num=root.integer("worker_num", DEFAULT_WORKER_NUM, 1, 1000),
        debug=root.boolean("debug", False),
    )


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
