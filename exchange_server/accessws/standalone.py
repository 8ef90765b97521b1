"""accessws as its own process (production): binary RPC clients to the three backends and
Kafka consumers of ``orders`` and ``balances``, from the original's config file.

Used with the process runner: ``run_service(NAME, path, build, validate=validate)`` takes care
of the lock file, ``process`` limits, logging, daemonising, signals and the ``monitor`` port;
``build`` gives the service it starts and stops.  Several instances (or ``worker_num`` worker
processes sharing the port through SO_REUSEPORT) can run side by side: each one reads both
topics from their end and keeps its own subscriptions.
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from typing import Any

from exchange_server.accessws.config import AccessWsConfig, load_accessws
from exchange_server.accessws.observe import register_accessws
from exchange_server.accessws.server import AccessWs
from exchange_server.bus.kafka import KafkaBusReader
from exchange_server.common.backend import Backend
from exchange_server.process.lifecycle import Composite, Step, step
from exchange_server.rpc.client import RpcClient
from exchange_server.rpc.config import RpcClientConfig, make_client

log = logging.getLogger("exchange_server.accessws")

NAME = "accessws"


def _client(cfg: RpcClientConfig) -> RpcClient:
    # no client-side timeout: accessws applies backend_timeout itself (answering error 5)
    return make_client(cfg)


class StandaloneAccessWs(Composite):
    def __init__(self, config: AccessWsConfig) -> None:
        self.config = config
        self.clients: dict[str, RpcClient] = {}
        for name in ("matchengine", "marketprice", "readhistory"):
            cfg: RpcClientConfig | None = getattr(config, name)
            if cfg is not None:
                self.clients[name] = _client(cfg)
        bus = None
        if config.orders is not None:
            bus = KafkaBusReader(config.orders.brokers)
            if config.balances is not None and config.balances.brokers != config.orders.brokers:
                log.warning("orders and balances use different brokers: %s is used for both",
                            config.orders.brokers)
        backends: dict[str, Backend] = dict(self.clients)
        self.ws = AccessWs(config, backends, bus)
        register_accessws(self.ws)

    def steps(self) -> list[Step]:
        # a client connects in the background and reconnects forever
        steps = [step(f"{name} client", client.start, partial(_close, client))
                 for name, client in self.clients.items()]
        return [*steps, step("accessws", self.ws.start, self.ws.stop)]


async def _close(client: RpcClient) -> None:
    with contextlib.suppress(Exception):
        await client.close()


async def build(data: dict[str, Any]) -> StandaloneAccessWs:
    """The service for :func:`exchange_server.process.run_service`."""
    return StandaloneAccessWs(load_accessws(data))


def validate(data: dict[str, Any]) -> None:
    load_accessws(data)
