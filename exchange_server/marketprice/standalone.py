"""marketprice as its own process (production): consumes Kafka ``deals`` and keeps its state in
Redis (through Sentinel as the original, or directly), answering over the binary RPC.
``exchange-server marketprice -c CONFIG``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from exchange_server.bus.kafka import KafkaBusReader
from exchange_server.common.config import ConfigError, Node, SvrConfig
from exchange_server.common.configread import load_fields, rule, setting
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
    cache_timeout: float = setting(0.45, minimum=0.0)
    debug: bool = False


def _partition_zero(node: Node, key: str, value: int) -> int:
    if value != 0:
        raise ConfigError("deals.partition: only partition 0 is used (as the original)")
    return value


@dataclass(frozen=True)
class _Deals:
    """The ``deals`` block: the Kafka topic read."""

    brokers: str
    topic: str = "deals"
    partition: int = setting(0, minimum=0, then=_partition_zero)


@dataclass(frozen=True)
class _Redis:
    """The ``redis`` block: a Sentinel master (``name``) or, without it, one Redis server."""

    addr: list[str]
    name: str | None = None
    db: int = setting(0, minimum=0, maximum=15)


#: the retention keys (their defaults are Retention's)
_RETENTION_RULES = {
    "sec_max": rule(minimum=60),
    "min_max": rule(minimum=60),
    "hour_max": rule(minimum=24),
}


def load_marketprice(data: Any) -> MarketPriceConfig:
    root = Node(data)
    deals = load_fields(_Deals, root.obj("deals"), first=("partition",))
    redis = load_fields(_Redis, root.obj("redis"))
    if redis.name is None and len(redis.addr) != 1:
        raise ConfigError("redis.addr: a direct Redis (no name) takes exactly one address")
    return load_fields(
        MarketPriceConfig, root, svr=read_rpc_server(root.obj("svr")), brokers=deals.brokers,
        topic=deals.topic, redis_name=redis.name, redis_addr=redis.addr, redis_db=redis.db,
        accesshttp=root.string("accesshttp"),
        retention=load_fields(Retention, root, rules=_RETENTION_RULES))


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
