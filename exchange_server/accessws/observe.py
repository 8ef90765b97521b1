"""accessws's gauges for the metrics endpoint: open connections and the newest order seen.

Why: ``exchange-server status`` tells accessws's lag by subtracting the newest order id it has
processed from the matchengine's order counter, across processes, without either side knowing
the other's address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exchange_server.common import metrics

if TYPE_CHECKING:
    from exchange_server.accessws.server import AccessWs

def register_accessws(server: AccessWs) -> None:
    g = metrics.gauges("accessws")
    users = server.users
    g.add("connections", "Open client connections", lambda: len(server.connections))
    g.add("accessws_last_order_id", "Id of the newest order in the orders messages accessws "
          "has processed (0: none since start)", lambda: users.last_order_id)
    g.add("accessws_last_order_time", "Update time of that order",
          lambda: users.last_order_time)
