"""Gauges of the services other than the matchengine (matchengine/observe.py has its own).

Why: ``exchange-server status`` and the alert rules compare what each consumer has processed
with what the matchengine produced.  Consumers export the newest id and time they have seen
(marketprice: deals, accessws: orders); the status command subtracts them from the
matchengine's ``exchange_trades_total`` / ``exchange_orders_total``, which works across
processes without either side knowing the other's address.  Gateways export their open
connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exchange_server.common import metrics

if TYPE_CHECKING:  # only types: the services import this module (no import cycle)
    from exchange_server.accesshttp.server import AccessHttp
    from exchange_server.accessws.server import AccessWs
    from exchange_server.embedded import EmbeddedSystem
    from exchange_server.marketprice.service import MarketPriceService


def register_marketprice(service: MarketPriceService) -> None:
    g = metrics.gauges("marketprice")
    data = service.data
    g.add("marketprice_last_deal_id", "Id of the newest deal marketprice has processed",
          lambda: data.last_deal_id)
    g.add("marketprice_last_deal_time", "Time of the newest deal marketprice has processed",
          lambda: data.last_deal_time)


def register_accesshttp(*servers: AccessHttp) -> None:
    g = metrics.gauges("accesshttp")
    g.add("connections", "Open client connections",
          lambda: len(set().union(*(s.connections for s in servers))))


def register_accessws(server: AccessWs) -> None:
    g = metrics.gauges("accessws")
    users = server.users
    g.add("connections", "Open client connections", lambda: len(server.connections))
    g.add("accessws_last_order_id", "Id of the newest order in the orders messages accessws "
          "has processed (0: none since start)", lambda: users.last_order_id)
    g.add("accessws_last_order_time", "Update time of that order",
          lambda: users.last_order_time)


def register_embedded(system: EmbeddedSystem) -> None:
    """Every service of ``exchange-server run`` (the matchengine registers its own)."""
    if system.readhistory is not None:
        metrics.gauges("readhistory")
    if system.marketprice is not None:
        register_marketprice(system.marketprice)
    register_accesshttp(*(h for h in (system.http, system.public_http) if h is not None))
    if system.ws is not None:
        register_accessws(system.ws)
