"""marketprice's gauges for the metrics endpoint: the newest deal it has processed.

Why: ``exchange-server status`` and the alert rules tell marketprice's lag by subtracting that
deal id from the matchengine's ``exchange_trades_total``.
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
