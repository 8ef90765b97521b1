"""accesshttp as its own process: the public HTTP JSON-RPC gateway in front of the backends'
binary RPC servers.  Several instances may run behind a load balancer.
``exchange-server accesshttp -c CONFIG``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange_server.accesshttp.limits import HttpLimits, read_http_limits
from exchange_server.accesshttp.server import AccessHttp
from exchange_server.common.backend import Backend
from exchange_server.common.config import ConfigError, Node, SvrConfig, read_svr
from exchange_server.rpc.addr import parse_sock_addr
from exchange_server.rpc.client import RpcClient
from exchange_server.rpc.config import RpcClientConfig, make_client, read_rpc_client

NAME = "accesshttp"
BACKENDS = ("matchengine", "marketprice", "readhistory")


@dataclass(frozen=True)
class AccessHttpConfig:
    svr: SvrConfig
    backends: dict[str, RpcClientConfig]
    timeout: float = 1.0
    #: Extension: the bearer token that unlocks the admin methods (``config.*``); none = they
    #: are always refused.
    admin_token: str | None = None
    #: what one client may cost: the ``svr`` block's keep_alive, request_timeout,
    #: max_connections, max_pipeline, max_url_size, max_header_size and max_pkg_size
    limits: HttpLimits = HttpLimits()


def load_accesshttp(data: Any) -> AccessHttpConfig:
    root = Node(data)
    svr_node = root.obj("svr")
    svr = read_svr(svr_node)
    for i, text in enumerate(svr.bind):
        try:
            if parse_sock_addr(text).kind != "tcp":
                raise ValueError("only tcp@ip:port binds are supported")
        except ValueError as e:
            raise ConfigError(f"svr.bind[{i}]: {e}") from None
    return AccessHttpConfig(
        svr=svr,
        backends={name: read_rpc_client(root.obj(name)) for name in BACKENDS},
        timeout=root.real("timeout", 1.0, 0.001),
        admin_token=root.string("admin_token", None) or None,
        limits=read_http_limits(svr_node, svr.max_pkg_size),
    )


class StandaloneAccessHttp:
    def __init__(self, config: AccessHttpConfig) -> None:
        self.config = config
        self.clients: dict[str, RpcClient] = {
            name: make_client(cfg) for name, cfg in config.backends.items()}
        backends: dict[str, Backend] = dict(self.clients)
        self.http = AccessHttp(backends, timeout=config.timeout, admin_token=config.admin_token,
                               limits=config.limits)

    async def start(self) -> None:
        for client in self.clients.values():
            await client.start()
        for text in self.config.svr.bind:
            addr = parse_sock_addr(text)
            await self.http.start(addr.host, addr.port, reuse_port=True)

    async def stop(self) -> None:
        await self.http.stop()
        for client in self.clients.values():
            await client.close()


async def build(data: dict[str, Any]) -> StandaloneAccessHttp:
    return StandaloneAccessHttp(load_accesshttp(data))


def validate(data: dict[str, Any]) -> None:
    load_accesshttp(data)
