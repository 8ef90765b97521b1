"""JSON Schema building blocks for the API registry (JSON Schema draft-07, as OpenRPC uses).

Conventions the rest of the package relies on:

* a decimal travelling as a JSON string has ``"format": "decimal"`` (the Python client turns
  those into :class:`decimal.Decimal`);
* ``"x-lenient": true`` on an integer param: the service reads any non-integer as 0 (readhistory,
  rpc.md 0.16), so a wrong JSON type is not by itself an error;
* object schemas list their properties in the order the server writes the keys;
* ``examples`` holds a value that is valid on a fresh embedded server with the default sample
  config (the schema-driven test client builds its calls from it).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

#: What the servers accept as a decimal number (docs/compatibility.md: plain finite decimals).
DECIMAL_IN_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,6})?$"
#: What they write: to-sci-string text (``"1.5"``, ``"1e-8"``, ``"5.0e-7"``, ``"0e-20"``).
DECIMAL_OUT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?$"

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

#: The sample config's first market and its stock (examples in the schemas).
MARKET = "BTCBCH"
STOCK = "BTC"


def dec(description: str = "", example: str | None = None) -> Schema:
    """A decimal number written as a JSON string (output)."""
    s: Schema = {"type": "string", "format": "decimal", "pattern": DECIMAL_OUT_PATTERN}
    if description:
        s["description"] = description
    if example is not None:
        s["examples"] = [example]
    return s


def dec_in(description: str = "", example: str = "1") -> Schema:
    """A decimal number given as a JSON string (input)."""
    return {"type": "string", "format": "decimal", "pattern": DECIMAL_IN_PATTERN,
            "description": description, "examples": [example]}


def integer(description: str = "", minimum: int | None = 0, maximum: int | None = U64_MAX,
            example: int | None = None, enum: list[int] | None = None,
            lenient: bool = False) -> Schema:
    s: Schema = {"type": "integer"}
    if enum is not None:
        s["enum"] = enum
    else:
        if minimum is not None:
            s["minimum"] = minimum
        if maximum is not None:
            s["maximum"] = maximum
    if description:
        s["description"] = description
    if example is not None:
        s["examples"] = [example]
    if lenient:
        s["x-lenient"] = True
    return s


def string(description: str = "", example: str | None = None, max_bytes: int | None = None,
           enum: list[str] | None = None) -> Schema:
    s: Schema = {"type": "string"}
    if enum is not None:
        s["enum"] = enum
    if max_bytes is not None:
        # JSON Schema counts characters; the servers count UTF-8 bytes (same for ASCII)
        s["maxLength"] = max_bytes
        s["x-max-bytes"] = max_bytes
    if description:
        s["description"] = description
    if example is not None:
        s["examples"] = [example]
    return s


def number(description: str = "") -> Schema:
    s: Schema = {"type": "number"}
    if description:
        s["description"] = description
    return s


def time_real(description: str = "Unix time in seconds with microseconds") -> Schema:
    return number(description)


def boolean(description: str = "") -> Schema:
    return {"type": "boolean", "description": description}


def obj(properties: dict[str, Schema], description: str = "",
        optional: tuple[str, ...] = (), additional: bool = False) -> Schema:
    """An object whose keys come in the order of ``properties``."""
    s: Schema = {"type": "object", "properties": properties,
                 "required": [k for k in properties if k not in optional],
                 "additionalProperties": additional}
    if description:
        s["description"] = description
    return s


def map_of(values: Schema, description: str = "", key: str = "key") -> Schema:
    """An object used as a map (keys are names, e.g. assets)."""
    s: Schema = {"type": "object", "additionalProperties": values, "x-key": key}
    if description:
        s["description"] = description
    return s


def array(items: Schema, description: str = "", max_items: int | None = None) -> Schema:
    s: Schema = {"type": "array", "items": items}
    if max_items is not None:
        s["maxItems"] = max_items
    if description:
        s["description"] = description
    return s


def tuple_of(items: list[Schema], description: str = "") -> Schema:
    """A fixed-length array with a schema per position (draft-07 ``items`` list)."""
    s: Schema = {"type": "array", "items": items, "minItems": len(items),
                 "maxItems": len(items), "additionalItems": False}
    if description:
        s["description"] = description
    return s


def nullable(schema: Schema, description: str = "") -> Schema:
    s: Schema = {"oneOf": [schema, {"type": "null"}]}
    if description:
        s["description"] = description
    return s


def const(value: Any, description: str = "") -> Schema:
    s: Schema = {"const": value}
    if isinstance(value, str):
        s["type"] = "string"
    if description:
        s["description"] = description
    return s


ANY: Schema = {}

SUCCESS = obj({"status": const("success")}, "always `{\"status\": \"success\"}`")

# -- parameter schemas ----------------------------------------------------------------------------

USER_ID = integer("user id, 1 to 2^32-1", minimum=1, maximum=U32_MAX, example=1)
MARKET_NAME = string("market name, as listed by market.list", example=MARKET)
ASSET_NAME = string("asset name, as listed by asset.list", example=STOCK)
SIDE = integer("1 = ask (sell), 2 = bid (buy)", enum=[1, 2], example=1)
SOURCE = string("free text kept with the order, fewer than 31 bytes", example="api", max_bytes=30)
OFFSET = integer("records to skip", example=0)
ORDER_ID = integer("order id", minimum=1, example=1)

# -- result shapes --------------------------------------------------------------------------------

ORDER = obj(
    {
        "id": integer("order id", minimum=1),
        "market": string("market name"),
        "source": string("the client's tag given at placement (absent only for orders restored "
                         "from a slice written by the original)"),
        "type": integer("1 = limit, 2 = market", enum=[1, 2]),
        "side": integer("1 = ask (sell), 2 = bid (buy)", enum=[1, 2]),
        "user": integer("user id", minimum=1),
        "ctime": time_real("creation time (Unix seconds with microseconds)"),
        "mtime": time_real("last update time"),
        "price": dec("limit price; \"0\" for market orders"),
        "amount": dec("amount in stock (market bid: in money)"),
        "taker_fee": dec("taker fee rate"),
        "maker_fee": dec("maker fee rate (\"0\" for market orders)"),
        "left": dec("amount not filled yet (stock; market bid: money)"),
        "deal_stock": dec("stock filled so far"),
        "deal_money": dec("money filled so far (sum of price x amount)"),
        "deal_fee": dec("fees paid so far (ask: in money, bid: in stock)"),
        "option": integer("the fork's option bits given at placement (only on orders placed "
                          "with the fork's trailing params, and on orders a stop spawned)"),
        "client_id": string("the client's id given at placement (\"\" = none; only with "
                            "`option`)"),
    },
    "an order (rpc.md 3.1); `option` and `client_id` only on orders placed with the CoinEx "
    "fork's trailing params (or spawned by a stop)",
    optional=("source", "option", "client_id"),
)

FINISHED_ORDER = obj(
    {
        "id": integer("order id", minimum=1),
        "ctime": time_real("creation time"),
        "ftime": time_real("finish time"),
        "user": integer("user id", minimum=1),
        "market": string("market name"),
        "source": string("the client's tag"),
        "type": integer("1 = limit, 2 = market", enum=[1, 2]),
        "side": integer("1 = ask, 2 = bid", enum=[1, 2]),
        "price": dec("limit price (\"0\" for market orders)"),
        "amount": dec("amount"),
        "taker_fee": dec("taker fee rate"),
        "maker_fee": dec("maker fee rate"),
        "deal_stock": dec("stock filled"),
        "deal_money": dec("money filled"),
        "deal_fee": dec("fees paid"),
    },
    "a finished order from the trade history (no `left`, no `mtime`)",
)

STOP = obj(
    {
        "id": integer("stop id (from the order id sequence)", minimum=1),
        "type": integer("1 = stop-limit, 2 = stop-market", enum=[1, 2]),
        "side": integer("1 = ask (sell), 2 = bid (buy)", enum=[1, 2]),
        "user": integer("user id", minimum=1),
        "option": integer("option bits as stored (the given bits | 0x40 stop | 0x04 unlimited "
                          "min amount)"),
        "state": integer("1 = LOW list (fires when the last price falls to stop_price), 2 = "
                         "HIGH list (fires when it rises to it)", enum=[1, 2]),
        "ctime": time_real("creation time (Unix seconds with microseconds)"),
        "mtime": time_real("last update time"),
        "market": string("market name"),
        "source": string("the client's tag"),
        "client_id": string("the client's id (\"\" = none)"),
        "stop_price": dec("the trigger price"),
        "price": dec("limit price of the order it will spawn (\"0\" for stop-market)"),
        "amount": dec("amount in stock (stop-market bid: in money)"),
        "taker_fee": dec("taker fee rate"),
        "maker_fee": dec("maker fee rate (\"0\" for stop-market)"),
        "fee_discount": const("1", "always \"1\" (fees in another asset are not supported)"),
        "fee_asset": {"type": "null", "description": "always null (fees in another asset are "
                      "not supported)"},
    },
    "a stop order (the CoinEx fork's stop object without `account`)",
)

FINISHED_STOP = obj(
    {
        "id": integer("stop id", minimum=1),
        "ctime": time_real("creation time"),
        "ftime": time_real("finish time (fired or cancelled)"),
        "user": integer("user id", minimum=1),
        "option": integer("option bits as stored"),
        "market": string("market name"),
        "source": string("the client's tag"),
        "type": integer("1 = stop-limit, 2 = stop-market", enum=[1, 2]),
        "side": integer("1 = ask, 2 = bid", enum=[1, 2]),
        "stop_price": dec("the trigger price"),
        "price": dec("limit price (\"0\" for stop-market)"),
        "amount": dec("amount"),
        "taker_fee": dec("taker fee rate"),
        "maker_fee": dec("maker fee rate"),
        "fee_asset": {"type": "null", "description": "always null"},
        "fee_discount": const("1", "always \"1\""),
        "status": integer("1 = fired, order placed; 2 = fired, order refused; 3 = cancelled",
                          enum=[1, 2, 3]),
        "client_id": string("the client's id (\"\" = none)"),
        "order_id": integer("the order the stop spawned (0: none: refused or cancelled)"),
    },
    "a finished stop from the stop history",
)

BALANCE = obj({"available": dec("available balance"), "freeze": dec("frozen by open orders")})

DEPTH_LEVEL = tuple_of([dec("price"), dec("amount (sum of `left` at this price)")],
                       "[price, amount]")
DEPTH = obj({"asks": array(DEPTH_LEVEL, "asks, lowest price first"),
             "bids": array(DEPTH_LEVEL, "bids, highest price first")})

MARKET_DEAL = obj(
    {
        "id": integer("deal id", minimum=1),
        "time": time_real("deal time"),
        "price": dec("price"),
        "amount": dec("amount (stock)"),
        "type": string("the taker's side", enum=["buy", "sell"]),
    },
    "a deal of the market",
)

KLINE_ROW = tuple_of(
    [
        integer("bucket start (Unix seconds)"),
        dec("open"), dec("close"), dec("high"), dec("low"),
        dec("volume (stock)"), dec("deal (money)"),
        string("market"),
    ],
    "[time, open, close, high, low, volume, deal, market]",
)

STATUS = obj(
    {
        "period": integer("the period asked for (seconds)", minimum=1),
        "last": dec("last price"),
        "open": dec("first price of the period (\"0\" with no deal in it)"),
        "close": dec("last price of the period"),
        "high": dec("highest price"),
        "low": dec("lowest price"),
        "volume": dec("stock traded"),
        "deal": dec("money traded"),
    },
)

STATUS_TODAY = obj(
    {
        "open": dec("today's first price (local day)"),
        "last": dec("last price"),
        "high": dec("today's highest price"),
        "low": dec("today's lowest price"),
        "volume": dec("stock traded in the last 24 hours"),
        "deal": dec("money traded in the last 24 hours"),
    },
)


def paged(records: Schema, description: str = "") -> Schema:
    """readhistory's ``{"offset", "limit", "records"}``."""
    return obj({"offset": integer("as asked"), "limit": integer("as asked"),
                "records": array(records, description or "newest first")})
