"""accesshttp's gauges for the metrics endpoint: open client connections.

Why here: each service registers its own gauges (matchengine: matchprocess/observe.py), so the
status package, which reads them over HTTP, imports no service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exchange_server.common import metrics

if TYPE_CHECKING:
    from exchange_server.accesshttp.server import AccessHttp

def register_accesshttp(*servers: AccessHttp) -> None:
    """Open connections of the gateway's listeners (the public one may share the main one's
    set: counted once)."""
    g = metrics.gauges("accesshttp")
    g.add("connections", "Open client connections",
          lambda: len(set().union(*(s.connections for s in servers))))
