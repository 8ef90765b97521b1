"""The original's rpc client and rpc server config blocks (config.md 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from exchange_server.common.config import ConfigError, Node, SvrConfig, read_svr
from exchange_server.common.configread import load_fields, setting
from exchange_server.rpc.addr import parse_sock_addr

if TYPE_CHECKING:
    from exchange_server.rpc.client import RpcClient


def _check_addrs(node: Node, key: str, values: list[str], kinds: tuple[str, ...]) -> None:
    for i, text in enumerate(values):
        where = node.where(key) if len(values) == 1 else f"{node.where(key)}[{i}]"
        try:
            addr = parse_sock_addr(text)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        if addr.kind not in kinds:
            raise ConfigError(f"{where}: {addr.kind}@ is not supported here (use "
                              f"{', '.join(k + '@' for k in kinds)})")


def _client_addrs(node: Node, key: str, values: list[str]) -> list[str]:
    _check_addrs(node, key, values, ("tcp", "stream"))
    return values


@dataclass(frozen=True)
class RpcClientConfig:
    name: str
    addr: list[str] = setting(then=_client_addrs)
    max_pkg_size: int = setting(minimum=64)
    buf_limit: int = setting(0, minimum=0)
    read_mem: int = setting(0, minimum=0)
    write_mem: int = setting(0, minimum=0)
    reconnect_timeout: float = setting(0.0, minimum=0.0)
    heartbeat_timeout: float = setting(0.0, minimum=0.0)


def read_rpc_client(node: Node) -> RpcClientConfig:
    """An rpc client block: ``{"name", "addr" (string or array), "max_pkg_size", ...}``."""
    return load_fields(RpcClientConfig, node, first=("addr",))


def read_rpc_server(node: Node) -> SvrConfig:
    """An rpc server block (``svr``), with every bind address checked."""
    cfg = read_svr(node)
    _check_addrs(node, "bind", cfg.bind, ("tcp", "udp", "stream"))
    return cfg


def make_client(cfg: RpcClientConfig, timeout: float | None = None) -> RpcClient:
    """An (unstarted) client for the block; ``timeout`` applies to every request if set.  The
    client is imported here: reading a config (the embedded mode's accessws block) needs none."""
    from exchange_server.rpc.client import RpcClient

    return RpcClient(cfg.name, cfg.addr, max_pkg_size=cfg.max_pkg_size, timeout=timeout,
                     heartbeat_timeout=cfg.heartbeat_timeout,
                     reconnect_timeout=cfg.reconnect_timeout)
