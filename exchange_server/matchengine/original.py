"""Taking over a running original ViaBTC matchengine: its ``trade_log`` as it left it.

Why: an exchange already running the original must be able to switch to this project without
losing or doubling anything a client was told.  The original's database differs from ours in
ways that matter only on the way in, so everything about them lives here:

* **Layout.**  Its slice templates have no ``source`` / ``exact`` / ``option`` / ``client_id``
  columns and narrower DECIMAL columns; its slices have no ``slice_update`` table; its operlog
  tables hold TEXT in ``utf8`` (3-byte) while our records may be longer and hold any character.
  :func:`adopt` detects such a database (``slice_order_example`` without ``exact``) on the
  first open, records the **takeover point** (the last operation id the original logged) in a
  table ``takeover`` of our own, renames the original's slice templates to
  ``*_example_viabtc`` (kept for going back, see docs/operations.md) so that ours are created,
  and widens ``operlog_example`` and the newest day table (MEDIUMTEXT, utf8mb4), the only
  ones our records can go to.  Each step is idempotent, so a crash half-way is finished by the
  next open.
* **Slices.**  :func:`read_slice` reads a slice in the original's layout and applies its load
  rules (:func:`apply_load_rules`: price, amount and left truncated to the market's
  precisions, fees to its fee precision, balances to the asset's ``prec_save``, the other
  columns as they are).  The slice does not keep orders' ``source``: it is recovered from the
  creating operation when the log still holds it (counted back from the slice's
  ``end_order_id``: every logged ``limit_order`` / ``market_order`` made exactly one order),
  ``""`` otherwise.
* **Self-trades.**  The original let a user's orders trade with each other; its order
  records carry no self-trade prevention mode, and replay gives a logged order without a mode
  none (methods.py), so they trade as they did.
* **Integers.**  The original read integer params with C casts: user -1 became 4294967295 and a
  business id -5 became 2**64 - 5.  It logged and acknowledged such operations, so their
  replay must do the same (:func:`original_params`), but only for records at or below the
  takeover point, i.e. written by the original; a new request with them is still refused.
* **Marks.**  The history writer and the bus publisher must start after the takeover point:
  the original already wrote those rows and published those messages.  At every restore with
  a takeover point the service hands it to each sink's ``start_after``, which raises the
  sink's durable mark to it (a no-op once the mark is past it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exchange_server.common.decimals import truncate
from exchange_server.matchengine.core.engine import Engine, EngineState
from exchange_server.matchengine.logcodec import decode_detail
from exchange_server.matchengine.slicerows import order_from_row
from exchange_server.matchengine.store import SliceInfo, StoreError

log = logging.getLogger("exchange_server.matchengine")

#: Our table holding the takeover point (one row).
TAKEOVER_TABLE = "takeover"
#: The original's slice templates, renamed with this suffix when ours replace them.
KEPT_SUFFIX = "_viabtc"
RENAMED_TEMPLATES = ("slice_order_example", "slice_balance_example")

#: The original's slice_order columns after ``id``, in its order.
ORDER_COLUMNS = ("t, side, create_time, update_time, user_id, market, price, amount, taker_fee,"
                 " maker_fee, `left`, freeze, deal_stock, deal_money, deal_fee")
#: Log names of the operations that create one order each in the original.
ORDER_METHODS = ("limit_order", "market_order")
#: Where each of them keeps the order's source.
SOURCE_PARAM = {"limit_order": 7, "market_order": 5}

#: Seconds the original's log must stand still before it is taken over.
STILL_TIME = 1.0

U32 = 2**32
U64 = 2**64
#: Per log name: (param index, modulus) of the integers the original read with a C cast.
WRAPPED_PARAMS: dict[str, tuple[tuple[int, int], ...]] = {
    "update_balance": ((0, U32), (3, U64)),
    "limit_order": ((0, U32),),
    "market_order": ((0, U32),),
    "cancel_order": ((0, U32), (2, U64)),
}


@dataclass
class OriginalState(EngineState):
    """A slice read in the original's layout: its values are as stored, before the original's
    load rules (which need the markets' precisions: :func:`apply_load_rules`)."""


# -- detection and upgrade ---------------------------------------------------------------------


def _columns(cur: Any, table: str) -> set[str] | None:
    cur.execute("SHOW TABLES LIKE %s", (table,))
    if not cur.fetchall():
        return None
    cur.execute(f"SHOW COLUMNS FROM `{table}`")
    return {row[0] for row in cur.fetchall()}


def _operlog_tables(cur: Any) -> list[str]:
    cur.execute("SHOW TABLES LIKE 'operlog\\_%'")
    return sorted(r[0] for r in cur.fetchall() if r[0][8:].isdigit() and len(r[0]) == 16)


def _last_oper_id(cur: Any, tables: list[str]) -> int:
    last = 0
    for table in tables:
        cur.execute(f"SELECT MAX(id) FROM `{table}`")
        top = cur.fetchone()[0]
        last = max(last, int(top or 0))
    return last


def adopt(conn: Any) -> int:
    """Make an original's ``trade_log`` usable by this project (see the module doc); run by
    ``MysqlEngineStore.open()`` before its schema.  Returns the takeover point, 0 for a
    database that never belonged to the original."""
    with conn.cursor() as cur:
        order_columns = _columns(cur, "slice_order_example")
        original = order_columns is not None and "exact" not in order_columns
        point = takeover_point_of(cur)
        if not original and point is None:
            return 0
        tables = _operlog_tables(cur)
        if point is None:
            point = _still_log_end(conn, cur)
            cur.execute(f"CREATE TABLE IF NOT EXISTS `{TAKEOVER_TABLE}` ("
                        " id INT UNSIGNED NOT NULL PRIMARY KEY,"
                        " time BIGINT NOT NULL,"
                        " end_oper_id BIGINT UNSIGNED NOT NULL"
                        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
            tables = _operlog_tables(cur)
            cur.execute(f"INSERT IGNORE INTO `{TAKEOVER_TABLE}` (id, time, end_oper_id)"
                        " VALUES (1, %s, %s)", (int(time.time()), point))
            conn.commit()
            point = takeover_point_of(cur) or 0
            log.warning("taking over an original ViaBTC trade_log: operations up to %d were "
                        "written by the original", point)
        if original:
            for template in RENAMED_TEMPLATES:
                kept = template + KEPT_SUFFIX
                if _columns(cur, kept) is None and _columns(cur, template) is not None:
                    cur.execute(f"RENAME TABLE `{template}` TO `{kept}`")
            for table in ["operlog_example"] + tables[-1:]:
                _widen_operlog(cur, table)
        conn.commit()
        return point


def _still_log_end(conn: Any, cur: Any) -> int:
    """The end of the original's operation log, once it has stood still for STILL_TIME
    seconds (the original flushes its log every 0.1 s): taking over a database the original
    still writes would give two writers of one log."""
    conn.commit()
    first = _last_oper_id(cur, _operlog_tables(cur))
    conn.commit()  # a fresh snapshot for the second look
    time.sleep(STILL_TIME)
    last = _last_oper_id(cur, _operlog_tables(cur))
    conn.commit()
    if last != first:
        raise StoreError(f"the original matchengine is still writing its operation log (last id "
                         f"{first}, then {last} {STILL_TIME} s later): stop it before the takeover")
    return last


def _widen_operlog(cur: Any, table: str) -> None:
    """Our records fit: MEDIUMTEXT detail in utf8mb4 (the original's is TEXT in utf8).  Any
    column our records need beyond the original's belongs here too (the day table already
    exists, so ``CREATE TABLE ... LIKE operlog_example`` will not make it ours)."""
    if _columns(cur, table) is None:
        return  # operlog_example is made by our schema right after
    cur.execute(f"SHOW FULL COLUMNS FROM `{table}` WHERE Field = 'detail'")
    row = cur.fetchone()
    if row is None or (row[1].lower() == "mediumtext" and str(row[2]).startswith("utf8mb4")):
        return
    cur.execute(f"ALTER TABLE `{table}` DEFAULT CHARACTER SET utf8mb4,"
                " MODIFY detail MEDIUMTEXT CHARACTER SET utf8mb4 NULL")


def takeover_point_of(cur: Any) -> int | None:
    """The recorded takeover point, None when there is none."""
    cur.execute("SHOW TABLES LIKE %s", (TAKEOVER_TABLE,))
    if not cur.fetchall():
        return None
    cur.execute(f"SELECT end_oper_id FROM `{TAKEOVER_TABLE}` WHERE id = 1")
    row = cur.fetchone()
    return int(row[0]) if row else None


# -- slices ------------------------------------------------------------------------------------


def is_original_slice(columns: set[str]) -> bool:
    """A slice_order table in the original's layout (ours always has ``exact``)."""
    return "exact" not in columns


def read_slice(pages: Callable[[str, str], Iterator[tuple[Any, ...]]], t: int,
               info: SliceInfo, history: Iterator[tuple[int, str | bytes | None]]
               ) -> OriginalState:
    """The original's slice ``t``: orders (sources recovered from ``history``, the log read
    backwards from ``info.end_oper_id``) and balances, values as stored."""
    state = OriginalState(order_id=info.end_order_id, deal_id=info.end_deals_id)
    rows = list(pages(f"slice_order_{t}", ORDER_COLUMNS))
    sources = recover_sources(info, rows, history)
    for oid, kind, side, ctime, mtime, user, market, *values in rows:
        if any(v is None for v in values):
            raise StoreError(f"slice_order_{t} id {oid}: NULL value")
        state.orders.append(order_from_row(
            oid, market, sources.get(int(oid), ""), kind, side, user, ctime, mtime,
            [Decimal(str(v)) for v in values], 0, None))
    for bid, user, asset, kind, value in pages(f"slice_balance_{t}", "user_id, asset, t, balance"):
        if value is None:
            raise StoreError(f"slice_balance_{t} id {bid}: NULL balance")
        state.balances.append((int(user), asset, int(kind), Decimal(str(value))))
    return state


def recover_sources(info: SliceInfo, orders: list[tuple[Any, ...]],
                    history: Iterator[tuple[int, str | bytes | None]]) -> dict[int, str]:
    """``{order id: source}`` for the slice's orders whose creating operation is still in the
    log.  ``history`` yields ``(id, detail)`` from ``info.end_oper_id`` downwards; the walk
    stops at a gap in the ids, at the oldest order needed, or at an operation that does not
    match its order (user, market, side): the count would no longer be reliable."""
    wanted = {int(r[0]): r for r in orders}
    if not wanted:
        return {}
    oldest = min(wanted)
    order_id = info.end_order_id
    expected = info.end_oper_id
    sources: dict[int, str] = {}
    for oper_id, detail in history:
        if oper_id != expected or order_id < oldest:
            break
        expected -= 1
        try:
            method, params = decode_detail(detail, oper_id)
        except StoreError as e:
            log.warning("sources of slice orders before operation %d not recovered: %s",
                        oper_id, e)
            break
        if method not in ORDER_METHODS:
            continue
        params = original_params(method, params)
        row = wanted.get(order_id)
        if row is not None:
            _, _, side, _, _, user, market = row[:7]
            if params[:3] != [int(user), market, int(side)]:
                log.warning("slice order %d does not match operation %d: sources of older "
                            "orders not recovered", order_id, oper_id)
                break
            index = SOURCE_PARAM[method]
            source = params[index] if index < len(params) else ""
            sources[order_id] = source if isinstance(source, str) else ""
        order_id -= 1
    missing = len(wanted) - len(sources)
    if missing:
        log.warning("slice %d: %d order(s) without their creating operation in the log get "
                    "source \"\"", info.time, missing)
    return sources


def apply_load_rules(state: EngineState, engine: Engine) -> None:
    """The original's load rules for its own slices: price, amount and left truncated to the
    market's precisions, fees to its fee precision, balances to the asset's prec_save; other
    values as stored.  Rows of unknown markets or assets are left for load_state to skip."""
    for order in state.orders:
        market = engine.markets.get(order.market)
        if market is None:
            continue
        order.price = truncate(order.price, market.money_prec)
        order.amount = truncate(order.amount, market.stock_prec)
        order.left = truncate(order.left, market.stock_prec)
        order.taker_fee = truncate(order.taker_fee, market.fee_prec)
        order.maker_fee = truncate(order.maker_fee, market.fee_prec)
    balances = []
    for user, asset, kind, value in state.balances:
        config = engine.assets.get(asset)
        balances.append((user, asset, kind,
                         value if config is None else truncate(value, config.prec_save)))
    state.balances = balances


# -- integers ----------------------------------------------------------------------------------


def original_params(method: str, params: list[Any]) -> list[Any]:
    """``params`` as the original read them: integers it cast to unsigned wrapped (user ids to
    32 bits, business and order ids to 64 bits).  For records the original wrote only."""
    wrapped = WRAPPED_PARAMS.get(method)
    if not wrapped:
        return params
    result = params
    for index, modulus in wrapped:
        if index < len(params):
            value = params[index]
            if type(value) is int and not 0 <= value < modulus:
                if result is params:
                    result = list(params)
                result[index] = value % modulus
    return result
