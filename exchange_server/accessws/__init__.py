"""accessws: the WebSocket API with market-data pushes and authenticated user streams.

Embedded: ``AccessWs(config, backends, bus)`` with the services as backends and the in-process
bus.  Standalone: ``run_service(NAME, path, build, validate=validate)`` (RPC clients and Kafka).
"""

from typing import TYPE_CHECKING, Any

from exchange_server.accessws.config import AccessWsConfig, load_accessws
from exchange_server.accessws.server import AccessWs

if TYPE_CHECKING:
    from exchange_server.accessws.standalone import NAME, StandaloneAccessWs, build, validate

__all__ = ["NAME", "AccessWs", "AccessWsConfig", "StandaloneAccessWs", "build", "load_accessws",
           "validate"]


def __getattr__(name: str) -> Any:
    """The standalone service's names on first use: it brings Kafka's client and the RPC
    clients, which the embedded mode (importing this package for its config and server) never
    needs."""
    if name in ("NAME", "StandaloneAccessWs", "build", "validate"):
        from exchange_server.accessws import standalone

        return getattr(standalone, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
