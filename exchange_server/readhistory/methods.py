"""readhistory's methods (rpc.md section 5): parameter reading and reply shapes.

Each method is split in two: ``prepare(params)`` validates (cheap, in the event loop; raises
RpcError code 1) and returns a job; the job runs the query and builds the result in a worker
thread.  Parameters are read like the original (jansson's ``json_integer_value``): anything that
is not a JSON integer (string, real, boolean, null, missing) reads as 0.  Unlike the original,
integers it would silently wrap to unsigned values are refused with code 1: a negative value,
a user id above 2**32 - 1 (the original truncated it, i.e. read another user's history), and
any other integer above 2**64 - 1.  See COMPAT.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from exchange_server.common.errors import invalid_argument
from exchange_server.history.rows import decimal_text
from exchange_server.readhistory.reader import HistoryReader, Record

#: The original's QUERY_LIMIT: 1 <= limit <= 101.
QUERY_LIMIT = 101
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

Params = list[Any]
Job = Callable[[], Any]


def _int(params: Params, index: int, maximum: int = U64_MAX) -> int:
    """json_integer_value: a JSON integer, else 0 (also for a missing param)."""
    value = params[index] if index < len(params) else None
    if type(value) is not int:
        return 0
    if value < 0 or value > maximum:
        raise invalid_argument()
    return value


def _str(params: Params, index: int) -> str:
    value = params[index] if index < len(params) else None
    if type(value) is not str:
        raise invalid_argument()
    return value


def _user(params: Params, index: int) -> int:
    user = _int(params, index, U32_MAX)
    if user == 0:
        raise invalid_argument()
    return user


def _order_id(params: Params, index: int) -> int:
    order_id = _int(params, index)
    if order_id == 0:
        raise invalid_argument()
    return order_id


def _time_range(params: Params, index: int) -> tuple[int, int]:
    start = _int(params, index)
    end = _int(params, index + 1)
    if end and start > end:
        raise invalid_argument()
    return start, end


def _page(params: Params, index: int) -> tuple[int, int]:
    offset = _int(params, index)
    limit = _int(params, index + 1)
    if limit == 0 or limit > QUERY_LIMIT:
        raise invalid_argument()
    return offset, limit


def _detail(text: Any) -> Any:
    """The stored detail JSON; anything that is not a JSON object reads as ``{}``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        detail = json.loads(text)  # exact: big integers and key order as stored
    except (TypeError, ValueError, RecursionError):
        return {}
    return detail if isinstance(detail, dict) else {}


def balance_record(row: Record) -> dict[str, Any]:
    return {
        "time": float(row[0]),
        "asset": row[1],
        "business": row[2],
        "change": decimal_text(row[3], 8),
        "balance": decimal_text(row[4], 16),
        "detail": _detail(row[5]),
    }


def finished_order(row: Record) -> dict[str, Any]:
    return {
        "id": int(row[0]),
        "ctime": float(row[1]),
        "ftime": float(row[2]),
        "user": int(row[3]),
        "market": row[4],
        "source": row[5],
        "type": int(row[6]),
        "side": int(row[7]),
        "price": decimal_text(row[8], 8),
        "amount": decimal_text(row[9], 8),
        "taker_fee": decimal_text(row[10], 4),
        "maker_fee": decimal_text(row[11], 4),
        "deal_stock": decimal_text(row[12], 8),
        "deal_money": decimal_text(row[13], 16),
        "deal_fee": decimal_text(row[14], 16),
    }


def order_deal(row: Record) -> dict[str, Any]:
    return {
        "time": float(row[0]),
        "user": int(row[1]),
        "id": int(row[2]),
        "role": int(row[3]),
        "price": decimal_text(row[4], 8),
        "amount": decimal_text(row[5], 8),
        "deal": decimal_text(row[6], 16),
        "fee": decimal_text(row[7], 16),
        "deal_order_id": int(row[8]),
    }


def user_deal(row: Record) -> dict[str, Any]:
    return {
        "time": float(row[0]),
        "user": int(row[1]),
        "id": int(row[2]),
        "side": int(row[3]),
        "role": int(row[4]),
        "price": decimal_text(row[5], 8),
        "amount": decimal_text(row[6], 8),
        "deal": decimal_text(row[7], 16),
        "fee": decimal_text(row[8], 16),
        "deal_order_id": int(row[9]),
        "market": row[10],
    }


def finished_stop(row: Record) -> dict[str, Any]:
    """The fork's order.finished_stop record (without ``account``; we do not support fees in
    another asset: ``fee_asset`` null, ``fee_discount`` "1"), plus ``order_id``: the order the
    stop spawned (0: refused, or the stop was cancelled)."""
    return {
        "id": int(row[0]),
        "ctime": float(row[1]),
        "ftime": float(row[2]),
        "user": int(row[3]),
        "option": int(row[4]),
        "market": row[5],
        "source": row[6],
        "type": int(row[7]),
        "side": int(row[8]),
        "stop_price": decimal_text(row[9], 8),
        "price": decimal_text(row[10], 8),
        "amount": decimal_text(row[11], 8),
        "taker_fee": decimal_text(row[12], 4),
        "maker_fee": decimal_text(row[13], 4),
        "fee_asset": None,
        "fee_discount": "1",
        "status": int(row[14]),
        "client_id": row[15],
        "order_id": int(row[16]),
    }


def _paged(offset: int, limit: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"offset": offset, "limit": limit, "records": records}


class ReadHistoryMethods:
    def __init__(self, reader: HistoryReader) -> None:
        self.reader = reader
        self.table: dict[str, Callable[[Params], Job]] = {
            "balance.history": self.balance_history,
            "order.finished": self.order_finished,
            "order.finished_detail": self.order_finished_detail,
            "order.deals": self.order_deals,
            "market.user_deals": self.market_user_deals,
            "order.finished_stop": self.order_finished_stop,
        }

    def balance_history(self, params: Params) -> Job:
        """[user_id, asset ("" = all), business ("" = all), start_time, end_time, offset,
        limit]"""
        if len(params) != 7:
            raise invalid_argument()
        user = _user(params, 0)
        asset = _str(params, 1)
        business = _str(params, 2)
        start, end = _time_range(params, 3)
        offset, limit = _page(params, 5)

        def job() -> Any:
            rows = self.reader.balance_history(user, asset, business, start, end, offset, limit)
            return _paged(offset, limit, [balance_record(r) for r in rows])

        return job

    def order_finished(self, params: Params) -> Job:
        """[user_id, market, start_time, end_time, offset, limit, side?]"""
        if len(params) < 6:
            raise invalid_argument()
        user = _user(params, 0)
        market = _str(params, 1)
        start, end = _time_range(params, 2)
        offset, limit = _page(params, 4)
        side = 0
        if len(params) >= 7:
            side = _int(params, 6)
            if side not in (0, 1, 2):
                raise invalid_argument()

        def job() -> Any:
            rows = self.reader.order_finished(user, market, side, start, end, offset, limit)
            return _paged(offset, limit, [finished_order(r) for r in rows])

        return job

    def order_finished_detail(self, params: Params) -> Job:
        """[order_id] -> the finished order or null"""
        if len(params) != 1:
            raise invalid_argument()
        order_id = _order_id(params, 0)

        def job() -> Any:
            row = self.reader.order_detail(order_id)
            return None if row is None else finished_order(row)

        return job

    def order_deals(self, params: Params) -> Job:
        """[order_id, offset, limit]"""
        if len(params) != 3:
            raise invalid_argument()
        order_id = _order_id(params, 0)
        offset, limit = _page(params, 1)

        def job() -> Any:
            rows = self.reader.order_deals(order_id, offset, limit)
            return _paged(offset, limit, [order_deal(r) for r in rows])

        return job

    def market_user_deals(self, params: Params) -> Job:
        """[user_id, market, offset, limit]"""
        if len(params) != 4:
            raise invalid_argument()
        user = _user(params, 0)
        market = _str(params, 1)
        offset, limit = _page(params, 2)

        def job() -> Any:
            rows = self.reader.user_deals(user, market, offset, limit)
            return _paged(offset, limit, [user_deal(r) for r in rows])

        return job

    def order_finished_stop(self, params: Params) -> Job:
        """[user_id, market ("" = all), side (0 = both), start_time, end_time, offset, limit]:
        stops that fired (status 1: order placed, 2: order refused) or were cancelled (3),
        newest first (the CoinEx fork's v1 layout)."""
        if len(params) != 7:
            raise invalid_argument()
        user = _user(params, 0)
        market = _str(params, 1)
        side = _int(params, 2)
        if side not in (0, 1, 2):
            raise invalid_argument()
        start, end = _time_range(params, 3)
        offset, limit = _page(params, 5)

        def job() -> Any:
            rows = self.reader.stop_history(user, market, side, start, end, offset, limit)
            return _paged(offset, limit, [finished_stop(r) for r in rows])

        return job
