"""accessws's gauges for the metrics endpoint (and so for ``exchange-server status``).

Why: ``exchange-server status`` and the alert rules compare what each consumer has processed
with what the matchengine produced.  Consumers export the newest id and time they have seen;
the status command subtracts them from the matchengine's counters, which works across
processes without either side knowing the other's address.  Each service registers its own
gauges (matchprocess/observe.py likewise), so the status package imports no service.
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
