"""The original's internal binary RPC between services (rpc.md 1.3).

* :mod:`.protocol`: packet layout, CRC-32 (IEEE, zlib), streaming decoder, heartbeat TLV
* :mod:`.server`: :class:`RpcServer` puts a service's ``call`` on tcp/udp/unix binds
* :mod:`.client`: :class:`RpcClient`, a gateway Backend with pipelining, heartbeats, failover
* :mod:`.commands`: command numbers per service (from accesshttp's routing table)
* :mod:`.config`: the rpc client / server config blocks
"""

from exchange_server.rpc.client import RpcClient
from exchange_server.rpc.server import RpcServer

__all__ = ["RpcClient", "RpcServer"]
