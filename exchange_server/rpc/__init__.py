"""The original's internal binary RPC between services (rpc.md 1.3).

* :mod:`.protocol`: packet layout, CRC-32 (IEEE, zlib), streaming decoder, heartbeat TLV
* :mod:`.server`: :class:`RpcServer` puts a service's ``call`` on tcp/udp/unix binds
* :mod:`.client`: :class:`RpcClient`, a gateway Backend with pipelining, heartbeats, failover
* :mod:`.commands`: command numbers per service (from accesshttp's routing table)
* :mod:`.config`: the rpc client / server config blocks
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exchange_server.rpc.client import RpcClient
    from exchange_server.rpc.server import RpcServer

__all__ = ["RpcClient", "RpcServer"]


def __getattr__(name: str) -> Any:
    """The client and server on first use: importing :mod:`.addr` (the embedded mode's console
    address, every config reader) must not load them."""
    if name == "RpcClient":
        from exchange_server.rpc.client import RpcClient

        return RpcClient
    if name == "RpcServer":
        from exchange_server.rpc.server import RpcServer

        return RpcServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
