"""accesshttp's routing table: which service owns each method (rpc.md 1.2), and which are public.

The CoinEx fork's methods (extensions.md) follow the original's, with the fork's command
numbers (they do not collide with the original's); ``config.*`` are the admin methods."""

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

#: Methods accesshttp refuses (HTTP 403, error 6) unless the request carries the admin token.
ADMIN_METHODS = frozenset(m for m in ROUTES if m.startswith("config."))

#: The public surface of the HTTP API: read-only market data, the same for every caller.  These
#: are the only methods the public listener (``public`` / ``public_only``) answers, the only
#: ones the deploy kit's public nginx server reaches, and the ones ``api_token`` leaves open.
#: Every other method moves money or reveals a user's data: it belongs to the trusted back
#: office (README.md "Trust model", docs/operations.md).
PUBLIC_METHODS = frozenset({
    "market.list", "market.summary", "market.last", "market.deals", "market.kline",
    "market.status", "market.status_today", "asset.list", "order.depth", "order.book",
})

#: What the public listener serves to GET (pages.py), for the nginx config: exact paths (``/``:
#: also the POST endpoint of the public methods) and path prefixes.
PUBLIC_PATHS = ("/", "/openrpc.json", "/market-config.json")
PUBLIC_PATH_PREFIXES = ("/market/", "/static/")
