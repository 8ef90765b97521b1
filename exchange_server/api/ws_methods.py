"""The WebSocket methods (accessws' method table) and pushes, documented (websocket.md)."""

from __future__ import annotations

from exchange_server.api.http_methods import HTTP_METHODS
from exchange_server.api.model import Method, Param, Push
from exchange_server.api.schema import (
    ASSET_NAME,
    BALANCE,
    DEPTH,
    KLINE_ROW,
    MARKET_DEAL,
    ORDER,
    STATUS,
    STATUS_TODAY,
    STOP,
    SUCCESS,
    array,
    boolean,
    const,
    dec,
    integer,
    map_of,
    nullable,
    obj,
    string,
)
from exchange_server.common.errors import (
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    REQUIRE_AUTH,
    SERVICE_TIMEOUT,
    SERVICE_UNAVAILABLE,
    errors_of,
    generic,
)

_HTTP = {m.name: m for m in HTTP_METHODS}

INVALID = generic(INVALID_ARGUMENT, "a param of the wrong type or out of range")
BACKEND_DOWN = generic(INTERNAL_ERROR, "the backend service is not connected")
TIMEOUT = generic(SERVICE_TIMEOUT, "no answer from the backend within backend_timeout "
                  "(default 1 s)")
NEED_AUTH = generic(REQUIRE_AUTH, "server.auth or server.sign has not succeeded on this "
                    "connection")
MARKET_WS = string("market name, shorter than 16 bytes", example="BTCBCH", max_bytes=15)
ASSET_WS = string("asset name, shorter than 16 bytes", example="BTC", max_bytes=15)
ANY_PARAMS_NOTE = "Any params are accepted (they are not looked at)."


def forwarded(name: str, http_method: str, summary: str, cached: bool = True) -> Method:
    """A query whose params go unchanged to an HTTP method's service."""
    target = _HTTP[http_method]
    backend_errors = tuple(e for e in target.errors if e.code not in (3,))
    return Method(
        name, summary, target.params, target.result, target.result_doc,
        (BACKEND_DOWN, TIMEOUT, *backend_errors),
        notes=(f"Forwarded unchanged to `{http_method}` (see the HTTP reference for the params' "
               "rules); the backend's reply is relayed. "
               + ("Answers are cached by params for `cache_timeout` (default 0.5 s); only "
                  "non-null results are cached." if cached else "")),
        service=target.service, forwards=http_method, cached="cache_timeout" if cached else "",
    )


def list_subscribe(kind: str, push: str, extra: str = "") -> Method:
    return Method(
        f"{kind}.subscribe", f"Receive `{push}` for a list of markets.",
        (Param("market", MARKET_WS, "markets to follow; the list replaces the previous one "
               "(an empty list = none)", required=False, variadic=True),),
        SUCCESS, "`{\"status\": \"success\"}`.",
        (generic(INVALID_ARGUMENT, "a name that is not a string or is 16 bytes or longer; "
                 "more than max_subscribe_list markets"),),
        notes=("Replaces this connection's list. An unknown market is accepted but dropped "
               "silently on the first poll (its backend answers an error). " + extra),
        service="local",
    )


def unsubscribe(kind: str, auth: bool = False) -> Method:
    return Method(
        f"{kind}.unsubscribe", f"Stop this connection's `{kind}.update` pushes.",
        (), SUCCESS, "`{\"status\": \"success\"}`.",
        (NEED_AUTH,) if auth else (),
        notes=ANY_PARAMS_NOTE, params_ignored=True, service="local", auth=auth,
    )


WS_METHODS: list[Method] = [
    Method("server.ping", "Check that the connection is alive.", (), const("pong"),
           "`\"pong\"`.", (), notes=ANY_PARAMS_NOTE, params_ignored=True, service="local"),
    Method("server.time", "The server's clock.", (),
           integer("current Unix time in seconds"), "An integer (Unix seconds).", (),
           notes=ANY_PARAMS_NOTE, params_ignored=True, service="local"),
    Method(
        "server.auth", "Authenticate the connection with a user's token.",
        (Param("token", string("the user's session token, passed to the auth service as "
                               "`Authorization`", example="token-of-user-1")),
         Param("source", string("the client's name, shorter than 32 bytes", example="web",
                                max_bytes=31))),
        SUCCESS, "`{\"status\": \"success\"}`.",
        (INVALID,
         generic(INTERNAL_ERROR, "the auth service is unreachable, or its reply is unusable "
                 "(not JSON, no code, no user_id)"),
         generic(SERVICE_UNAVAILABLE, "no auth_url is configured"),
         TIMEOUT,
         *errors_of("server.auth")),
        notes="accessws asks the operator's auth service: HTTP GET `auth_url` with "
        "`Authorization: <token>`; it must answer `{\"code\": 0, \"data\": {\"user_id\": N}}`. "
        "Authenticating again as another user drops the previous user's order and asset "
        "subscriptions on this connection.",
        service="local",
    ),
    Method(
        "server.sign", "Authenticate the connection with an API key's signature.",
        (Param("access_id", string("the API key id", example="key-1")),
         Param("authorisation", string("the signature, checked by the sign service",
                                       example="signature")),
         Param("tonce", integer("a non-zero nonce/time value, checked by the sign service",
                                minimum=None, maximum=None, example=1700000000000))),
        SUCCESS, "`{\"status\": \"success\"}`.",
        (INVALID,
         generic(INTERNAL_ERROR, "the sign service is unreachable or its reply unusable"),
         generic(SERVICE_UNAVAILABLE, "no sign_url is configured"),
         TIMEOUT,
         *errors_of("server.sign")),
        notes="HTTP GET `sign_url?access_id=...&tonce=...` with `Authorization: "
        "<authorisation>`; same reply contract as server.auth. The source is `api`.",
        service="local",
    ),
    forwarded("kline.query", "market.kline", "Candlesticks (k-lines) of a market."),
    Method(
        "kline.subscribe", "Receive `kline.update` for one market and interval.",
        (Param("market", MARKET_WS),
         Param("interval", integer("bucket length in seconds (as market.kline)", minimum=1,
                                   maximum=None, example=60))),
        SUCCESS, "`{\"status\": \"success\"}`.",
        (generic(INVALID_ARGUMENT, "wrong count, market not a string or 16 bytes or "
                 "longer, interval not a positive integer"),),
        notes="Replaces this connection's k-line subscription. Nothing is sent at once; the "
        "first push follows the first poll that returns rows.",
        service="local",
    ),
    unsubscribe("kline"),
    forwarded("depth.query", "order.depth", "The order book aggregated by price level."),
    Method(
        "depth.subscribe", "Receive `depth.update` for one market, depth and merge step.",
        (Param("market", MARKET_WS),
         Param("limit", integer("levels per side: one of the configured depth_limit values "
                                "(default 1, 5, 10, 20, 30, 50, 100)", minimum=1,
                                maximum=None, example=10)),
         Param("interval", string("merge step as a decimal string, numerically one of "
                                  "depth_merge (default \"0\", \"0.00000001\" ... \"0.1\")",
                                  example="0", max_bytes=15))),
        SUCCESS, "`{\"status\": \"success\"}`.",
        (generic(INVALID_ARGUMENT, "wrong count or type, limit not in depth_limit, interval "
                 "not in depth_merge"),),
        notes="Replaces this connection's depth subscription. After the success reply a full "
        "snapshot (`clean` = true) is sent at once when one is cached; otherwise it follows the "
        "first poll.",
        service="local",
    ),
    unsubscribe("depth"),
    forwarded("price.query", "market.last", "A market's last price."),
    list_subscribe("price", "price.update", "Markets with a known non-zero price get a "
                   "`price.update` at once."),
    unsubscribe("price"),
    forwarded("state.query", "market.status", "Price and volume statistics over a period."),
    list_subscribe("state", "state.update", "Markets with cached data get a `state.update` at "
                   "once."),
    unsubscribe("state"),
    forwarded("today.query", "market.status_today", "Today's open/high/low and 24 h volume."),
    list_subscribe("today", "today.update", "Markets with cached data get a `today.update` at "
                   "once."),
    unsubscribe("today"),
    forwarded("deals.query", "market.deals", "A market's latest deals."),
    list_subscribe("deals", "deals.update", "Markets with cached deals get a `deals.update` "
                   "with up to 100 of them at once."),
    unsubscribe("deals"),
    Method(
        "order.query", "This user's open orders in a market.",
        (Param("market", string("market name", example="BTCBCH")),
         Param("offset", integer("orders to skip", example=0)),
         Param("limit", integer("orders to return, at most 101", maximum=101, example=10))),
        _HTTP["order.pending"].result, _HTTP["order.pending"].result_doc,
        (BACKEND_DOWN, NEED_AUTH, INVALID, TIMEOUT),
        notes="Exactly 3 params. Sent to `order.pending` as `[user_id, market, offset, "
        "limit]`; not cached. The backend connection is checked before the authentication.",
        service="matchengine", auth=True, forwards="order.pending",
    ),
    Method(
        "order.query_stop", "This user's pending stop orders.",
        (Param("market", nullable(string("market name"), "market name, or null for every "
                                  "market") | {"examples": ["BTCBCH"]}),
         Param("side", integer("0 = both sides, 1 = ask, 2 = bid", enum=[0, 1, 2], example=0)),
         Param("offset", integer("stops to skip", example=0)),
         Param("limit", integer("stops to return, at most 101", maximum=101, example=10))),
        _HTTP["order.pending_stop"].result, _HTTP["order.pending_stop"].result_doc,
        (BACKEND_DOWN, NEED_AUTH, INVALID, TIMEOUT),
        notes="Exactly 4 params (the CoinEx fork's layout). Sent to `order.pending_stop` as "
        "`[user_id, market, side, offset, limit]`; not cached. The backend connection is "
        "checked before the authentication.",
        service="matchengine", auth=True, forwards="order.pending_stop",
    ),
    Method(
        "order.history", "This user's finished orders.",
        _HTTP["order.finished"].params[1:6] + (Param(
            "side", integer("0 = both, 1 = ask, 2 = bid", enum=[0, 1, 2], example=0,
                            lenient=True)),),
        _HTTP["order.finished"].result, _HTTP["order.finished"].result_doc,
        (BACKEND_DOWN, NEED_AUTH, generic(INVALID_ARGUMENT, "not exactly 6 params, or "
                                          "refused by order.finished"), TIMEOUT,
         *(e for e in _HTTP["order.finished"].errors if e.code != 1)),
        notes="Exactly 6 params: `[market, start_time, end_time, offset, limit, side]`, sent "
        "to `order.finished` with the user id in front.",
        service="readhistory", auth=True, forwards="order.finished",
    ),
    Method(
        "order.subscribe", "Receive `order.update` for this user's orders in some markets.",
        (Param("market", MARKET_WS, "markets to follow (replaces the previous list)",
               required=False, variadic=True),),
        SUCCESS, "`{\"status\": \"success\"}`.",
        (NEED_AUTH, generic(INVALID_ARGUMENT, "a name that is not a string or is 16 bytes "
                            "or longer (the names before it stay subscribed)")),
        service="local", auth=True,
    ),
    unsubscribe("order", auth=True),
    Method(
        "asset.query", "This user's balances.",
        (Param("asset", ASSET_NAME, "assets to show; none = all", required=False,
               variadic=True),),
        map_of(BALANCE, "asset name -> balance", key="asset"),
        _HTTP["balance.query"].result_doc,
        (NEED_AUTH, BACKEND_DOWN, generic(INVALID_ARGUMENT, "an unknown asset"), TIMEOUT),
        notes="Sent to `balance.query` with the user id in front. Authentication is checked "
        "first.",
        service="matchengine", auth=True, forwards="balance.query",
    ),
    Method(
        "asset.history", "This user's balance history.",
        _HTTP["balance.history"].params[1:],
        _HTTP["balance.history"].result, _HTTP["balance.history"].result_doc,
        (BACKEND_DOWN, NEED_AUTH, generic(INVALID_ARGUMENT, "not exactly 6 params, or "
                                          "refused by balance.history"), TIMEOUT,
         *(e for e in _HTTP["balance.history"].errors if e.code != 1)),
        notes="Exactly 6 params: `[asset, business, start_time, end_time, offset, limit]`, "
        "sent to `balance.history` with the user id in front.",
        service="readhistory", auth=True, forwards="balance.history",
    ),
    Method(
        "asset.subscribe", "Receive `asset.update` when this user's balance of some assets "
        "changes.",
        (Param("asset", ASSET_WS, "assets to follow (replaces the previous list; duplicates "
               "ignored; empty = none)", required=False, variadic=True),),
        SUCCESS, "`{\"status\": \"success\"}`.",
        (NEED_AUTH, generic(INVALID_ARGUMENT, "a name that is not a string or is 16 bytes "
                            "or longer")),
        service="local", auth=True,
    ),
    unsubscribe("asset", auth=True),
]


WS_PUSHES: list[Push] = [
    Push(
        "kline.update", "New or changed candlesticks.",
        (Param("row", KLINE_ROW, "one or more rows follow: the params array IS the list of "
               "rows `[time, open, close, high, low, volume, deal, market]`", variadic=True),),
        "kline.subscribe",
        "every `kline_interval` (0.5 s) accessws asks market.kline for the last "
        "`kline_interval + 1` seconds; when the last row differs from the previous poll's, "
        "all the rows are sent",
        notes="Unlike the other pushes, `params` is the rows array itself (each element is a "
        "row).",
    ),
    Push(
        "depth.update", "The order book changed.",
        (Param("clean", boolean("true: a full snapshot; false: only the changed levels")),
         Param("depth", obj({"asks": array(DEPTH["properties"]["asks"]["items"]),
                             "bids": array(DEPTH["properties"]["bids"]["items"])},
                            optional=("asks", "bids")),
               "`{\"asks\", \"bids\"}`; in a diff a side without change is left out and a "
               "level whose amount is \"0\" is gone"),
         Param("market", string("market name"))),
        "depth.subscribe",
        "every `depth_interval` (0.5 s) per (market, limit, interval): the first answer is "
        "sent in full, later ones as a diff when something changed, and in full again at "
        "least every 60 s",
        notes="To keep a local book: on `clean` replace it; otherwise for each `[price, "
        "amount]` set the level (amount \"0\" removes it) and keep the best `limit` levels.",
    ),
    Push(
        "price.update", "The last price changed.",
        (Param("market", string("market name")), Param("price", dec("last price"))),
        "price.subscribe", "every `price_interval` (0.5 s): market.last, sent when the value "
        "changed",
    ),
    Push(
        "state.update", "24 hour statistics changed.",
        (Param("market", string("market name")), Param("state", STATUS)),
        "state.subscribe", "every `state_interval` (0.5 s): market.status over 86400 s, sent "
        "when it changed",
    ),
    Push(
        "today.update", "Today's statistics changed.",
        (Param("market", string("market name")), Param("today", STATUS_TODAY)),
        "today.subscribe", "every `today_interval` (0.5 s): market.status_today, sent when it "
        "changed",
    ),
    Push(
        "deals.update", "New deals.",
        (Param("market", string("market name")),
         Param("deals", array(MARKET_DEAL, "newest first"))),
        "deals.subscribe", "every `deals_interval` (0.5 s): market.deals after the last id "
        "seen; only new deals are sent",
    ),
    Push(
        "order.update", "One of this user's orders changed.",
        (Param("event", integer("1 = PUT (placed on the book), 2 = UPDATE (partly filled), "
                                "3 = FINISH (filled, cancelled, or a market order done)",
                                enum=[1, 2, 3])),
         Param("order", ORDER)),
        "order.subscribe", "event driven: every order event of the user in a subscribed "
        "market (the `orders` bus topic)",
    ),
    Push(
        "order.update_stop", "One of this user's stop orders was placed, fired or cancelled.",
        (Param("event", integer("1 = placed, 2 = fired (it became an order), 3 = cancelled",
                                enum=[1, 2, 3])),
         Param("stop", {**STOP, "properties": {
             **STOP["properties"],
             "status": integer("0 for placed and cancelled; when fired: 1 = its order was "
                               "placed, 2 = its order was refused", enum=[0, 1, 2])},
             "required": [*STOP["required"], "status"],
             "description": "the stop object plus `status`"})),
        "order.subscribe", "event driven: every stop event of the user in a market subscribed "
        "with order.subscribe (the `stops` bus topic); followed by `asset.update` for the "
        "market's stock and money (a stop freezes funds)",
        notes="A fired stop's ACTIVE event (2) comes before the `order.update` events of the "
        "order it spawned (which has a new order id).",
    ),
    Push(
        "asset.update", "One of this user's balances changed.",
        (Param("balances", map_of(BALANCE, "asset name -> balance", key="asset"),
               "`{\"<ASSET>\": {\"available\", \"freeze\"}}`"),),
        "asset.subscribe", "event driven: after an order event or balance change touching a "
        "subscribed asset, accessws asks balance.query and sends the answer",
    ),
]

