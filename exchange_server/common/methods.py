"""The method table of the API: which service answers each method, under which command number.

Why here: accesshttp routes by this table, the internal RPC (rpc.commands, the standalone
services) numbers its commands by it, and accessws forwards to the same services; keeping it
in one protocol module that all of them import (and that imports nothing of theirs) is what
keeps the gateways and the RPC layer from importing each other.

The numbers are the original's (rpc.md 1.2); the CoinEx fork's methods (extensions.md) follow
with the fork's numbers (they do not collide with the original's); ``config.*`` are the admin
methods.  The table also names the notifications accessws sends (websocket.md 6), so the API
reference can be checked against a declared list.
"""

from __future__ import annotations

from exchange_server.common.names import Service

MATCHENGINE = Service.MATCHENGINE
MARKETPRICE = Service.MARKETPRICE
READHISTORY = Service.READHISTORY

#: method -> (service, command number of the internal binary RPC), in the reference's order
METHODS: dict[str, tuple[str, int]] = {
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
    # the CoinEx fork's methods (docs/compatibility.md, "Extensions from the CoinEx fork")
    "order.put_stop_limit": (MATCHENGINE, 211),
    "order.put_stop_market": (MATCHENGINE, 212),
    "order.cancel_stop": (MATCHENGINE, 213),
    "order.pending_stop": (MATCHENGINE, 214),
    "order.finished_stop": (READHISTORY, 215),
    "order.stop_book": (MATCHENGINE, 216),
    "order.cancel_all": (MATCHENGINE, 218),
    "order.cancel_stop_all": (MATCHENGINE, 219),
    "order.cancel_batch": (MATCHENGINE, 222),
    "market.detail": (MATCHENGINE, 311),
    # admin: refused without the admin token
    "config.update_asset": (MATCHENGINE, 401),
    "config.update_market": (MATCHENGINE, 402),
    "config.suspend_market": (MATCHENGINE, 404),
    "config.resume_market": (MATCHENGINE, 405),
}

# The notifications' names, for the code that sends them (accessws imports these, never literals).
KLINE_UPDATE = "kline.update"
DEPTH_UPDATE = "depth.update"
PRICE_UPDATE = "price.update"
STATE_UPDATE = "state.update"
TODAY_UPDATE = "today.update"
DEALS_UPDATE = "deals.update"
ORDER_UPDATE = "order.update"
ORDER_UPDATE_STOP = "order.update_stop"
ASSET_UPDATE = "asset.update"
#: The notifications accessws sends (websocket.md 6; ``order.update_stop``: the CoinEx fork's):
#: one per market-data feed (``<feed>.update``) and the user pushes driven by the bus.
WS_PUSHES: tuple[str, ...] = (
    KLINE_UPDATE,
    DEPTH_UPDATE,
    PRICE_UPDATE,
    STATE_UPDATE,
    TODAY_UPDATE,
    DEALS_UPDATE,
    ORDER_UPDATE,
    ORDER_UPDATE_STOP,
    ASSET_UPDATE,
)
