"""alertcenter's config file (config.md 4): ``process``, ``log``, ``svr``, ``redis``.

``redis`` is the original's sentinel block ``{"name": master, "addr": ["ip:port", ...]
(sentinels), "db": 0}``.  Extension: without ``name`` the block names one Redis server
directly, ``{"addr": "ip:port", "db": 0}``.  ``auth`` (password) is optional.

Extension: ``buffer_limit`` (default 10000) alerts are kept in memory while Redis is
unreachable; past that the oldest are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange_server.common.config import ConfigError, Node, SvrConfig
from exchange_server.process.settings import (
    LogSettings,
    ProcessConfig,
    read_log_settings,
    read_process,
)
from exchange_server.rpc.addr import parse_host_port, parse_sock_addr

DEFAULT_BUFFER_LIMIT = 10_000


@dataclass(frozen=True)
class RedisConfig:
    #: sentinel master name; None = ``addr`` is the Redis server itself
    name: str | None
    addr: list[tuple[str, int]]
    db: int = 0
    password: str | None = None

    @property
    def sentinel(self) -> bool:
        return self.name is not None


@dataclass(frozen=True)
class AlertCenterConfig:
    svr: SvrConfig
    redis: RedisConfig
    log: LogSettings | None = None
    process: ProcessConfig = ProcessConfig()
    buffer_limit: int = DEFAULT_BUFFER_LIMIT


def _host_ports(node: Node, key: str, values: list[str]) -> list[tuple[str, int]]:
    result = []
    for i, text in enumerate(values):
        try:
            result.append(parse_host_port(text))
        except ValueError as e:
            raise ConfigError(f"{node.where(key)}[{i}]: {e}") from None
    return result


def read_redis(node: Node) -> RedisConfig:
    name = node.string("name", None)
    addrs = node.str_or_list("addr")
    if name is None and len(addrs) != 1:
        raise ConfigError(f"{node.where('addr')}: without a sentinel master \"name\", give the one "
                          "Redis server as \"ip:port\"")
    return RedisConfig(
        name=name,
        addr=_host_ports(node, "addr", addrs),
        db=node.integer("db", 0, 0),
        password=node.string("auth", None),
    )


def read_alert_svr(node: Node) -> SvrConfig:
    binds = node.str_or_list("bind")
    for i, text in enumerate(binds):
        try:
            addr = parse_sock_addr(text)
        except ValueError as e:
            raise ConfigError(f"{node.where('bind')}[{i}]: {e}") from None
        if addr.kind not in ("tcp", "udp", "stream"):
            raise ConfigError(f"{node.where('bind')}[{i}]: {addr.kind}@ is not supported here")
    return SvrConfig(bind=binds, max_pkg_size=node.integer("max_pkg_size", minimum=64),
                     heartbeat_check=False)


def load_alertcenter(data: Any) -> AlertCenterConfig:
    root = Node(data)
    process = root.obj("process", None)
    log = root.obj("log", None)
    return AlertCenterConfig(
        svr=read_alert_svr(root.obj("svr")),
        redis=read_redis(root.obj("redis")),
        log=read_log_settings(log) if log is not None else None,
        process=read_process(process),
        buffer_limit=root.integer("buffer_limit", DEFAULT_BUFFER_LIMIT, 1),
    )
