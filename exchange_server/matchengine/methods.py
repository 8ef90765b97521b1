"""The matchengine's RPC methods: parameter validation, engine call, result shape.

Validation order and error codes follow rpc.md section 4.  Write methods are registered with
the name the operation log stores them under (the original's ``update_balance``,
``limit_order``, ``market_order``, ``cancel_order``), and replay runs exactly the same function
with the logged params and time, so a restored state cannot differ from the live one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exchange_server.common.decimals import ONE, ZERO, fmt, parse, truncate
from exchange_server.common.errors import invalid_argument
from exchange_server.matchengine.balance import AVAILABLE
from exchange_server.matchengine.engine import Engine
from exchange_server.matchengine.market import Market
from exchange_server.matchengine.model import ASK, BID, OrderSnapshot, order_info

#: order.book / order.depth / order.pending page size limit.
LIST_MAX = 101
#: source must be shorter than this many bytes (the original's strlen(source) < 31).
SOURCE_MAX_BYTES = 31
#: business names longer than this cannot be stored in balance_history (VARCHAR(30)).
BUSINESS_MAX = 30

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

Params = list[Any]


# -- parameter readers ---------------------------------------------------------------------------


def _int(value: Any, maximum: int = U64_MAX) -> int:
    if type(value) is not int or value < 0 or value > maximum:
        raise invalid_argument()
    return value


def _user(value: Any) -> int:
    """User ids are unsigned 32-bit and non-zero (the original let 0 through some methods)."""
    user = _int(value, U32_MAX)
    if user == 0:
        raise invalid_argument()
    return user


def _str(value: Any) -> str:
    if type(value) is not str:
        raise invalid_argument()
    return value


def _dec(value: Any, prec: int) -> Decimal:
    parsed = parse(value, prec)
    if parsed is None:
        raise invalid_argument()
    return parsed


def _positive(value: Any, prec: int) -> Decimal:
    parsed = _dec(value, prec)
    if parsed <= 0:
        raise invalid_argument()
    return parsed


def _fee(value: Any, prec: int) -> Decimal:
    parsed = _dec(value, prec)
    if parsed < 0 or parsed >= ONE:
        raise invalid_argument()
    return parsed


def _side(value: Any) -> int:
    if type(value) is not int or value not in (ASK, BID):
        raise invalid_argument()
    return value


def _source(value: Any) -> str:
    source = _str(value)
    if len(source.encode()) >= SOURCE_MAX_BYTES:
        raise invalid_argument()
    return source


def _count(params: Params, n: int) -> None:
    if len(params) != n:
        raise invalid_argument()


def present(result: Any) -> Any:
    """A write's result as the reply shows it.  Writes return order snapshots unformatted so
    that replay, which discards replies, does not pay for formatting them."""
    if type(result) is OrderSnapshot:
        return order_info(result)
    return result


@dataclass(frozen=True)
class WriteMethod:
    """A state-changing method and the name its operations carry in the operation log."""

    name: str
    log_name: str
    run: Callable[[float, Params], Any]


class MatchEngineMethods:
    """Binds the method table to one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reads: dict[str, Callable[[Params], Any]] = {
            "balance.query": self.balance_query,
            "asset.list": self.asset_list,
            "asset.summary": self.asset_summary,
            "order.book": self.order_book,
            "order.depth": self.order_depth,
            "order.pending": self.order_pending,
            "order.pending_detail": self.order_pending_detail,
            "market.list": self.market_list,
            "market.summary": self.market_summary,
        }
        writes = [
            WriteMethod("balance.update", "update_balance", self.balance_update),
            WriteMethod("order.put_limit", "limit_order", self.order_put_limit),
            WriteMethod("order.put_market", "market_order", self.order_put_market),
            WriteMethod("order.cancel", "cancel_order", self.order_cancel),
        ]
        self.writes: dict[str, WriteMethod] = {w.name: w for w in writes}
        self.by_log_name: dict[str, WriteMethod] = {w.log_name: w for w in writes}

    def _market(self, value: Any) -> Market:
        if type(value) is not str:
            raise invalid_argument()
        market = self.engine.markets.get(value)
        if market is None:
            raise invalid_argument()
        return market

    def _asset(self, value: Any) -> str:
        if type(value) is not str or value not in self.engine.assets:
            raise invalid_argument()
        return value

    # -- writes -----------------------------------------------------------------------------------

    def balance_update(self, now: float, params: Params) -> Any:
        _count(params, 6)
        user = _user(params[0])
        asset = self._asset(params[1])
        business = _str(params[2])
        if len(business) > BUSINESS_MAX:
            raise invalid_argument()
        business_id = _int(params[3])
        change = _dec(params[4], self.engine.assets[asset].prec_show)
        detail = params[5]
        if type(detail) is not dict:
            raise invalid_argument()
        self.engine.update_balance(now, user, asset, business, business_id, change, detail)
        return {"status": "success"}

    def order_put_limit(self, now: float, params: Params) -> Any:
        _count(params, 8)
        user = _user(params[0])
        market = self._market(params[1])
        side = _side(params[2])
        amount = _positive(params[3], market.stock_prec)
        price = _positive(params[4], market.money_prec)
        taker_fee = _fee(params[5], market.fee_prec)
        maker_fee = _fee(params[6], market.fee_prec)
        source = _source(params[7])
        return self.engine.put_limit(now, market, user, side, amount, price, taker_fee, maker_fee,
                                     source)

    def order_put_market(self, now: float, params: Params) -> Any:
        _count(params, 6)
        user = _user(params[0])
        market = self._market(params[1])
        side = _side(params[2])
        # A market bid's amount is money: truncate it to money_prec (the original used stock_prec).
        amount = _positive(params[3], market.stock_prec if side == ASK else market.money_prec)
        taker_fee = _fee(params[4], market.fee_prec)
        source = _source(params[5])
        return self.engine.put_market(now, market, user, side, amount, taker_fee, source)

    def order_cancel(self, now: float, params: Params) -> Any:
        _count(params, 3)
        user = _user(params[0])
        market = self._market(params[1])
        order_id = _int(params[2])
        return self.engine.cancel(now, market, user, order_id)

    # -- reads ------------------------------------------------------------------------------------

    def balance_query(self, params: Params) -> Any:
        if not params:
            raise invalid_argument()
        user = _user(params[0])
        names = [self._asset(p) for p in params[1:]] if len(params) > 1 else self.engine.assets
        balances = self.engine.balances
        result: dict[str, Any] = {}
        for name in names:
            asset = self.engine.assets[name]
            account = balances.accounts.get((user, name))
            available = account[0] if account is not None else None
            frozen = account[1] if account is not None else None
            result[name] = {
                "available": self._show(available, asset.prec_save, asset.prec_show),
                "freeze": self._show(frozen, asset.prec_save, asset.prec_show),
            }
        return result

    @staticmethod
    def _show(value: Decimal | None, prec_save: int, prec_show: int) -> str:
        if not value:
            return "0"
        if prec_save != prec_show:
            value = truncate(value, prec_show)
        return fmt(value)

    def asset_list(self, params: Params) -> Any:
        return [{"name": a.name, "prec": a.prec_show} for a in self.engine.assets.values()]

    def asset_summary(self, params: Params) -> Any:
        names = [self._asset(p) for p in params] if params else list(self.engine.assets)
        wanted = set(names)
        stats: dict[str, list[Any]] = {name: [ZERO, 0, ZERO, 0, ZERO] for name in wanted}
        balances = self.engine.balances
        for _, asset, kind, value in balances.items():
            if asset in wanted:
                s = stats[asset]
                s[0] += value
                if kind == AVAILABLE:
                    s[1] += 1
                    s[2] += value
                else:
                    s[3] += 1
                    s[4] += value
        return [
            {
                "name": name,
                "total_balance": fmt(stats[name][0]),
                "available_count": stats[name][1],
                "available_balance": fmt(stats[name][2]),
                "freeze_count": stats[name][3],
                "freeze_balance": fmt(stats[name][4]),
            }
            for name in names
        ]

    def order_book(self, params: Params) -> Any:
        _count(params, 4)
        market = self._market(params[0])
        side = _side(params[1])
        offset = _int(params[2])
        limit = _int(params[3], LIST_MAX)
        total = market.ask_count if side == ASK else market.bid_count
        orders: list[Any] = []
        if limit:
            skip = offset
            for _, level in market.side_levels(side):
                if skip >= len(level):
                    skip -= len(level)
                    continue
                for order in level.values():
                    if skip:
                        skip -= 1
                        continue
                    orders.append(order_info(order))
                    if len(orders) >= limit:
                        break
                if len(orders) >= limit:
                    break
        return {"offset": offset, "limit": limit, "total": total, "orders": orders}

    def order_depth(self, params: Params) -> Any:
        _count(params, 3)
        market = self._market(params[0])
        limit = _int(params[1], LIST_MAX)
        interval = _dec(params[2], market.money_prec)
        if interval < 0:
            raise invalid_argument()
        return {
            "asks": market.depth(ASK, limit, interval),
            "bids": market.depth(BID, limit, interval),
        }

    def order_pending(self, params: Params) -> Any:
        _count(params, 4)
        user = _user(params[0])
        market = self._market(params[1])
        offset = _int(params[2])
        limit = _int(params[3], LIST_MAX)
        user_orders = market.users.get(user, {})
        records: list[Any] = []
        if limit and offset < len(user_orders):
            for i, order in enumerate(reversed(user_orders.values())):
                if i < offset:
                    continue
                records.append(order_info(order))
                if len(records) >= limit:
                    break
        return {"limit": limit, "offset": offset, "total": len(user_orders), "records": records}

    def order_pending_detail(self, params: Params) -> Any:
        _count(params, 2)
        market = self._market(params[0])
        order_id = _int(params[1])
        order = market.orders.get(order_id)
        return None if order is None else order_info(order)

    def market_list(self, params: Params) -> Any:
        return [
            {
                "name": m.name,
                "stock": m.stock,
                "money": m.money,
                "fee_prec": m.fee_prec,
                "stock_prec": m.stock_prec,
                "money_prec": m.money_prec,
                "min_amount": fmt(m.min_amount),
            }
            for m in self.engine.markets.values()
        ]

    def market_summary(self, params: Params) -> Any:
        markets = [self._market(p) for p in params] if params else list(self.engine.markets.values())
        return [
            {
                "name": m.name,
                "ask_count": m.ask_count,
                "ask_amount": fmt(m.ask_amount) if m.ask_count else "0",
                "bid_count": m.bid_count,
                "bid_amount": fmt(m.bid_amount) if m.bid_count else "0",
            }
            for m in markets
        ]
