"""accesshttp's routing: every method of the API's method table, and which ones are public.

Which service owns each method and its command number (rpc.md 1.2) live in one protocol
module, :mod:`exchange_server.common.methods`, shared with the internal RPC and accessws;
this module adds accesshttp's own view of them (the admin and public sets)."""

from __future__ import annotations

from exchange_server.common.methods import METHODS

#: method -> (service, command number of the internal binary RPC): accesshttp routes every
#: method of the table.
ROUTES: dict[str, tuple[str, int]] = METHODS

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
