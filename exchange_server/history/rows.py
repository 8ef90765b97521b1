"""Matchengine events -> rows of the original's ``trade_history`` tables (storage.md section 2).

Pure functions, no I/O.  :func:`rows_of` maps the events of one operation to rows, in event
order, each tagged with the table kind it goes to:

* every :class:`BalanceChanged` -> one ``balance_history`` row;
* every :class:`OrderFinished` -> one ``order_history`` and one ``order_detail`` row (identical
  values; ``finish_time`` = the snapshot's ``mtime``);
* every :class:`Deal` -> two ``deal_history`` rows (ask order's, then bid order's) and two
  ``user_deal_history`` rows (same order), then a ``balance_history`` row for each of its
  balance changes (``Deal.balance_changes``: the taker's user's, then the maker's);
* every :class:`StopChanged` of a stop that fired or was cancelled -> one ``stop_history``
  row (the CoinEx fork's table, plus cancelled stops and the id of the order a stop spawned);
* other events (bus messages only) -> nothing.

Row values are raw Python values (Decimals, floats, ints, str); turning them into column values
(rounding a decimal to the column's scale, microsecond times) is :func:`column_converters`' job,
shared by both stores so SQLite and MySQL hold identical values.  :func:`stored_rows_of` gives
the SQLite store's form: ``rows_of``'s rows already turned into their column values.

:data:`TABLES` describes each table's columns with the original's SQL types; the MySQL DDL, the
SQLite DDL, the INSERT statements and the column conversions are all derived from it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, NamedTuple

from exchange_server.common.decimals import CONTEXT, ZERO, fmt, fmt_param
from exchange_server.matchengine.core.model import (
    ASK,
    BID,
    STOP_EVENT_ACTIVE,
    STOP_EVENT_CANCEL,
    STOP_STATUS_CANCEL,
    BalanceChanged,
    Deal,
    Event,
    OrderFinished,
    OrderSnapshot,
    StopChanged,
    Totals,
    TradeDetail,
)

log = logging.getLogger("exchange_server.history")

BALANCE = "balance_history"
ORDER = "order_history"
DETAIL = "order_detail"
DEAL = "deal_history"
USER_DEAL = "user_deal_history"
STOP = "stop_history"

#: The original's tables.
KINDS = (BALANCE, ORDER, DETAIL, DEAL, USER_DEAL)
#: Every table written: the original's and the CoinEx fork's stop_history.
ALL_KINDS = (*KINDS, STOP)

#: What a history row for an order restored without a source shows (the C server printed a
#: NULL ``char *`` with glibc's printf, which gives "(null)").
NULL_SOURCE = "(null)"


class BalanceRow(NamedTuple):
    time: float
    user_id: int
    asset: str
    business: str
    change: Decimal
    balance: Decimal
    detail: str


class OrderRow(NamedTuple):
    id: int
    create_time: float
    finish_time: float
    user_id: int
    market: str
    source: str
    t: int
    side: int
    price: Decimal
    amount: Decimal
    taker_fee: Decimal
    maker_fee: Decimal
    deal_stock: Decimal
    deal_money: Decimal
    deal_fee: Decimal


class DealRow(NamedTuple):
    time: float
    user_id: int
    deal_id: int
    order_id: int
    deal_order_id: int
    role: int
    price: Decimal
    amount: Decimal
    deal: Decimal
    fee: Decimal
    deal_fee: Decimal


class UserDealRow(NamedTuple):
    time: float
    user_id: int
    market: str
    deal_id: int
    order_id: int
    deal_order_id: int
    side: int
    role: int
    price: Decimal
    amount: Decimal
    deal: Decimal
    fee: Decimal
    deal_fee: Decimal


class StopRow(NamedTuple):
    id: int
    create_time: float
    finish_time: float
    user_id: int
    market: str
    source: str
    t: int
    side: int
    option: int
    stop_price: Decimal
    price: Decimal
    amount: Decimal
    taker_fee: Decimal
    maker_fee: Decimal
    status: int
    client_id: str
    order_id: int


AnyRow = BalanceRow | OrderRow | DealRow | UserDealRow | StopRow
#: (table kind, row)
Row = tuple[str, AnyRow]
#: (table kind, the row's stored column values)
StoredRow = tuple[str, tuple[Any, ...]]
#: ``stored_rows_of``'s form of one operation's rows (the SQLite store's): per table, the stored
#: values of its rows in their order, ready to be bound: balance_history's as a list of
#: (kind, values) (BALANCE, or a deal's BALANCE_GROUPS), then order_history's (which
#: order_detail's equal), deal_history's (DEAL_PAIR values), user_deal_history's
#: (USER_DEAL_PAIR values) and stop_history's values, each flattened into one list.
StoredRows = tuple[list[StoredRow], list[Any], list[Any], list[Any], list[Any]]

#: ``stored_rows_of``'s kinds for a deal's two deal_history rows (the ask order's, then the bid
#: order's) and for its two user_deal_history rows: one values tuple for both rows, each value
#: they share in it once.  Why: the SQLite store inserts such a group with numbered parameters
#: (a ``?N`` written twice is bound once; ``sqlite3_bind_text`` copies every text it binds), so
#: a deal binds 27 values instead of 48.  ``ungrouped`` gives the rows back.
DEAL_PAIR = "deal_history pair"
USER_DEAL_PAIR = "user_deal_history pair"
#: The same for a deal's four to six balance_history rows ("trade" rows, ``Deal.balance_changes``:
#: the taker's user's, then the maker's, each what it gives, what it receives, then the fee it
#: pays when not zero), by (taker pays a fee, maker pays a fee): the time, the two users, the
#: two assets and the details once, "trade" a constant: 21 values bound for six rows instead
#: of 42 (18 texts instead of 30).  The values: (time, taker_user, maker_user, the asset the
#: taker gives, the one it receives), then per side, the taker's first: (change given, balance
#: after, change received, balance after, detail), and with a fee (fee change, balance after,
#: fee detail).
BALANCE_GROUPS: dict[tuple[bool, bool], str] = {
    (taker_fee, maker_fee): f"balance_history deal{' taker fee' * taker_fee}"
                            f"{' maker fee' * maker_fee}"
    for taker_fee in (False, True) for maker_fee in (False, True)}

#: An SQL literal in a group's layout (a constant column): its text in the statement, its value
#: in the row.
_TRADE = "'trade'"
_LITERALS: dict[str, Any] = {f"{ASK:d}": ASK, f"{BID:d}": BID, _TRADE: "trade"}


def _balance_layouts(taker_fee: bool, maker_fee: bool) -> tuple[tuple[int | str, ...], ...]:
    """BALANCE_GROUPS' rows of one kind: (time, user_id, asset, business, change, balance,
    detail) each, as indexes into its values or SQL literals."""
    rows: list[tuple[int | str, ...]] = []
    at = 5
    for user, gives, gets, fee in ((1, 3, 4, taker_fee), (2, 4, 3, maker_fee)):
        rows.append((0, user, gives, _TRADE, at, at + 1, at + 4))
        rows.append((0, user, gets, _TRADE, at + 2, at + 3, at + 4))
        at += 5
        if fee:
            rows.append((0, user, gets, _TRADE, at, at + 1, at + 2))
            at += 3
    return tuple(rows)


#: Per group kind: its table, and for each of its rows the value of every column: the index of
#: a value in the group's tuple, or a constant's SQL text (_LITERALS).
#: deal_history pair: (time, ask_user, bid_user, deal_id, ask_order, bid_order, ask_role,
#: bid_role, price, amount, deal, ask_fee, bid_fee); user_deal_history pair: (time, ask_user,
#: bid_user, market, deal_id, ask_order, bid_order, ask_role, bid_role, price, amount, deal,
#: ask_fee, bid_fee); balance groups: see BALANCE_GROUPS.
GROUPS: dict[str, tuple[str, tuple[tuple[int | str, ...], ...]]] = {
    DEAL_PAIR: (DEAL, ((0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 12),
                       (0, 2, 3, 5, 4, 7, 8, 9, 10, 12, 11))),
    USER_DEAL_PAIR: (USER_DEAL, ((0, 1, 3, 4, 5, 6, f"{ASK:d}", 7, 9, 10, 11, 12, 13),
                                 (0, 2, 3, 4, 6, 5, f"{BID:d}", 8, 9, 10, 11, 13, 12))),
    **{kind: (BALANCE, _balance_layouts(*fees)) for fees, kind in BALANCE_GROUPS.items()},
}


def group_width(kind: str) -> int:
    """Values in one group of ``kind``: every index its rows name."""
    return 1 + max(v for layout in GROUPS[kind][1] for v in layout if type(v) is int)


def ungrouped(kind: str, values: Sequence[Any]) -> list[StoredRow]:
    """Stored values as their table's rows: a group's (see GROUPS), any other row itself."""
    group = GROUPS.get(kind)
    if group is None:
        return [(kind, tuple(values))]
    table, layouts = group
    return [(table, tuple(values[v] if isinstance(v, int) else _LITERALS[v] for v in layout))
            for layout in layouts]


def stored_table_rows(stored: StoredRows) -> list[StoredRow]:
    """``stored_rows_of``'s rows as (table, stored values) rows: per table, in their order;
    the tables in the order balance, order, detail, deal, user_deal, stop."""
    balances, orders, deals, user_deals, stops = stored
    rows = [row for kind, values in balances for row in ungrouped(kind, values)]
    for table, kind, flat in ((ORDER, ORDER, orders), (DETAIL, DETAIL, orders),
                              (DEAL, DEAL_PAIR, deals), (USER_DEAL, USER_DEAL_PAIR, user_deals),
                              (STOP, STOP, stops)):
        width = group_width(kind) if kind in GROUPS else len(TABLES[table])
        for at in range(0, len(flat), width):
            for _, row in ungrouped(kind, flat[at:at + width]):
                rows.append((table, row))
    return rows


# -- table descriptions ---------------------------------------------------------------------------

#: Per table: the (column, original SQL type) pairs that rows fill, in row-tuple order.  The
#: AUTO_INCREMENT ``id`` of balance/deal tables is not part of the row.
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    BALANCE: (
        ("time", "DOUBLE"),
        ("user_id", "INT UNSIGNED"),
        ("asset", "VARCHAR(30)"),
        ("business", "VARCHAR(30)"),
        ("change", "DECIMAL(30,8)"),
        ("balance", "DECIMAL(30,16)"),
        ("detail", "TEXT"),
    ),
    ORDER: (
        ("id", "BIGINT UNSIGNED"),
        ("create_time", "DOUBLE"),
        ("finish_time", "DOUBLE"),
        ("user_id", "INT UNSIGNED"),
        ("market", "VARCHAR(30)"),
        ("source", "VARCHAR(30)"),
        ("t", "TINYINT UNSIGNED"),
        ("side", "TINYINT UNSIGNED"),
        ("price", "DECIMAL(30,8)"),
        ("amount", "DECIMAL(30,8)"),
        ("taker_fee", "DECIMAL(30,4)"),
        ("maker_fee", "DECIMAL(30,4)"),
        ("deal_stock", "DECIMAL(30,8)"),
        ("deal_money", "DECIMAL(30,16)"),
        ("deal_fee", "DECIMAL(30,16)"),
    ),
    DEAL: (
        ("time", "DOUBLE"),
        ("user_id", "INT UNSIGNED"),
        ("deal_id", "BIGINT UNSIGNED"),
        ("order_id", "BIGINT UNSIGNED"),
        ("deal_order_id", "BIGINT UNSIGNED"),
        ("role", "TINYINT UNSIGNED"),
        ("price", "DECIMAL(30,8)"),
        ("amount", "DECIMAL(30,8)"),
        ("deal", "DECIMAL(30,16)"),
        ("fee", "DECIMAL(30,16)"),
        ("deal_fee", "DECIMAL(30,16)"),
    ),
    USER_DEAL: (
        ("time", "DOUBLE"),
        ("user_id", "INT UNSIGNED"),
        ("market", "VARCHAR(30)"),
        ("deal_id", "BIGINT UNSIGNED"),
        ("order_id", "BIGINT UNSIGNED"),
        ("deal_order_id", "BIGINT UNSIGNED"),
        ("side", "TINYINT UNSIGNED"),
        ("role", "TINYINT UNSIGNED"),
        ("price", "DECIMAL(30,8)"),
        ("amount", "DECIMAL(30,8)"),
        ("deal", "DECIMAL(30,16)"),
        ("fee", "DECIMAL(30,16)"),
        ("deal_fee", "DECIMAL(30,16)"),
    ),
    STOP: (
        ("id", "BIGINT UNSIGNED"),
        ("create_time", "DOUBLE"),
        ("finish_time", "DOUBLE"),
        ("user_id", "INT UNSIGNED"),
        ("market", "VARCHAR(30)"),
        ("source", "VARCHAR(30)"),
        ("t", "TINYINT UNSIGNED"),
        ("side", "TINYINT UNSIGNED"),
        ("option", "INT UNSIGNED"),
        ("stop_price", "DECIMAL(30,8)"),
        ("price", "DECIMAL(30,8)"),
        ("amount", "DECIMAL(30,8)"),
        ("taker_fee", "DECIMAL(30,4)"),
        ("maker_fee", "DECIMAL(30,4)"),
        ("status", "TINYINT UNSIGNED"),
        ("client_id", "VARCHAR(32)"),
        ("order_id", "BIGINT UNSIGNED"),
    ),
}
TABLES[DETAIL] = TABLES[ORDER]

#: Tables whose ``id`` is an AUTO_INCREMENT column not carried by the row.
AUTO_ID = frozenset((BALANCE, DEAL, USER_DEAL))

#: Index in the row of the value whose ``% 100`` picks the MySQL shard (storage.md section 2).
SHARD_FIELD = {
    BALANCE: BalanceRow._fields.index("user_id"),
    ORDER: OrderRow._fields.index("user_id"),
    DETAIL: OrderRow._fields.index("id"),
    DEAL: DealRow._fields.index("order_id"),
    USER_DEAL: UserDealRow._fields.index("user_id"),
    STOP: StopRow._fields.index("user_id"),
}

#: Number of ``X_N`` shards per table in MySQL.
SHARDS = 100

_DECIMAL_TYPE = re.compile(r"DECIMAL\((\d+),(\d+)\)\Z")
_VARCHAR_TYPE = re.compile(r"VARCHAR\((\d+)\)\Z")


# -- events -> rows -------------------------------------------------------------------------------

#: Rows are built with tuple.__new__ (as the engine builds its events): a NamedTuple's own
#: ``__new__`` is a Python function, and the follower builds some ten rows per order placed.
_new = tuple.__new__

_json_str: dict[str, str] = {}


def _quoted(text: str) -> str:
    quoted = _json_str.get(text)
    if quoted is None:
        quoted = json.dumps(text, ensure_ascii=False)
        if len(_json_str) < 10_000:
            _json_str[text] = quoted
    return quoted


#: (the last TradeDetail written, its text): a deal's two balance changes of one side share
#: their detail object, so every other call is an identity check.  One tuple, replaced whole,
#: so a reader in another thread sees a consistent pair.
_last_detail: tuple[object, str] = (None, "")


def trade_detail_json(d: TradeDetail) -> str:
    """``{"a": amount, "f": fee_rate?, "i": order_id, "m": market, "p": price}`` (sorted keys,
    jansson's default separators).  The price is an order's (a request param: ``fmt_param``)."""
    global _last_detail
    last = _last_detail
    if d is last[0]:
        return last[1]
    if d.fee_rate is None:
        text = (f'{{"a": "{fmt(d.amount)}", "i": {d.order_id}, "m": {_quoted(d.market)}, '
                f'"p": "{fmt_param(d.price)}"}}')
    else:
        text = (f'{{"a": "{fmt(d.amount)}", "f": "{fmt_param(d.fee_rate)}", '
                f'"i": {d.order_id}, "m": {_quoted(d.market)}, "p": "{fmt_param(d.price)}"}}')
    _last_detail = (d, text)
    return text


def detail_json(detail: dict[str, Any] | TradeDetail) -> str:
    """The ``detail`` column text.  A balance.update detail is the client's JSON object (with
    ``"id"`` appended by the engine), in its own key order.  Something that cannot be written as
    JSON (never produced by the engine) is stored as ``{}``, which is also what readhistory
    answers for a detail it cannot parse."""
    if isinstance(detail, TradeDetail):
        return trade_detail_json(detail)
    try:
        text = json.dumps(detail, ensure_ascii=False, allow_nan=False)
        text.encode()  # lone surrogates cannot be stored
    except (TypeError, ValueError) as e:
        log.warning("balance history detail cannot be stored as JSON (%s): stored as {}", e)
        return "{}"
    return text


def balance_row(e: BalanceChanged) -> BalanceRow:
    return _new(BalanceRow, (e.time, e.user, e.asset, e.business, e.change, e.balance,
                             detail_json(e.detail)))


def order_row(e: OrderFinished) -> OrderRow:
    o = e.order
    return _new(OrderRow, (
        o.id, o.ctime, o.mtime, o.user, o.market, NULL_SOURCE if o.source is None else o.source,
        o.type, o.side, o.price, o.amount, o.taker_fee, o.maker_fee, o.deal_stock, o.deal_money,
        o.deal_fee,
    ))


def deal_rows(e: Deal) -> tuple[DealRow, DealRow, UserDealRow, UserDealRow]:
    """The ask order's and the bid order's deal_history rows, then the two users' rows."""
    ask = _new(DealRow, (e.time, e.ask_user, e.deal_id, e.ask_order_id, e.bid_order_id,
                         e.ask_side_role, e.price, e.amount, e.deal, e.ask_fee, e.bid_fee))
    bid = _new(DealRow, (e.time, e.bid_user, e.deal_id, e.bid_order_id, e.ask_order_id,
                         e.bid_side_role, e.price, e.amount, e.deal, e.bid_fee, e.ask_fee))
    user_ask = _new(UserDealRow, (e.time, e.ask_user, e.market, e.deal_id, e.ask_order_id,
                                  e.bid_order_id, ASK, e.ask_side_role, e.price, e.amount,
                                  e.deal, e.ask_fee, e.bid_fee))
    user_bid = _new(UserDealRow, (e.time, e.bid_user, e.market, e.deal_id, e.bid_order_id,
                                  e.ask_order_id, BID, e.bid_side_role, e.price, e.amount,
                                  e.deal, e.bid_fee, e.ask_fee))
    return ask, bid, user_ask, user_bid


def stop_row(e: StopChanged) -> StopRow:
    """The stop_history row of a stop that fired (status 1 / 2) or was cancelled (3)."""
    s = e.stop
    status = STOP_STATUS_CANCEL if e.event == STOP_EVENT_CANCEL else e.status
    return StopRow(s.id, s.ctime, s.mtime, s.user, s.market, s.source, s.type, s.side, s.option,
                   s.stop_price, s.price, s.amount, s.taker_fee, s.maker_fee, status, s.client_id,
                   e.order_id)


def rows_of(events: Iterable[Event]) -> list[Row]:
    """All history rows of one operation's events, in event order."""
    rows: list[Row] = []
    append = rows.append
    for e in events:
        if type(e) is BalanceChanged:
            append((BALANCE, balance_row(e)))
        elif type(e) is Deal:
            ask, bid, user_ask, user_bid = deal_rows(e)
            append((DEAL, ask))
            append((DEAL, bid))
            append((USER_DEAL, user_ask))
            append((USER_DEAL, user_bid))
            for change in e.balance_changes():
                append((BALANCE, balance_row(change)))
        elif type(e) is OrderFinished:
            row = order_row(e)
            append((ORDER, row))
            append((DETAIL, row))
        elif type(e) is StopChanged and e.event in (STOP_EVENT_ACTIVE, STOP_EVENT_CANCEL):
            append((STOP, stop_row(e)))
    return rows


def shard_of(kind: str, row: Sequence[Any]) -> int:
    return int(row[SHARD_FIELD[kind]]) % SHARDS


# -- rows -> column values ------------------------------------------------------------------------

_CONTEXT = Context(prec=80, rounding=ROUND_HALF_UP, Emax=999_999, Emin=-999_999)
#: Bytes a MySQL TEXT column holds.
TEXT_MAX_BYTES = 65_535

Converter = Callable[[Any], Any]


def decimal_converter(precision: int, scale: int) -> Callable[[Decimal], str]:
    """What we hand to a DECIMAL(precision, scale) column for a value.

    The exact decimal text: MySQL rounds it half away from zero to ``scale`` places when
    storing it (as the original's did), and the SQLite store keeps it exact and lets readers
    round it (``decimal_text``), so both answer the same.  Only a value near or beyond the
    column's range is rounded here and clamped to the largest value (what the original's
    non-strict MySQL stored; in strict mode, which our connections use, the row would fail
    forever instead, blocking all history behind it).  Formatting every value to the scale
    here cost most of the history writer's time.
    """
    quant = Decimal(1).scaleb(-scale)
    # in _CONTEXT: the default 28-digit context rounds 10**14 - 1e-16 up to 1E+14, itself out
    # of range for DECIMAL(30,16)
    largest = _CONTEXT.subtract(_CONTEXT.power(Decimal(10), precision - scale), quant)
    negative = largest.copy_negate()  # exact, whatever the thread's context (unary minus rounds)
    limit = precision - scale - 1

    def convert(value: Decimal) -> str:
        if value and value.adjusted() >= limit:
            stored = value.quantize(quant, ROUND_HALF_UP, _CONTEXT)
            if stored > largest or stored < negative:
                log.warning("history value %s is out of range of DECIMAL(%d,%d): clamped",
                            value, precision, scale)
                stored = largest if value > 0 else negative
            return format(stored, "f")
        return str(value)

    return convert


#: (the last value given to time_value, its result): every row of one operation carries the same
#: time object (the engine's clock reading), so most calls are answered by an identity check.
#: One tuple, replaced whole, so a reader in another thread sees a consistent pair.
_last_time: tuple[object, float] = (None, 0.0)


#: time_value's results by the time object's identity, for the times that are not the last
#: one: an order row carries its creation time (an older operation's clock reading, shared by
#: every order that operation made) between two rows of the current time.  An entry holds its
#: object, so no other object can have that id while the entry is there.
_TIMES: dict[int, tuple[float, float]] = {}
_TIMES_MAX = 4096


def time_value(value: float) -> float:
    """The original wrote times with printf ``%f``: microsecond precision."""
    global _last_time
    last = _last_time
    if value is last[0]:
        return last[1]
    hit = _TIMES.get(id(value))
    if hit is not None and hit[0] is value:
        result = hit[1]
    else:
        result = microseconds(value)
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        _TIMES[id(value)] = (value, result)
    _last_time = (value, result)
    return result


#: 1.5 * 2**52: for 0 <= x < 2**51, ``(x + _ROUNDER) - _ROUNDER`` is an integer nearest x (the
#: sum lies in [2**52, 2**53), where doubles are the integers)
_ROUNDER = 6755399441055744.0
#: 2**51: below it a double's unit in the last place is at most 0.25
_ROUNDER_MAX = 2251799813685248.0


def microseconds(value: float) -> float:
    """``float(f"{value:.6f}")`` (what printf's ``%f`` wrote, read back), without formatting.

    Why: that text costs some 7,000 instructions (a correctly rounded decimal conversion of 16
    digits, then its parse), and the follower converts about one new time per order; this is
    about 2,000.  Exactly the same value, by this argument: ``%.6f`` prints N / 10**6 where N is
    the integer nearest the exact value * 10**6 (ties to even), and ``float()`` reads back the
    double nearest N / 10**6.  For 0 < x < 2**51 (times before 2041), ``x = value * 1e6`` is
    within half a unit in its last place (at most 0.125) of the exact product, ``n`` is an
    integer nearest x and ``x - n`` is exact, so ``|x - n| < 0.375`` puts the exact product
    within 0.5 of n: n is N (no tie is possible).  Otherwise (x's fraction is a half, a
    quarter of the cases) N comes from the exact ratio of the value's integers.  Either way N
    is below 2**53, so ``N / 1e6`` divides two exact doubles and is the double nearest
    N / 10**6 (ties to even, as ``float()``).  Anything else (zero, negative, later,
    infinite or NaN) takes the text."""
    x = value * 1e6
    if 0.0 < x < _ROUNDER_MAX:
        n = (x + _ROUNDER) - _ROUNDER
        if -0.375 < x - n < 0.375:
            return n / 1e6
        p, q = value.as_integer_ratio()  # value = p / q exactly, q a power of two
        whole, rest = divmod(p * 1_000_000, q)
        rest += rest
        if rest > q or (rest == q and whole & 1):
            whole += 1
        return whole / 1e6
    return float(f"{value:.6f}")


def varchar_converter(length: int) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if len(value) > length:
            log.warning("history value %r is longer than VARCHAR(%d): truncated", value, length)
            return value[:length]
        return value

    return convert


def text_value(value: str) -> str:
    """A TEXT column holds 64 KiB.  The original's MySQL truncated longer JSON, which its
    readhistory then answered as ``{}``; we store ``{}`` directly (same answer, valid JSON)."""
    if len(value) > TEXT_MAX_BYTES // 4 and len(value.encode()) > TEXT_MAX_BYTES:
        log.warning("history detail of %d bytes does not fit TEXT: stored as {}",
                    len(value.encode()))
        return "{}"
    return value


def column_converters(kind: str) -> list[Converter | None]:
    """Per column of ``kind``'s rows: the function giving the stored value (None: as is)."""
    converters: list[Converter | None] = []
    for _name, sql_type in TABLES[kind]:
        dec = _DECIMAL_TYPE.match(sql_type)
        var = _VARCHAR_TYPE.match(sql_type)
        if dec:
            converters.append(decimal_converter(int(dec.group(1)), int(dec.group(2))))
        elif var:
            converters.append(varchar_converter(int(var.group(1))))
        elif sql_type == "DOUBLE":
            converters.append(time_value)
        elif sql_type == "TEXT":
            converters.append(text_value)
        else:
            converters.append(None)
    return converters


def decimal_fast_path(precision: int, scale: int, value: str, converter: str) -> str:
    """Python expression giving ``decimal_converter(precision, scale)``'s text for the decimal
    named ``value`` without calling ``converter`` in the common case (a value well inside the
    column's range is handed over as ``str(value)``, exactly what the converter returns)."""
    return (f"(str({value}) if not {value} or {value}.adjusted() < {precision - scale - 1} "
            f"else {converter}({value}))")


def row_converter(kind: str) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A function turning one row of ``kind`` into its stored column values.

    Why generated: it runs for every history row, and a loop over a list of per-column
    converters cost more than the conversions.  The generated function unpacks the row and
    builds the tuple in one expression, calling a converter only where one is needed (times,
    strings too long for their column, decimals near their column's range); same values as the
    per-column converters."""
    names: dict[str, Any] = {}
    values: list[str] = []
    for i, ((_name, sql_type), conv) in enumerate(zip(TABLES[kind], column_converters(kind),
                                                      strict=True)):
        dec = _DECIMAL_TYPE.match(sql_type)
        var = _VARCHAR_TYPE.match(sql_type)
        if conv is None:
            values.append(f"v{i}")
        elif dec:
            names[f"c{i}"] = conv
            values.append(decimal_fast_path(int(dec.group(1)), int(dec.group(2)), f"v{i}",
                                            f"c{i}"))
        elif var or sql_type == "TEXT":
            # strings that fit are handed over as they are, without the converter's call
            # (varchar_converter and text_value return them unchanged)
            names[f"c{i}"] = conv
            fits = int(var.group(1)) if var else TEXT_MAX_BYTES // 4
            values.append(f"(v{i} if len(v{i}) <= {fits} else c{i}(v{i}))")
        else:
            names[f"c{i}"] = conv
            values.append(f"c{i}(v{i})")
    unpack = ", ".join(f"v{i}" for i in range(len(values)))
    source = f"def convert(row):\n    {unpack}, = row\n    return ({', '.join(values)},)\n"
    exec(compile(source, f"<history row {kind}>", "exec"), names)  # noqa: S102
    function: Callable[[Sequence[Any]], tuple[Any, ...]] = names["convert"]
    return function


ROW_CONVERTERS: dict[str, Callable[[Sequence[Any]], tuple[Any, ...]]] = {
    kind: row_converter(kind) for kind in ALL_KINDS if kind != DETAIL
}
#: order_detail has order_history's columns: one converter, so a store can tell that a row
#: given for both (rows_of) converts to the same values
ROW_CONVERTERS[DETAIL] = ROW_CONVERTERS[ORDER]


# -- events -> stored values ---------------------------------------------------------------------

#: Column converters for the values stored_rows_of converts outside the common case.
_DEC_8 = decimal_converter(30, 8)
_DEC_16 = decimal_converter(30, 16)
_DEC_4 = decimal_converter(30, 4)
_VARCHAR_30 = varchar_converter(30)
#: decimal_fast_path's bounds for DECIMAL(30, 8) / (30, 16) / (30, 4): a value whose
#: ``adjusted()`` is below them is stored as ``str(value)``
_LIMIT_8, _LIMIT_16, _LIMIT_4 = 30 - 8 - 1, 30 - 16 - 1, 30 - 4 - 1
_TEXT_FITS = TEXT_MAX_BYTES // 4
#: ``-x`` as the engine computes a deal's negative balance changes (model._side_changes)
_minus = CONTEXT.minus
#: ``a + b`` as the engine adds an account's parts (model.total_of)
_add = CONTEXT.add


def _dec8(v: Decimal) -> str:
    return str(v) if not v or v.adjusted() < _LIMIT_8 else _DEC_8(v)


def _dec16(v: Decimal) -> str:
    return str(v) if not v or v.adjusted() < _LIMIT_16 else _DEC_16(v)


def _dec4(v: Decimal) -> str:
    return str(v) if not v or v.adjusted() < _LIMIT_4 else _DEC_4(v)


#: Stored texts of DECIMAL(30, 8) / DECIMAL(30, 4) values by the value object's identity, for
#: the values rows share: an order row's price and amount are mostly its deal's very objects
#: (the maker's price, the amount that filled both orders), its fee rates those of every order
#: of its market (parse's cache and the methods' tables share them).  Why: ``str()`` of a
#: decimal costs about 570 instructions, a hit here about 150, and some eight of a deal's
#: fourteen order-row decimals hit.  An entry holds its object, so no other object can have
#: that id while it is there; cleared whole when full.
_TEXTS_8: dict[int, tuple[Decimal, str]] = {}
_TEXTS_4: dict[int, tuple[Decimal, str]] = {}
_TEXTS_MAX = 4096


def _remembered(texts: dict[int, tuple[Decimal, str]], value: Decimal,
                convert: Callable[[Decimal], str]) -> str:
    """``convert(value)``, remembered in ``texts`` (a miss of the inline lookups below)."""
    text = convert(value)
    if len(texts) >= _TEXTS_MAX:
        texts.clear()
    texts[id(value)] = (value, text)
    return text


def _text8(v: Decimal) -> str:
    """``_dec8(v)`` through ``_TEXTS_8``."""
    hit = _TEXTS_8.get(id(v))
    return hit[1] if hit is not None and hit[0] is v else _remembered(_TEXTS_8, v, _dec8)


def stored_rows_of(events: Iterable[Event]) -> StoredRows:
    """``rows_of``'s rows already turned into their stored column values, per table
    (:data:`StoredRows`): ``stored_table_rows`` gives, table by table, exactly
    ``ROW_CONVERTERS[kind](row)`` for each of ``rows_of``'s rows.

    Why: the SQLite store writes those values as they are.  Built straight from the events, a
    deal's price, amount, deal and fees are converted once for its rows (instead of four
    times), its time once, no row tuple is built only to be unpacked again, and a deal's rows
    go as groups (GROUPS) that bind their shared values once.  Per table, so a flush extends a
    few lists per operation instead of one per row; a finished order's values are given once,
    for order_history and order_detail.  Balance and order rows are made by generated
    functions (``_unpacking``) with every check written out, as in the generated converters."""
    balances: list[StoredRow] = []
    orders: list[Any] = []
    deals: list[Any] = []
    user_deals: list[Any] = []
    stops: list[Any] = []
    for e in events:
        if type(e) is Deal:
            t = time_value(e.time)
            price, amount, deal = _text8(e.price), _text8(e.amount), _dec16(e.deal)
            ask_fee, bid_fee = _dec16(e.ask_fee), _dec16(e.bid_fee)
            ask_user, bid_user, deal_id = e.ask_user, e.bid_user, e.deal_id
            ask_order, bid_order = e.ask_order_id, e.bid_order_id
            ask_role, bid_role = e.ask_side_role, e.bid_side_role
            market = e.market
            if len(market) > 30:
                market = _VARCHAR_30(market)
            deals += (t, ask_user, bid_user, deal_id, ask_order, bid_order, ask_role, bid_role,
                      price, amount, deal, ask_fee, bid_fee)
            user_deals += (t, ask_user, bid_user, market, deal_id, ask_order, bid_order,
                           ask_role, bid_role, price, amount, deal, ask_fee, bid_fee)
            if e.ask_totals is not None and e.bid_totals is not None:
                balances.append(_stored_deal_balances(e, t))
        elif type(e) is OrderFinished:
            orders += _stored_order(e.order)
        elif type(e) is BalanceChanged:
            balances.append((BALANCE, _stored_balance(e)))
        elif type(e) is StopChanged and e.event in (STOP_EVENT_ACTIVE, STOP_EVENT_CANCEL):
            stops += ROW_CONVERTERS[STOP](stop_row(e))
    return balances, orders, deals, user_deals, stops


def _stored_deal_balances(e: Deal, t: float) -> StoredRow:
    """A deal's balance_history rows as one group (BALANCE_GROUPS): for each of
    ``e.balance_changes()``, in its order, exactly ``_stored_balance(change)``'s values, but
    straight from the deal.  Why: no ``BalanceChanged`` or ``TradeDetail`` is built to be
    unpacked again, the time is the deal's (converted once, ``t``), and the details' common
    text (amount, market, price) is written once for the four to six rows (about 5.7 balance
    rows per e2e order are mostly these)."""
    (_, market, _, price, amount, deal, ask_fee, bid_fee, taker_side, ask_id, ask_user, _,
     bid_id, bid_user, _, stock, money, ask_rate, bid_rate, ask_totals, bid_totals) = e
    head = f'{{"a": "{fmt(amount)}", '
    tail = f', "m": {_quoted(market)}, "p": "{fmt_param(price)}"}}'
    if len(stock) > 30:
        stock = _VARCHAR_30(stock)
    if len(money) > 30:
        money = _VARCHAR_30(money)
    assert ask_totals is not None and bid_totals is not None
    ask = _deal_side(ask_id, amount, deal, ask_fee, ask_rate, ask_totals, head, tail)
    bid = _deal_side(bid_id, deal, amount, bid_fee, bid_rate, bid_totals, head, tail)
    if taker_side == ASK:
        return (BALANCE_GROUPS[len(ask) > 5, len(bid) > 5],
                (t, ask_user, bid_user, stock, money) + ask + bid)
    return (BALANCE_GROUPS[len(bid) > 5, len(ask) > 5],
            (t, bid_user, ask_user, money, stock) + bid + ask)


def _deal_side(order_id: int, given: Decimal, got: Decimal, fee: Decimal, rate: Decimal,
               totals: Totals, head: str, tail: str) -> tuple[str, ...]:
    """One side's values in a deal's balance group (``model._side_changes``' changes, stored):
    what its user gives and the balance after, what it receives and the balance after, their
    detail, then, when the fee is not zero, the fee and the balance after and its detail.  The
    decimals as ``_dec8`` / ``_dec16`` store them, written out; the details as
    ``trade_detail_json`` writes them (``head`` and ``tail``: the text around the order id);
    the totals as ``total_of`` adds them, inline."""
    out, out_frozen, received, received_frozen, after_fee, after_fee_frozen = totals
    if out_frozen is not ZERO:
        out = _add(out, out_frozen)
    if received_frozen is not ZERO:
        received = _add(received, received_frozen)
    detail = f'{head}"i": {order_id}{tail}'
    if len(detail) > _TEXT_FITS:
        detail = text_value(detail)
    change = _minus(given)
    values = (str(change) if not change or change.adjusted() < _LIMIT_8 else _DEC_8(change),
              str(out) if not out or out.adjusted() < _LIMIT_16 else _DEC_16(out),
              str(got) if not got or got.adjusted() < _LIMIT_8 else _DEC_8(got),
              str(received) if not received or received.adjusted() < _LIMIT_16
              else _DEC_16(received),
              detail)
    if not fee:
        return values
    text = f'{head}"f": "{fmt_param(rate)}", "i": {order_id}{tail}'
    if len(text) > _TEXT_FITS:
        text = text_value(text)
    change = _minus(fee)
    if after_fee_frozen is not ZERO:
        after_fee = _add(after_fee, after_fee_frozen)
    return values + (
        str(change) if not change or change.adjusted() < _LIMIT_8 else _DEC_8(change),
        str(after_fee) if not after_fee or after_fee.adjusted() < _LIMIT_16
        else _DEC_16(after_fee),
        text)


def _unpacking(name: str, fields: tuple[str, ...], body: str) -> Callable[[Any], tuple[Any, ...]]:
    """A function of one event (or snapshot) running ``body`` (statements using the fields'
    names) after unpacking it by its own ``_fields``.  Why generated: as fast as unpacking, and
    right whatever the fields' order or number (an attribute read per field cost about 5k
    instructions per e2e order, a converter call per value more than the conversion)."""
    names: dict[str, Any] = {
        "time_value": time_value, "text_value": text_value, "detail_json": detail_json,
        "trade_detail_json": trade_detail_json, "TradeDetail": TradeDetail,
        "NULL_SOURCE": NULL_SOURCE, "_VARCHAR_30": _VARCHAR_30, "_DEC_8": _DEC_8,
        "_DEC_16": _DEC_16, "_DEC_4": _DEC_4, "_TEXT_FITS": _TEXT_FITS,
        "_TEXTS_8": _TEXTS_8, "_TEXTS_4": _TEXTS_4, "_remembered": _remembered,
        "_dec8": _dec8, "_dec4": _dec4, "_object_id": id,
    }
    code = f"def {name}(e):\n    {', '.join(fields)}, = e\n{body}"
    exec(compile(code, f"<history {name}>", "exec"), names)  # noqa: S102
    function: Callable[[Any], tuple[Any, ...]] = names[name]
    return function


def _dec(value: str, limit: int, converter: str) -> str:
    """``decimal_fast_path`` for DECIMAL(30, _) columns, by ``limit``."""
    return f"(str({value}) if not {value} or {value}.adjusted() < {limit} else {converter}({value}))"


def _varchar(value: str) -> str:
    return f"({value} if len({value}) <= 30 else _VARCHAR_30({value}))"


#: balance_history's stored values of a BalanceChanged
_stored_balance = _unpacking("stored_balance", BalanceChanged._fields, f"""\
    text = trade_detail_json(detail) if type(detail) is TradeDetail else detail_json(detail)
    return (time_value(time), user, {_varchar("asset")}, {_varchar("business")},
            {_dec("change", _LIMIT_8, "_DEC_8")}, {_dec("balance", _LIMIT_16, "_DEC_16")},
            text if len(text) <= _TEXT_FITS else text_value(text))
""")

def _shared(value: str, texts: str, convert: str) -> str:
    """Statements setting ``value`` to its text through ``texts`` (``_TEXTS_8`` / ``_TEXTS_4``,
    the hit inline; ``_object_id`` is ``id``, a field name of order snapshots)."""
    return (f"    hit = {texts}.get(_object_id({value}))\n"
            f"    {value} = hit[1] if hit is not None and hit[0] is {value} "
            f"else _remembered({texts}, {value}, {convert})\n")


#: order_history's (and order_detail's) stored values of an order snapshot
_stored_order = _unpacking("stored_order", OrderSnapshot._fields, f"""\
{_shared("price", "_TEXTS_8", "_dec8")}{_shared("amount", "_TEXTS_8", "_dec8")}\
{_shared("taker_fee", "_TEXTS_4", "_dec4")}{_shared("maker_fee", "_TEXTS_4", "_dec4")}\
    return (id, time_value(ctime), time_value(mtime), user, {_varchar("market")},
            NULL_SOURCE if source is None else {_varchar("source")}, type, side,
            price, amount, taker_fee, maker_fee,
            {_dec("deal_stock", _LIMIT_8, "_DEC_8")}, {_dec("deal_money", _LIMIT_16, "_DEC_16")},
            {_dec("deal_fee", _LIMIT_16, "_DEC_16")})
""")


# -- stored text -> reply text --------------------------------------------------------------------


def strip_zeros(text: str) -> str:
    """The original readhistory's ``rstripzero`` on MySQL's DECIMAL text: trailing zeros after
    the point removed, then a dangling point ("1.50000000" -> "1.5", "2.000" -> "2")."""
    if "." not in text:
        return text
    text = text.rstrip("0")
    if text[-1] == ".":
        text = text[:-1]
    if text == "-0":
        return "0"
    return text


_SCALES = [Decimal(1).scaleb(-scale) for scale in range(31)]


def decimal_text(value: Any, scale: int) -> str:
    """A DECIMAL(_, scale) column value as read -> reply text: the column's fixed-point text
    with trailing zeros stripped.  MySQL gives a Decimal already at the scale; SQLite gives the
    exact text we stored, rounded here as MySQL would have rounded it."""
    if not isinstance(value, Decimal):
        value = Decimal(value)
    value = value.quantize(_SCALES[scale], ROUND_HALF_UP, _CONTEXT)
    if not value:
        return "0"
    return strip_zeros(format(value, "f"))
