"""The HTTP JSON-RPC methods (the method table accesshttp routes, common/methods.py), documented.

Facts follow ../shared/spec/rpc.md and docs/compatibility.md (where this implementation
differs from the original on purpose).
"""

from __future__ import annotations

from exchange_server.api.model import Method, Param
from exchange_server.api.schema import (
    ASSET_NAME,
    BALANCE,
    DECIMAL_IN_PATTERN,
    DEPTH,
    FINISHED_ORDER,
    FINISHED_STOP,
    KLINE_ROW,
    MARKET_DEAL,
    MARKET_NAME,
    OFFSET,
    ORDER,
    ORDER_ID,
    SIDE,
    SOURCE,
    STATUS,
    STATUS_TODAY,
    STOP,
    SUCCESS,
    USER_ID,
    Schema,
    array,
    boolean,
    dec,
    dec_in,
    integer,
    map_of,
    nullable,
    obj,
    paged,
    string,
    time_real,
)
from exchange_server.common.errors import (
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    INVALID_BECAUSE,
    REQUIRE_AUTH,
    SERVICE_UNAVAILABLE,
    ErrorCode,
    errors_of,
    generic,
)
from exchange_server.common.limits import KLINE_MAX_ROWS

ME = "matchengine"
RH = "readhistory"
MP = "marketprice"


def invalid(when: str) -> ErrorCode:
    return generic(INVALID_ARGUMENT, when)


UNAVAILABLE_WRITE = generic(SERVICE_UNAVAILABLE,
                            "the operation log, the history writer or the message bus has more "
                            "pending work than its bound (back-pressure); retry later")
RH_INTERNAL = generic(INTERNAL_ERROR, "the history database failed")
RH_BUSY = generic(SERVICE_UNAVAILABLE,
                  "10 x worker_num queries are already pending (checked before the params)")
MP_INTERNAL = generic(INTERNAL_ERROR, "unexpected failure inside marketprice")

MATCHENGINE_INT_NOTE = ("Integers must be JSON integers, non-negative and in range (user ids "
                        "32-bit, other ids 64-bit); `true`/`false` are not integers.")
READHISTORY_LENIENT_NOTE = (
    "Integer params are read leniently, as the original does: anything that is not a JSON "
    "integer (a string, a real, a boolean, null) reads as 0. Negative integers and integers "
    "out of range are refused with code 1.")
LIMIT_RH = integer("records to return, 1 to 101", minimum=1, maximum=101, example=10,
                   lenient=True)
OFFSET_RH = integer("records to skip", example=0, lenient=True)
USER_RH = integer("user id, 1 to 2^32-1", minimum=1, maximum=2**32 - 1, example=1, lenient=True)
TIME_RH = integer("Unix seconds; 0 = unbounded", example=0, lenient=True)
MARKET_RH = string("market name (any string; an unknown market has no records)",
                   example="BTCBCH")


# -- the CoinEx fork's extensions (docs/compatibility.md, last section) ---------------------------

OPTION_DOC = (
    "the fork's option bits: 0x04 no minimum amount check, 0x08 immediate-or-cancel, 0x10 "
    "fill-or-kill, 0x40 stop (no effect), 0x80 post-only, 0x100/0x200/0x300 self-trade "
    "prevention (cancel taker / cancel maker / both), 0x400 no self-trade prevention (whatever "
    "the matchengine's self_trade_prevention config says; not with 0x100-0x300); 0x01, 0x02, "
    "0x20 are refused (code 1); a non-integer reads as 0")
FEE_ASSET_SCHEMA: Schema = {
    "oneOf": [{"type": "null"}, {"type": "string", "maxLength": 0}],
    "description": "the fork's fee asset: fees in another asset are not supported, so it must "
    "be none (null, \"\" or any non-string)",
    "examples": [None],
}
FEE_DISCOUNT_SCHEMA: Schema = {
    "oneOf": [{"type": "null"}, {"type": "string", "maxLength": 0},
              {"type": "string", "format": "decimal", "pattern": DECIMAL_IN_PATTERN}],
    "description": "the fork's fee discount (unused): null, \"\" or a decimal from 0 to 1",
    "examples": [None],
}
CLIENT_ID_SCHEMA: Schema = {
    "oneOf": [{"type": "string", "pattern": "^[A-Za-z0-9_-]{0,32}$", "maxLength": 32},
              {"type": "null"}],
    "description": "the client's own id for the order: at most 32 bytes of A-Z a-z 0-9 - _; "
    "\"\" or a non-string = none; not unique, no lookup by it",
    "examples": [""],
}


def option_param(description: str = OPTION_DOC) -> Param:
    return Param("option", integer(description, maximum=1023, example=0, lenient=True),
                 required=False)


#: ``fee_asset, fee_discount[, option[, client_id]]`` after the original's params.
FORK_TRAILING = (
    Param("fee_asset", FEE_ASSET_SCHEMA, required=False),
    Param("fee_discount", FEE_DISCOUNT_SCHEMA, FEE_DISCOUNT_SCHEMA["description"]
          + "; given together with fee_asset (both or neither)", required=False),
    option_param(),
    Param("client_id", CLIENT_ID_SCHEMA, required=False),
)
#: The same for stop orders, where fee_asset and fee_discount are required.
STOP_TRAILING = (
    Param("fee_asset", FEE_ASSET_SCHEMA),
    Param("fee_discount", FEE_DISCOUNT_SCHEMA),
    option_param(OPTION_DOC + "; 0x10 and 0x80 are refused on stops"),
    Param("client_id", CLIENT_ID_SCHEMA, required=False),
)
FORK_NOTE = (
    "With the fork's trailing params `fee_asset` must be none and `fee_discount` is unused; "
    "an order placed with them has two more keys at the end, `option` and `client_id`. ")
STOP_FEE_NOTE = ("`fee_asset` must be none and `fee_discount` is unused; fill-or-kill (0x10) and "
                 "post-only (0x80) are refused on stops (code 1), immediate-or-cancel (0x08) "
                 "applies to the order a stop-limit spawns. ")
STOP_NOTE = (
    "The market must have a last price and `stop_price` must differ from it (else 11). The stop "
    "goes to the HIGH list if stop_price > last (fires when the price rises to it), else to the "
    "LOW list. **The funds are frozen at once** (ask: amount of stock; limit bid: amount x "
    "price; market bid: amount of money) and released when it fires or is cancelled. When the "
    "last price reaches it, it becomes an ordinary order with a new order id (the stop then "
    "leaves the book with status 1 placed or 2 refused). Pushes `order.update_stop` (event 1) "
    "and `asset.update`. " + MATCHENGINE_INT_NOTE)
ADMIN_NOTE = (
    "**Admin method**: accesshttp refuses it with HTTP 403 and error 6 unless the request "
    "carries `Authorization: Bearer <token>` and a token is configured (`admin_token` in "
    "accesshttp's config, `exchange-server run --admin-token TOKEN` or "
    "`$EXCHANGE_ADMIN_TOKEN`); without a configured token it is always refused (inside a batch, "
    "only that element). A logged command (the follower, replay and slices see it); nothing "
    "needs a restart. ")
NEED_ADMIN = generic(REQUIRE_AUTH, "no `Authorization: Bearer <admin token>` "
                   "header, a wrong token, or no admin token configured (HTTP 403)")
STOP_ID = integer("stop id (as returned by order.put_stop_*)", minimum=1, example=1)
SIDE_OR_BOTH = integer("0 = both sides, 1 = ask, 2 = bid", enum=[0, 1, 2], example=0)
ASSET_DETAIL: Schema = {
    "type": "object",
    "properties": {
        "name": string("asset name, 1 to 15 characters; a new asset's at most 15 bytes"),
        "prec_save": integer("decimal places stored; may only grow for an existing asset",
                             maximum=None),
        "prec_show": integer("decimal places shown (<= prec_save; default prec_save)",
                             maximum=None),
    },
    "required": ["name", "prec_save"],
    "description": "an asset exactly as in the matchengine's config file",
    "examples": [{"name": "BTC", "prec_save": 12, "prec_show": 8}],
}
MARKET_DETAIL: Schema = {
    "type": "object",
    "properties": {
        "name": string("market name: a new market's at most 15 bytes of letters, digits, "
                       "`_`, `.`, `-` (an existing one may keep a config-file name of up to "
                       "30 characters)"),
        "stock": obj({"name": string("stock asset"),
                      "prec": integer("decimal places of amounts", maximum=None)}),
        "money": obj({"name": string("money asset"),
                      "prec": integer("decimal places of prices", maximum=None)}),
        "fee_prec": integer("decimal places of fee rates (default 4)", maximum=None),
        "min_amount": dec_in("smallest order amount (default 0.01)", "0.001"),
    },
    "required": ["name", "stock", "money"],
    "description": "a market exactly as in the matchengine's config file",
    "examples": [{"name": "BTCBCH", "stock": {"name": "BTC", "prec": 8},
                  "money": {"name": "BCH", "prec": 8}, "fee_prec": 4, "min_amount": "0.001"}],
}


HTTP_METHODS: list[Method] = [
    # -- balances ---------------------------------------------------------------------------------
    Method(
        "balance.query", "A user's available and frozen balance per asset.",
        (
            Param("user_id", USER_ID),
            Param("asset", ASSET_NAME, "an asset to show; none = every configured asset",
                  required=False, variadic=True),
        ),
        map_of(BALANCE, "asset name -> balance", key="asset"),
        "An object keyed by asset name, in the order asked (or config order): "
        "`{\"BTC\": {\"available\": \"1.5\", \"freeze\": \"0\"}, ...}`. A user without a "
        "balance shows `\"0\"`. Values are truncated to the asset's `prec_show`.",
        (invalid("no params, a bad user id, or an unknown asset"),),
        notes=MATCHENGINE_INT_NOTE,
        service=ME,
    ),
    Method(
        "balance.update", "Credit or debit a user's available balance (deposit, withdrawal, "
        "any business).",
        (
            Param("user_id", USER_ID),
            Param("asset", ASSET_NAME),
            Param("business", string("business name, at most 30 characters (e.g. deposit, "
                                     "withdraw)", example="deposit", max_bytes=30)),
            Param("business_id", integer("the caller's id of this change, used to refuse "
                                         "repeats", example=1)),
            Param("change", dec_in("amount: positive credits, negative debits; truncated to "
                                   "the asset's prec_show", example="10")),
            Param("detail", {"type": "object", "description": "any JSON object, stored in the "
                             "balance history with `\"id\": business_id` appended",
                             "examples": [{}]}),
        ),
        SUCCESS,
        "`{\"status\": \"success\"}`.",
        (
            invalid("wrong param count or type, unknown asset, business name over 30 "
                    "characters, detail not an object"),
            UNAVAILABLE_WRITE,
            *errors_of("balance.update"),
        ),
        notes="Exactly 6 params. Each success writes a balance-history row, a `balances` bus "
        "message and an operation-log record. The repeat check survives restarts (it is kept "
        "in slices; docs/compatibility.md 0.2). " + MATCHENGINE_INT_NOTE,
        service=ME, write=True,
    ),
    Method(
        "balance.history", "A user's balance changes, newest first.",
        (
            Param("user_id", USER_RH),
            Param("asset", string("asset name; \"\" = all", example="")),
            Param("business", string("business name; \"\" = all", example="")),
            Param("start_time", TIME_RH, "changes at or after this time (0 = no bound)"),
            Param("end_time", TIME_RH, "changes before this time (0 = no bound)"),
            Param("offset", OFFSET_RH),
            Param("limit", LIMIT_RH),
        ),
        paged(obj({
            "time": time_real("time of the change"),
            "asset": string("asset"),
            "business": string("business name (trade: `trade`)"),
            "change": dec("the change (rounded to 8 decimals in history)"),
            "balance": dec("total balance (available + frozen) after the change"),
            "detail": {"type": "object", "description": "the detail given to balance.update "
                       "plus `id`; for trades `{\"a\", \"f\"?, \"i\", \"m\", \"p\"}`"},
        })),
        "`{\"offset\", \"limit\", \"records\": [...]}`, newest first.",
        (invalid("wrong param count, user id 0, asset or business not a string, "
                 "start_time > end_time (end_time != 0), limit not 1..101"),
         RH_INTERNAL, RH_BUSY),
        notes="Exactly 7 params. " + READHISTORY_LENIENT_NOTE + " History is written by a "
        "follower process shortly after the operation: a change may take a moment to appear.",
        service=RH,
    ),
    # -- assets -----------------------------------------------------------------------------------
    Method(
        "asset.list", "The configured assets.",
        (),
        array(obj({"name": string("asset name"),
                   "prec": integer("decimal places shown (prec_show)")})),
        "`[{\"name\", \"prec\"}, ...]` in config order.",
        (),
        params_ignored=True, service=ME,
    ),
    Method(
        "asset.summary", "Totals of every user's balances per asset.",
        (Param("asset", ASSET_NAME, "an asset to show; none = every asset", required=False,
               variadic=True),),
        array(obj({
            "name": string("asset name"),
            "total_balance": dec("available + frozen, all users"),
            "available_count": integer("users with a non-zero available balance"),
            "available_balance": dec("sum of available balances"),
            "freeze_count": integer("users with a non-zero frozen balance"),
            "freeze_balance": dec("sum of frozen balances"),
        })),
        "One object per asset. Values are raw stored balances (prec_save, not truncated).",
        (invalid("an unknown asset"),),
        service=ME,
    ),
    # -- orders -----------------------------------------------------------------------------------
    Method(
        "order.put_limit", "Place a limit order; it matches at once as far as it can.",
        (
            Param("user_id", USER_ID),
            Param("market", MARKET_NAME),
            Param("side", SIDE),
            Param("amount", dec_in("amount of stock, > 0, truncated to stock_prec", "1")),
            Param("price", dec_in("limit price, > 0, truncated to money_prec", "100")),
            Param("taker_fee_rate", dec_in("0 <= rate < 1, truncated to fee_prec", "0.002")),
            Param("maker_fee_rate", dec_in("0 <= rate < 1, truncated to fee_prec", "0.001")),
            Param("source", SOURCE),
            *FORK_TRAILING,
        ),
        ORDER,
        "The order as it is after matching (`left` = \"0\" when it filled completely: it is "
        "then already finished; with immediate-or-cancel, what did not fill is cancelled).",
        (
            invalid("wrong count or type, unknown market, side not 1/2, amount or price <= 0, "
                    "fee rate outside [0, 1), source of 31 bytes or more, a fee asset, an "
                    "unsupported option bit, a bad client_id"),
            UNAVAILABLE_WRITE,
            *errors_of("order.put_limit"),
        ),
        notes="8 params (the original's), or 10 to 12 with the CoinEx fork's trailing "
        "`fee_asset, fee_discount[, option[, client_id]]`. Ask = sell stock for money, bid = "
        "buy stock with money. " + FORK_NOTE + "Checks in order: params (1), suspended (30), "
        "balance (10), minimum amount (11), fill-or-kill (12), post-only (13). A user's orders "
        "trade with each other as in the original, unless self-trade prevention is on (the "
        "matchengine's self_trade_prevention config, or option bits 0x100-0x300): then an order "
        "that prevention cancelled has `\"stp_cancelled\": true`, and the reply lists the own "
        "resting orders it cancelled in `stp_cancelled_orders`. Pushes `order.update` "
        "(PUT, then UPDATE/FINISH as it fills) and `asset.update` to WebSocket subscribers. "
        + MATCHENGINE_INT_NOTE,
        service=ME, write=True,
    ),
    Method(
        "order.put_market", "Place a market order: it takes from the book at once and "
        "finishes.",
        (
            Param("user_id", USER_ID),
            Param("market", MARKET_NAME),
            Param("side", SIDE),
            Param("amount", dec_in("ask: stock to sell (truncated to stock_prec); bid: money "
                                   "to spend (truncated to money_prec)", "1")),
            Param("taker_fee_rate", dec_in("0 <= rate < 1, truncated to fee_prec", "0.002")),
            Param("source", SOURCE),
            *FORK_TRAILING,
        ),
        ORDER,
        "The finished order (type 2, price \"0\", maker_fee \"0\").",
        (
            invalid("wrong count or type, unknown market, side not 1/2, amount <= 0, fee rate "
                    "outside [0, 1), source too long, a fee asset, an unsupported option bit, "
                    "a bad client_id"),
            UNAVAILABLE_WRITE,
            *errors_of("order.put_market"),
        ),
        notes="6 params (the original's), or 8 to 10 with the CoinEx fork's trailing "
        "`fee_asset, fee_discount[, option[, client_id]]`. " + FORK_NOTE
        + "Immediate-or-cancel and post-only have no effect on market orders. A market bid "
        "whose money cannot buy one stock unit still gets an order id and finishes with "
        "nothing dealt (rpc.md 0.7). Unlike the original, a bid's amount is truncated "
        "to money_prec (compatibility 0.3). " + MATCHENGINE_INT_NOTE,
        service=ME, write=True,
    ),
    Method(
        "order.cancel", "Cancel an open order; its frozen funds return to available.",
        (
            Param("user_id", USER_ID),
            Param("market", MARKET_NAME),
            Param("order_id", ORDER_ID),
        ),
        ORDER,
        "The order as it was just before removal.",
        (
            invalid("wrong count or type, unknown market"),
            UNAVAILABLE_WRITE,
            *errors_of("order.cancel"),
        ),
        notes="Exactly 3 params. Pushes `order.update` with event 3 (FINISH).",
        service=ME, write=True,
    ),
    Method(
        "order.book", "Open orders on one side of a market, in matching priority.",
        (
            Param("market", MARKET_NAME),
            Param("side", SIDE),
            Param("offset", OFFSET),
            Param("limit", integer("orders to return, 0 to 101", maximum=101, example=10)),
        ),
        obj({"offset": integer("as asked"), "limit": integer("as asked"),
             "total": integer("open orders on that side"),
             "orders": array(ORDER, "asks: price ascending; bids: price descending; equal "
                             "prices: older first")}),
        "`{\"offset\", \"limit\", \"total\", \"orders\"}` (note: `orders`, and offset first).",
        (invalid("wrong count or type, unknown market, limit > 101"),),
        notes="Exactly 4 params.",
        service=ME,
    ),
    Method(
        "order.depth", "The order book aggregated by price level.",
        (
            Param("market", MARKET_NAME),
            Param("limit", integer("levels per side, 0 to 101", maximum=101, example=10)),
            Param("interval", dec_in("merge levels to multiples of this price step; \"0\" = "
                                     "no merging (truncated to money_prec)", "0")),
        ),
        DEPTH,
        "`{\"asks\": [[price, amount], ...], \"bids\": [...]}`, best price first, at most "
        "`limit` levels per side.",
        (invalid("wrong count or type, unknown market, limit > 101, negative interval"),),
        notes="Exactly 3 params. With an interval, ask levels round up to a multiple of it and "
        "bid levels round down. Unlike the original (0.45 s cache) the answer always shows the "
        "current book.",
        service=ME,
    ),
    Method(
        "order.pending", "A user's open orders in a market, newest first.",
        (
            Param("user_id", USER_ID),
            Param("market", MARKET_NAME),
            Param("offset", OFFSET),
            Param("limit", integer("orders to return, 0 to 101", maximum=101, example=10)),
        ),
        obj({"limit": integer("as asked"), "offset": integer("as asked"),
             "total": integer("the user's open orders in this market"),
             "records": array(ORDER, "newest first (order id descending)")}),
        "`{\"limit\", \"offset\", \"total\", \"records\"}` (note the key order, limit first).",
        (invalid("wrong count or type, unknown market, limit > 101"),),
        notes="Exactly 4 params.",
        service=ME,
    ),
    Method(
        "order.pending_detail", "One open order.",
        (Param("market", MARKET_NAME), Param("order_id", ORDER_ID)),
        nullable(ORDER),
        "The order, or `null` when no such order is open in that market.",
        (invalid("wrong count or type, unknown market"),),
        notes="Exactly 2 params.",
        service=ME,
    ),
    Method(
        "order.finished", "A user's finished orders from the trade history, newest first.",
        (
            Param("user_id", USER_RH),
            Param("market", MARKET_RH),
            Param("start_time", TIME_RH, "orders created at or after (0 = no bound)"),
            Param("end_time", TIME_RH, "orders created before (0 = no bound)"),
            Param("offset", OFFSET_RH),
            Param("limit", LIMIT_RH),
            Param("side", integer("0 = both, 1 = ask, 2 = bid", enum=[0, 1, 2], example=0,
                                  lenient=True), required=False),
        ),
        paged(FINISHED_ORDER),
        "`{\"offset\", \"limit\", \"records\": [finished order, ...]}`.",
        (invalid("fewer than 6 params, user id 0, market not a string, start_time > end_time, "
                 "limit not 1..101, side not 0/1/2"),
         RH_INTERNAL, RH_BUSY),
        notes="6 or 7 params. The time filter is on the creation time (rpc.md 0.17). Orders "
        "cancelled with nothing filled are not in the history (rpc.md 0.8). "
        + READHISTORY_LENIENT_NOTE,
        service=RH,
    ),
    Method(
        "order.deals", "The deals of one order, newest first.",
        (Param("order_id", integer("order id", minimum=1, example=1, lenient=True)),
         Param("offset", OFFSET_RH), Param("limit", LIMIT_RH)),
        paged(obj({
            "time": time_real("deal time"),
            "user": integer("the order's user"),
            "id": integer("deal id"),
            "role": integer("1 = maker, 2 = taker", enum=[1, 2]),
            "price": dec("price"),
            "amount": dec("amount (stock)"),
            "deal": dec("price x amount (money)"),
            "fee": dec("this order's fee for the deal"),
            "deal_order_id": integer("the other order"),
        })),
        "`{\"offset\", \"limit\", \"records\": [...]}`.",
        (invalid("wrong count, order id 0, limit not 1..101"), RH_INTERNAL, RH_BUSY),
        notes="Exactly 3 params. " + READHISTORY_LENIENT_NOTE,
        service=RH,
    ),
    Method(
        "order.finished_detail", "One finished order from the trade history.",
        (Param("order_id", integer("order id", minimum=1, example=1, lenient=True)),),
        nullable(FINISHED_ORDER),
        "The finished order, or `null` (unknown, still open, or cancelled with nothing "
        "filled).",
        (invalid("wrong count, order id 0"), RH_INTERNAL, RH_BUSY),
        notes="Exactly 1 param. " + READHISTORY_LENIENT_NOTE,
        service=RH,
    ),
    # -- the CoinEx fork's stop orders and bulk cancels --------------------------------------------
    Method(
        "order.put_stop_limit", "Place a stop-limit order: a limit order placed when the last "
        "price reaches the stop price.",
        (
            Param("user_id", USER_ID),
            Param("market", MARKET_NAME),
            Param("side", SIDE),
            Param("amount", dec_in("amount of stock, > 0, truncated to stock_prec", "1")),
            Param("stop_price", dec_in("trigger price, > 0, != the last price, truncated to "
                                       "money_prec", "90")),
            Param("price", dec_in("limit price of the order it spawns, > 0, truncated to "
                                  "money_prec", "90")),
            Param("taker_fee_rate", dec_in("0 <= rate < 1, truncated to fee_prec", "0.002")),
            Param("maker_fee_rate", dec_in("0 <= rate < 1, truncated to fee_prec", "0.001")),
            Param("source", SOURCE),
            *STOP_TRAILING,
        ),
        STOP,
        "The stop object (the fork answers only `{\"status\": \"success\"}`; we return the "
        "stop so the client learns its id).",
        (
            invalid("wrong count (11 to 13) or type, unknown market, side not 1/2, amount, "
                    "stop_price or price <= 0, fee rate outside [0, 1), source too long, a fee "
                    "asset, fill-or-kill or post-only, an unsupported option bit"),
            UNAVAILABLE_WRITE,
            *errors_of("order.put_stop_limit"),
        ),
        notes="11 to 13 params (the CoinEx fork's v1 layout without `account`). " + STOP_FEE_NOTE
        + STOP_NOTE,
        service=ME, write=True,
    ),
    Method(
        "order.put_stop_market", "Place a stop-market order: a market order placed when the "
        "last price reaches the stop price.",
        (
            Param("user_id", USER_ID),
            Param("market", MARKET_NAME),
            Param("side", SIDE),
            Param("amount", dec_in("ask: stock to sell (truncated to stock_prec); bid: money "
                                   "to spend (truncated to money_prec)", "1")),
            Param("stop_price", dec_in("trigger price, > 0, != the last price, truncated to "
                                       "money_prec", "90")),
            Param("taker_fee_rate", dec_in("0 <= rate < 1, truncated to fee_prec", "0.002")),
            Param("source", SOURCE),
            *STOP_TRAILING,
        ),
        STOP,
        "The stop object (type 2, price \"0\", maker_fee \"0\").",
        (
            invalid("wrong count (9 to 11) or type, unknown market, side not 1/2, amount or "
                    "stop_price <= 0, fee rate outside [0, 1), source too long, a fee asset, "
                    "fill-or-kill or post-only, an unsupported option bit"),
            UNAVAILABLE_WRITE,
            *errors_of("order.put_stop_market"),
        ),
        notes="9 to 11 params (the CoinEx fork's v1 layout without `account`); a bid's amount "
        "is money. " + STOP_FEE_NOTE + STOP_NOTE,
        service=ME, write=True,
    ),
    Method(
        "order.cancel_stop", "Cancel a pending stop order; its frozen funds return to "
        "available.",
        (Param("user_id", USER_ID), Param("market", MARKET_NAME), Param("order_id", STOP_ID)),
        STOP,
        "The stop as it was just before removal.",
        (
            invalid("wrong count or type, unknown market"),
            UNAVAILABLE_WRITE,
            *errors_of("order.cancel_stop"),
        ),
        notes="Exactly 3 params. Pushes `order.update_stop` with event 3 (cancelled) and "
        "`asset.update`; the stop history gets a row with status 3.",
        service=ME, write=True,
    ),
    Method(
        "order.pending_stop", "A user's pending stop orders, newest first.",
        (
            Param("user_id", USER_ID),
            Param("market", {"oneOf": [MARKET_NAME, {"type": "null"}],
                             "description": "market name, or null for every market",
                             "examples": ["BTCBCH"]}),
            Param("side", SIDE_OR_BOTH),
            Param("offset", OFFSET),
            Param("limit", integer("stops to return, 0 to 101", maximum=101, example=10)),
        ),
        obj({"limit": integer("as asked"), "offset": integer("as asked"),
             "total": integer("the user's pending stops (in that market and side)"),
             "records": array(STOP, "newest first (id descending)")}),
        "`{\"limit\", \"offset\", \"total\", \"records\"}` (the order.pending layout).",
        (invalid("wrong count or type, unknown market, side not 0/1/2, limit > 101"),),
        notes="Exactly 5 params.",
        service=ME,
    ),
    Method(
        "order.finished_stop", "A user's finished stop orders (fired or cancelled) from the "
        "history, newest first.",
        (
            Param("user_id", USER_RH),
            Param("market", string("market name; \"\" = every market", example="BTCBCH")),
            Param("side", integer("0 = both, 1 = ask, 2 = bid", enum=[0, 1, 2], example=0,
                                  lenient=True)),
            Param("start_time", TIME_RH, "stops created at or after (0 = no bound)"),
            Param("end_time", TIME_RH, "stops created before (0 = no bound)"),
            Param("offset", OFFSET_RH),
            Param("limit", LIMIT_RH),
        ),
        paged(FINISHED_STOP),
        "`{\"offset\", \"limit\", \"records\": [finished stop, ...]}`: the fork's keys plus "
        "`order_id`.",
        (invalid("wrong param count, user id 0, market not a string, side not 0/1/2, "
                 "start_time > end_time, limit not 1..101"),
         RH_INTERNAL, RH_BUSY),
        notes="Exactly 7 params (the CoinEx fork's v1 layout without `account`). Unlike the "
        "fork, cancelled stops are listed too (status 3). The time filter is on the creation "
        "time. " + READHISTORY_LENIENT_NOTE + " History is written by a follower process "
        "shortly after the operation.",
        service=RH,
    ),
    Method(
        "order.stop_book", "One trigger list of a market's pending stops, in firing order.",
        (
            Param("market", MARKET_NAME),
            Param("state", integer("1 = LOW list (fires when the price falls to it; highest "
                                   "stop price first), 2 = HIGH list (rises; lowest first)",
                                   enum=[1, 2], example=1)),
            Param("offset", OFFSET),
            Param("limit", integer("stops to return, 0 to 101", maximum=101, example=10)),
        ),
        obj({"offset": integer("as asked"), "limit": integer("as asked"),
             "total": integer("stops in that list"),
             "orders": array(STOP, "in firing order; equal stop prices: older first")}),
        "`{\"offset\", \"limit\", \"total\", \"orders\"}` (the order.book layout).",
        (invalid("wrong count or type, unknown market, state not 1/2, limit > 101"),),
        notes="Exactly 4 params.",
        service=ME,
    ),
    Method(
        "order.cancel_all", "Cancel all of a user's open orders in a market (one side or "
        "both).",
        (Param("user_id", USER_ID), Param("market", MARKET_NAME),
         Param("side", SIDE_OR_BOTH, "0 (default) = both sides, 1 = asks, 2 = bids",
               required=False)),
        SUCCESS,
        "`{\"status\": \"success\"}` (also when there was nothing to cancel).",
        (invalid("wrong count (2 or 3) or type, unknown market, side not 0/1/2"),
         UNAVAILABLE_WRITE),
        notes="2 or 3 params. Oldest first, each with its FINISH `order.update` and history as "
        "order.cancel; stop orders are not touched (order.cancel_stop_all does that).",
        service=ME, write=True,
    ),
    Method(
        "order.cancel_stop_all", "Cancel all of a user's pending stop orders in a market (one "
        "side or both).",
        (Param("user_id", USER_ID), Param("market", MARKET_NAME),
         Param("side", SIDE_OR_BOTH, "0 (default) = both sides, 1 = asks, 2 = bids",
               required=False)),
        SUCCESS,
        "`{\"status\": \"success\"}` (also when there was nothing to cancel).",
        (invalid("wrong count (2 or 3) or type, unknown market, side not 0/1/2"),
         UNAVAILABLE_WRITE),
        notes="2 or 3 params. Each cancelled stop releases its funds and pushes "
        "`order.update_stop` (event 3).",
        service=ME, write=True,
    ),
    Method(
        "order.cancel_batch", "Cancel several open orders of a user in a market, with a result "
        "per order.",
        (Param("user_id", USER_ID), Param("market", MARKET_NAME),
         Param("order_ids", {"type": "array", "items": integer("order id", example=1),
                             "minItems": 1, "maxItems": 101,
                             "description": "1 to 101 order ids (an element that is not a "
                             "valid order id reads as 0: \"order not found\")",
                             "examples": [[1]]})),
        array(obj({
            "code": integer("0 = cancelled, 10 = order not found, 11 = user not match",
                            enum=[0, 10, 11]),
            "message": string("\"\", \"order not found\" or \"user not match\""),
            "order": {"oneOf": [ORDER, {"type": "null"}],
                      "description": "the order as it was (code 0), else null"},
        }), "one result per id, in the order given"),
        "One `{\"code\", \"message\", \"order\"}` per id, in order.",
        (invalid("wrong count or type, unknown market, not a list of 1 to 101 elements"),
         UNAVAILABLE_WRITE),
        notes="Exactly 3 params. One command in the operation log; each cancelled order gets "
        "its FINISH `order.update` and history as order.cancel. Per-id failures are in the "
        "result, not errors.",
        service=ME, write=True,
    ),
    # -- market data ------------------------------------------------------------------------------
    Method(
        "market.status", "Price and volume statistics over the last `period` seconds.",
        (Param("market", MARKET_NAME),
         Param("period", integer("seconds, 1 to sec_max (default 7 days)", minimum=1,
                                 maximum=None, example=86400))),
        STATUS,
        "`{\"period\", \"last\", \"open\", \"close\", \"high\", \"low\", \"volume\", "
        "\"deal\"}`; with no deal in the period, open/close/high/low/volume/deal are \"0\" "
        "while last is the real last price.",
        (invalid("wrong count or type, unknown market, period out of range"), MP_INTERNAL),
        notes="Exactly 2 params. Cached for 0.45 s.",
        service=MP, cached="0.45 s",
    ),
    Method(
        "market.kline", "Candlesticks (k-lines) of a market.",
        (
            Param("market", MARKET_NAME),
            Param("start", integer("start time (Unix seconds), > 0", minimum=1,
                                   maximum=None, example=1)),
            Param("end", integer("end time (Unix seconds); clamped to now", minimum=1,
                                 maximum=None, example=4102444800)),
            Param("interval", integer(
                "bucket length in seconds: a divisor of 60 below a minute; a multiple of 60 "
                "dividing 3600 below an hour; a multiple of 3600 dividing 86400 below a day; "
                "a multiple of 86400 below a week; 604800 (week) or 2592000 (month)",
                minimum=1, maximum=None, example=60)),
        ),
        array(KLINE_ROW, "oldest first"),
        "Rows `[time, open, close, high, low, volume, deal, market]`, oldest first. Buckets "
        "before the first deal are left out; a bucket without deals after that is a flat bar "
        "at the previous close.",
        (invalid("wrong count or type, unknown market, start <= 0, end <= 0, start > end, "
                 "an interval not in the list"), MP_INTERNAL),
        notes="Exactly 4 params. Cached for 0.45 s. Day, week and month buckets follow the "
        "server's local time zone. As in the original (rpc.md 0.19), a new bucket's open, high "
        "and low start from the previous last price, so a market's very first bucket opens at "
        "\"0\" (open and low \"0\"). Extension: at most "
        f"{KLINE_MAX_ROWS:,} rows (two weeks of one-minute candles), the newest buckets of the "
        f"range (a longer range answers its last {KLINE_MAX_ROWS:,}).",
        service=MP, cached="0.45 s",
    ),
    Method(
        "market.deals", "A market's latest deals, newest first.",
        (
            Param("market", MARKET_NAME),
            Param("limit", integer("deals to return, 1 to 10000", minimum=1, maximum=10000,
                                   example=10)),
            Param("last_id", integer("only deals with a greater id (0 = all)", minimum=None,
                                     example=0)),
        ),
        array(MARKET_DEAL, "newest first"),
        "`[{\"id\", \"time\", \"price\", \"amount\", \"type\"}, ...]`; `type` is the taker's "
        "side (`sell` when an ask took).",
        (invalid("wrong count or type, unknown market, limit out of range"), MP_INTERNAL),
        notes="Exactly 3 params. Not cached.",
        service=MP,
    ),
    Method(
        "market.last", "A market's last price.",
        (Param("market", MARKET_NAME),),
        dec("last deal price, with trailing zeros (e.g. \"8000.00000000\"); \"0\" before the "
            "first deal"),
        "A decimal string, not zero-stripped.",
        (invalid("wrong count or type, unknown market"), MP_INTERNAL),
        notes="Exactly 1 param.",
        service=MP,
    ),
    Method(
        "market.status_today", "Today's open/high/low and the last 24 hours' volume.",
        (Param("market", MARKET_NAME),),
        STATUS_TODAY,
        "`{\"open\", \"last\", \"high\", \"low\", \"volume\", \"deal\"}`: open/high/low from "
        "today's local-day bucket (or the previous day's close, or \"0\"); volume and deal "
        "over the rolling last 24 hours.",
        (invalid("wrong count or type, unknown market"), MP_INTERNAL),
        notes="Exactly 1 param. Cached for 0.45 s.",
        service=MP, cached="0.45 s",
    ),
    Method(
        "market.user_deals", "A user's deals in a market, newest first.",
        (Param("user_id", USER_RH), Param("market", MARKET_RH), Param("offset", OFFSET_RH),
         Param("limit", LIMIT_RH)),
        paged(obj({
            "time": time_real("deal time"),
            "user": integer("user id"),
            "id": integer("deal id"),
            "side": integer("this user's order side: 1 = ask, 2 = bid", enum=[1, 2]),
            "role": integer("1 = maker, 2 = taker", enum=[1, 2]),
            "price": dec("price"),
            "amount": dec("amount (stock)"),
            "deal": dec("price x amount (money)"),
            "fee": dec("this user's fee"),
            "deal_order_id": integer("the other order"),
            "market": string("market"),
        })),
        "`{\"offset\", \"limit\", \"records\": [...]}`.",
        (invalid("wrong count, user id 0, market not a string, limit not 1..101"),
         RH_INTERNAL, RH_BUSY),
        notes="Exactly 4 params. " + READHISTORY_LENIENT_NOTE,
        service=RH,
    ),
    Method(
        "market.list", "The configured markets.",
        (),
        array(obj({
            "name": string("market name"),
            "stock": string("the traded asset"),
            "money": string("the pricing asset"),
            "fee_prec": integer("decimal places of fee rates"),
            "stock_prec": integer("decimal places of amounts"),
            "money_prec": integer("decimal places of prices"),
            "min_amount": dec("smallest order amount"),
        })),
        "One object per market, in config order.",
        (),
        params_ignored=True, service=ME,
    ),
    Method(
        "market.summary", "Open-order totals per market.",
        (Param("market", MARKET_NAME, "a market to show; none = every market", required=False,
               variadic=True),),
        array(obj({
            "name": string("market name"),
            "ask_count": integer("open asks"),
            "ask_amount": dec("sum of the asks' `left` (stock)"),
            "bid_count": integer("open bids"),
            "bid_amount": dec("sum of the bids' `left` (stock)"),
        })),
        "One object per market.",
        (invalid("an unknown market"),),
        service=ME,
    ),
    Method(
        "market.detail", "One market's configuration, last price and whether it is suspended.",
        (Param("market", MARKET_NAME),),
        obj({
            "name": string("market name"),
            "stock": string("the traded asset"),
            "money": string("the pricing asset"),
            "fee_prec": integer("decimal places of fee rates"),
            "stock_prec": integer("decimal places of amounts"),
            "money_prec": integer("decimal places of prices"),
            "min_amount": dec("smallest order amount"),
            "last": dec("the matchengine's last price (\"0\" before the first deal)"),
            "suspended": boolean("true while config.suspend_market is in effect"),
        }),
        "A market.list entry plus `last` and `suspended`.",
        (invalid("wrong count or type, unknown market (the fork answers 2)"),),
        notes="Exactly 1 param.",
        service=ME,
    ),
    # -- admin: runtime configuration -------------------------------------------------------------
    Method(
        "config.update_asset", "Add an asset, or change an existing asset's prec_show "
        "(admin).",
        (Param("asset", ASSET_DETAIL),),
        SUCCESS,
        "`{\"status\": \"success\"}`.",
        (INVALID_BECAUSE.because("not exactly 1 param, not a valid asset object, "
                                 "or prec_save lowered (the message says why)"),
         NEED_ADMIN, UNAVAILABLE_WRITE),
        notes=ADMIN_NOTE + "prec_save of an existing asset may only grow (stored balances "
        "keep every digit). No balance is touched.",
        service=ME, write=True,
    ),
    Method(
        "config.update_market", "Add a market, or change an existing market's fee_prec and "
        "min_amount (admin).",
        (Param("market", MARKET_DETAIL),),
        SUCCESS,
        "`{\"status\": \"success\"}`.",
        (INVALID_BECAUSE.because("not exactly 1 param, not a valid market "
                                 "object, unknown assets, precisions the start-up checks "
                                 "refuse, or an existing market's stock, money or their "
                                 "precisions changed (the message says why)"),
         NEED_ADMIN, UNAVAILABLE_WRITE),
        notes=ADMIN_NOTE + "The original's start-up precision checks apply (stock.prec + "
        "money.prec <= money's prec_save, ...). marketprice learns a new market from its first "
        "deal or from the market list (asked every 60 s).",
        service=ME, write=True,
    ),
    Method(
        "config.suspend_market", "Suspend trading in a market (admin).",
        (Param("market", MARKET_NAME),),
        SUCCESS,
        "`{\"status\": \"success\"}`.",
        (invalid("not exactly 1 param, unknown market"), NEED_ADMIN, UNAVAILABLE_WRITE),
        notes=ADMIN_NOTE + "While suspended, order.put_limit, order.put_market and "
        "order.put_stop_* are refused with code 30 \"market suspended\"; cancels of every "
        "kind and every read still work; stops do not fire.",
        service=ME, write=True,
    ),
    Method(
        "config.resume_market", "Resume trading in a suspended market (admin).",
        (Param("market", MARKET_NAME),),
        SUCCESS,
        "`{\"status\": \"success\"}`.",
        (invalid("not exactly 1 param, unknown market"), NEED_ADMIN, UNAVAILABLE_WRITE),
        notes=ADMIN_NOTE,
        service=ME, write=True,
    ),
]
