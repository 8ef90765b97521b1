"""accesshttp's gauges for the metrics endpoint (and so for ``exchange-server status``).

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
    from exchange_server.accesshttp.server import AccessHttp

def register_accesshttp(*servers: AccessHttp) -> None:
    """Open connections of the gateway's listeners (the public one may share the main one's
    set: counted once)."""
    g = metrics.gauges("accesshttp")
    g.add("connections", "Open client connections",
          lambda: len(set().union(*(s.connections for s in servers))))
