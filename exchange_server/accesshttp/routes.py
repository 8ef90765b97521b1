"""accesshttp's routing table: which service owns each public method (rpc.md 1.2)."""

from __future__ import annotations

MATCHENGINE = "matchengine"
MARKETPRICE = "marketprice"
READHISTORY = "readhistory"

#: method -> (service, command number of the internal binary RPC)
ROUTES: dict[str, tuple[str, int]] = {
    "balance.query": (MATCHENGINE, 101),
    "balance.update": (MATCHENGINE, 102),
    "balance.history": (READHISTORY, 103),
    "asset.list": (MATCHENGINE, 104),
    "asset.summary": (MATCHENGINE, 105),
    "order.put_limit": (MATCHENGINE, 201),
    "order.put_market": (MATCHENGINE, 202),
    "order.pending": (MATCHENGINE, 203),
    "order.cancel": (MATCHENGINE, 204),
    "order.book": (MATCHENGINE, 205),
    "order.depth": (MATCHENGINE, 206),
    "order.pending_detail": (MATCHENGINE, 207),
    "order.finished": (READHISTORY, 208),
    "order.deals": (READHISTORY, 209),
    "order.finished_detail": (READHISTORY, 210),
    "market.status": (MARKETPRICE, 301),
    "market.kline": (MARKETPRICE, 302),
    "market.deals": (MARKETPRICE, 303),
    "market.last": (MARKETPRICE, 304),
    "market.status_today": (MARKETPRICE, 305),
    "market.user_deals": (READHISTORY, 306),
    "market.list": (MATCHENGINE, 307),
    "market.summary": (MATCHENGINE, 308),
}
