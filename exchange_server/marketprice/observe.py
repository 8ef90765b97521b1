"""marketprice's gauges for the metrics endpoint (and so for ``exchange-server status``).

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
    from exchange_server.marketprice.service import MarketPriceService

def register_marketprice(service: MarketPriceService) -> None:
    g = metrics.gauges("marketprice")
    data = service.data
    g.add("marketprice_last_deal_id", "Id of the newest deal marketprice has processed",
          lambda: data.last_deal_id)
    g.add("marketprice_last_deal_time", "Time of the newest deal marketprice has processed",
          lambda: data.last_deal_time)
