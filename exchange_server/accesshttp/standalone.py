"""accesshttp as its own process: the HTTP JSON-RPC gateway in front of the backends' binary RPC
servers.  Several instances may run behind a load balancer.
``exchange-server accesshttp -c CONFIG``.

The API is a trusted back-office API (trust.py): ``svr.bind`` belongs on a private address.
Extensions: ``public.bind`` adds listeners that answer only the public market-data methods and
pages (what a reverse proxy may publish), ``public_only`` makes ``svr.bind`` such a listener,
``api_token`` requires a bearer token for every non-public method."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from exchange_server.accesshttp.limits import HttpLimits, read_http_limits
from exchange_server.accesshttp.observe import register_accesshttp
from exchange_server.accesshttp.server import AccessHttp
from exchange_server.common.backend import Backend
from exchange_server.common.config import ConfigError, Node, SvrConfig, read_svr
from exchange_server.common.configread import load_fields, setting
from exchange_server.process.lifecycle import Composite, Step, step
from exchange_server.rpc.addr import parse_sock_addr
from exchange_server.rpc.client import RpcClient
from exchange_server.rpc.config import RpcClientConfig, make_client, read_rpc_client

NAME = "accesshttp"
BACKENDS = ("matchengine", "marketprice", "readhistory")


def _none_if_empty(node: Node, key: str, value: str | None) -> str | None:
    return value or None


def _check_tcp(where: str, binds: list[str]) -> None:
    for i, text in enumerate(binds):
        try:
            if parse_sock_addr(text).kind != "tcp":
                raise ValueError("only tcp@ip:port binds are supported")
        except ValueError as e:
            raise ConfigError(f"{where}[{i}]: {e}") from None


def _public_bind(node: Node, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """``public.bind`` (a ``public`` block of ``null`` counts as absent)."""
    public = node.obj(key, None)
    if public is None:
        return default
    binds = public.str_or_list("bind")
    _check_tcp(public.where("bind"), binds)
    return tuple(binds)


@dataclass(frozen=True)
class AccessHttpConfig:
    svr: SvrConfig
    backends: dict[str, RpcClientConfig]
    timeout: float = setting(1.0, minimum=0.001)
    #: Extension: the bearer token that unlocks the admin methods (``config.*``); none = they
    #: are always refused.
    admin_token: str | None = setting(None, then=_none_if_empty)
    #: what one client may cost: the ``svr`` block's keep_alive, request_timeout,
    #: max_connections, max_pipeline, max_url_size, max_header_size and max_pkg_size
    limits: HttpLimits = HttpLimits()
    #: Extension: the bearer token every non-public method needs; none = network trust only.
    api_token: str | None = setting(None, then=_none_if_empty)
    #: Extension: ``svr.bind`` answers only the public methods (routes.PUBLIC_METHODS).
    public_only: bool = False
    #: Extension: extra listeners (``public.bind``) that answer only the public methods.
    public_bind: tuple[str, ...] = setting((), key="public", read=_public_bind)
    #: Extension: where the market page finds the WebSocket API (GET /market-config.json),
    #: e.g. the public ``wss://exchange.example/ws`` behind nginx; none = the page's default.
    ws_url: str | None = setting(None, then=_none_if_empty)


def load_accesshttp(data: Any) -> AccessHttpConfig:
    root = Node(data)
    svr_node = root.obj("svr")
    svr = read_svr(svr_node)
    _check_tcp("svr.bind", svr.bind)
    return load_fields(
        AccessHttpConfig, root, svr=svr,
        backends={name: read_rpc_client(root.obj(name)) for name in BACKENDS},
        limits=read_http_limits(svr_node, svr.max_pkg_size))


class StandaloneAccessHttp(Composite):
    def __init__(self, config: AccessHttpConfig) -> None:
        self.config = config
        self.clients: dict[str, RpcClient] = {
            name: make_client(cfg) for name, cfg in config.backends.items()}
        backends: dict[str, Backend] = dict(self.clients)
        self.http = AccessHttp(backends, timeout=config.timeout, admin_token=config.admin_token,
                               api_token=config.api_token, public_only=config.public_only,
                               limits=config.limits)
        #: the public listeners' gateway (None: no ``public.bind``); its connections count
        #: toward the same max_connections
        self.public = AccessHttp(backends, timeout=config.timeout, public_only=True,
                                 limits=config.limits) if config.public_bind else None
        if self.public is not None:
            self.public.connections = self.http.connections
        for gateway in (self.http, self.public):
            if gateway is not None:
                gateway.ws_url = config.ws_url
        register_accesshttp(*(g for g in (self.http, self.public) if g is not None))

    def steps(self) -> list[Step]:
        steps = [step(f"{name} client", client.start, client.close)
                 for name, client in self.clients.items()]
        steps.append(Step("accesshttp", partial(_listening, self.http, self.config.svr.bind)))
        if self.public is not None:
            steps.append(Step("accesshttp (public)",
                              partial(_listening, self.public, self.config.public_bind)))
        return steps


@contextlib.asynccontextmanager
async def _listening(gateway: AccessHttp, binds: Iterable[str]) -> AsyncIterator[None]:
    """The gateway on every bind, stopped after (also when a later bind fails)."""
    try:
        for text in binds:
            addr = parse_sock_addr(text)
            await gateway.start(addr.host, addr.port, reuse_port=True)
        yield
    finally:
        await gateway.stop()


async def build(data: dict[str, Any]) -> StandaloneAccessHttp:
    return StandaloneAccessHttp(load_accesshttp(data))


def validate(data: dict[str, Any]) -> None:
    load_accesshttp(data)
