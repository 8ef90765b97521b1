"""marketprice as its own process (production): consumes Kafka ``deals`` and keeps its state in
Redis (through Sentinel as the original, or directly), answering over the binary RPC.
``exchange-server marketprice -c CONFIG``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from exchange_server.bus.kafka import KafkaBusReader
from exchange_server.common.config import ConfigError, Node, SvrConfig
from exchange_server.marketprice.markets import accesshttp_markets
from exchange_server.marketprice.observe import register_marketprice
from exchange_server.marketprice.service import MarketPriceService
from exchange_server.marketprice.state import Retention
from exchange_server.marketprice.store_redis import RedisStore
from exchange_server.process.lifecycle import Composite, Step, step
from exchange_server.rpc.commands import service_commands
from exchange_server.rpc.config import read_rpc_server
from exchange_server.rpc.server import RpcServer

NAME = "marketprice"


@dataclass(frozen=True)
class MarketPriceConfig:
    svr: SvrConfig
    brokers: str
    topic: str
    #: Redis Sentinel master name, or None for a direct Redis address (extension).
    redis_name: str | None
    redis_addr: list[str]
    redis_db: int
    accesshttp: str
    retention: Retention
    cache_timeout: float = 0.45
    debug: bool = False


def load_marketprice(data: Any) -> MarketPriceConfig:
    root = Node(data)
    deals = root.obj("deals")
    if deals.integer("partition", 0, 0) != 0:
        raise ConfigError("deals.partition: only partition 0 is used (as the original)")
    redis = root.obj("redis")
    addrs = redis.str_or_list("addr")
    name = redis.string("name", None)
    if name is None and len(addrs) != 1:
        raise ConfigError("redis.addr: a direct Redis (no name) takes exactly one address")
    return MarketPriceConfig(
        svr=read_rpc_server(root.obj("svr")),
        brokers=deals.string("brokers"),
        topic=deals.string("topic", "deals"),
        redis_name=name,
        redis_addr=addrs,
        redis_db=redis.integer("db", 0, 0, 15),
        accesshttp=root.string("accesshttp"),
        retention=Retention(root.integer("sec_max", 86400 * 7, 60),
                            root.integer("min_max", 60 * 24 * 365, 60),
                            root.integer("hour_max", 24 * 365 * 10, 24)),
        cache_timeout=root.real("cache_timeout", 0.45, 0.0),
        debug=root.boolean("debug", False),
    )


class StandaloneMarketPrice(Composite):
    def __init__(self, config: MarketPriceConfig) -> None:
        self.config = config
        if config.redis_name is not None:
            store = RedisStore.sentinel(config.redis_addr, config.redis_name, config.redis_db)
        else:
            host, _, port = config.redis_addr[0].rpartition(":")
            store = RedisStore.direct(host, int(port), config.redis_db)
        self.service = MarketPriceService(
            KafkaBusReader(config.brokers), store, accesshttp_markets(config.accesshttp),
            retention=config.retention, cache_timeout=config.cache_timeout, debug=config.debug,
            topic=config.topic)
        register_marketprice(self.service)
        self.rpc = RpcServer(self.service, service_commands(NAME), config.svr.max_pkg_size,
                             config.svr.heartbeat_check, name=NAME)

    def steps(self) -> list[Step]:
        return [step("marketprice", self.service.start, self.service.stop),
                step("rpc", partial(self.rpc.start, self.config.svr.bind), self.rpc.stop)]


async def build(data: dict[str, Any]) -> StandaloneMarketPrice:
    return StandaloneMarketPrice(load_marketprice(data))


def validate(data: dict[str, Any]) -> None:
    load_marketprice(data)
