"""accessws: the WebSocket API with market-data pushes and authenticated user streams.

Embedded: ``AccessWs(config, backends, bus)`` with the services as backends and the in-process
bus.  Standalone: ``run_service(NAME, path, build, validate=validate)`` (RPC clients and Kafka).
"""

from exchange_server.accessws.config import AccessWsConfig, load_accessws
from exchange_server.accessws.server import AccessWs
from exchange_server.accessws.standalone import NAME, StandaloneAccessWs, build, validate

__all__ = ["NAME", "AccessWs", "AccessWsConfig", "StandaloneAccessWs", "build", "load_accessws",
           "validate"]
