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
from exchange_server.common.configread import block, load_fields, rule, setting
from exchange_server.process.settings import LogSettings, ProcessConfig, read_process
from exchange_server.rpc.addr import parse_host_port, parse_sock_addr

DEFAULT_BUFFER_LIMIT = 10_000


def _host_ports(node: Node, key: str, values: list[str]) -> list[tuple[str, int]]:
    result = []
    for i, text in enumerate(values):
        try:
            result.append(parse_host_port(text))
        except ValueError as e:
            raise ConfigError(f"{node.where(key)}[{i}]: {e}") from None
    return result


@dataclass(frozen=True)
class RedisConfig:
    #: sentinel master name; None = ``addr`` is the Redis server itself
    name: str | None
    addr: list[tuple[str, int]] = setting(read=lambda node, key, _: node.str_or_list(key),
                                          then=_host_ports)
    db: int = setting(0, minimum=0)
    password: str | None = setting(None, key="auth")

    @property
    def sentinel(self) -> bool:
        return self.name is not None


def read_alert_svr(node: Node) -> SvrConfig:
    binds = node.str_or_list("bind")
    for i, text in enumerate(binds):
        try:
            addr = parse_sock_addr(text)
        except ValueError as e:
            raise ConfigError(f"{node.where('bind')}[{i}]: {e}") from None
        if addr.kind not in ("tcp", "udp", "stream"):
            raise ConfigError(f"{node.where('bind')}[{i}]: {addr.kind}@ is not supported here")
    return load_fields(SvrConfig, node, rules=_ALERT_SVR_RULES, bind=binds, heartbeat_check=False)


#: alertcenter's ``svr.max_pkg_size`` is required (the original's sample sets it)
_ALERT_SVR_RULES = {"max_pkg_size": rule(minimum=64, required=True)}


def read_redis(node: Node) -> RedisConfig:
    """A sentinel block (``name`` given) or, without ``name``, the one Redis server."""
    name = node.string("name", None)
    if name is None and len(node.str_or_list("addr")) != 1:
        raise ConfigError(f"{node.where('addr')}: without a sentinel master \"name\", give the one "
                          "Redis server as \"ip:port\"")
    return load_fields(RedisConfig, node, name=name)


@dataclass(frozen=True)
class AlertCenterConfig:
    svr: SvrConfig = setting(read=block(read_alert_svr))
    redis: RedisConfig = setting(read=block(read_redis))
    log: LogSettings | None = None
    process: ProcessConfig = setting(ProcessConfig(),
                                     read=lambda node, key, _: read_process(node.obj(key, None)))
    buffer_limit: int = setting(DEFAULT_BUFFER_LIMIT, minimum=1)


def load_alertcenter(data: Any) -> AlertCenterConfig:
    return load_fields(AlertCenterConfig, Node(data))
