"""Prototype: a deal's arithmetic with integer amounts scaled per asset, against the engine's
Decimals, on the same deals.  Not used by the engine: the figure that says whether carrying
integers through the core would pay.

Why: ``bench_engine``'s time lags its instruction count (bench/README.md, "Engine core, sixth
pass"), and the last sessions named integer amounts as the lever left.  What is measured is
the part integers would replace first: ``Market._deal`` (price x amount, the two fees, the two
orders' fields, the book's amounts) and ``Balances.trade`` for both sides, quiet (no events),
with the engine's own code for Decimals and a copy of it on integers: prices at the market's
money precision, amounts at its stock precision, fee rates at its fee precision, balances at
each asset's ``prec_save`` (so that no truncation is ever needed for the default markets:
stock.prec + money.prec + fee_prec <= money's prec_save, as the config file's rules ask).

Run: ``.venv/bin/python -m bench.deal_ints [N] [dec|int] [noloop]`` (default 100,000 deals,
both, alternately three times: seconds per deal).  ``noloop`` builds the deals but does not
run them (for cachegrind: instructions = a run minus its noloop run).
"""

from __future__ import annotations

import random
import sys
import time
from decimal import Decimal, setcontext
from typing import Any

from bench.common import bench_config, report
from exchange_server.common.decimals import CONTEXT, parse
from exchange_server.matchengine.core.balance import Balances
from exchange_server.matchengine.core.market import Market
from exchange_server.matchengine.core.model import ASK, LIMIT, Order

#: the default config's BTCBCH: BTC keeps 12 places, BCH 20; prices and amounts have 8 places,
#: fee rates 4
STOCK_SAVE, MONEY_SAVE, PRICE_PREC, AMOUNT_PREC, FEE_PREC = 12, 20, 8, 8, 4
USERS = 1000
#: what every user holds before the deals: available and frozen, stock then money
HOLDINGS = (Decimal(900_000), Decimal(100_000), Decimal(90_000_000), Decimal(10_000_000))
TAKER_FEE, MAKER_FEE = "0.002", "0.001"

Deal = tuple[int, int, int, str, str]


def deals(n: int, seed: int = 1) -> list[Deal]:
    """(taker user, maker user, taker side, price text, amount text), as bench_engine's orders
    are drawn."""
    rng = random.Random(seed)
    return [(rng.randint(1, USERS), rng.randint(1, USERS), ASK if i & 1 else 3 - ASK,
             f"{100 + rng.randint(-20, 20) / 10:.1f}", f"{rng.randint(1, 100) / 100:.2f}")
            for i in range(n)]


def decimal_deals(todo: list[Deal], run: bool = True) -> tuple[float, dict[Any, Any]]:
    """The engine's own ``Market._deal`` (quiet) over ``todo``: CPU seconds and the balances."""
    setcontext(CONTEXT)
    config = bench_config()
    balances = Balances(config.assets)
    market = Market(next(m for m in config.markets if m.name == "BTCBCH"), balances, [])
    market.quiet = True
    for user in range(1, USERS + 1):
        balances.add(user, "BTC", HOLDINGS[0] + HOLDINGS[1])
        balances.freeze(user, "BTC", HOLDINGS[1])
        balances.add(user, "BCH", HOLDINGS[2] + HOLDINGS[3])
        balances.freeze(user, "BCH", HOLDINGS[3])
    taker_fee, maker_fee = parse(TAKER_FEE, FEE_PREC), parse(MAKER_FEE, FEE_PREC)
    assert taker_fee is not None and maker_fee is not None
    items = []
    for taker_user, maker_user, side, price_text, amount_text in todo:
        price, amount = parse(price_text, PRICE_PREC), parse(amount_text, AMOUNT_PREC)
        assert price is not None and amount is not None
        pair = [Order.fresh(id=1, market="BTCBCH", source="b", type=LIMIT, side=s, user=u,
                            now=0.0, price=price, amount=amount, taker_fee=taker_fee,
                            maker_fee=maker_fee, option=0, client_id=None)
                for u, s in ((taker_user, side), (maker_user, 3 - side))]
        pair[1].freeze = amount if pair[1].side == ASK else price * amount
        items.append((pair[0], pair[1], price, amount))
    deal = market._deal
    start = time.process_time()
    for taker, maker, price, amount in items if run else ():
        deal(taker, maker, price, amount, 1.0, 1)
    return time.process_time() - start, dict(balances.accounts)


class IntOrder:
    """The fields of an order a deal touches, as integers."""

    __slots__ = ("user", "side", "type", "left", "freeze", "deal_stock", "deal_money",
                 "deal_fee", "taker_fee", "maker_fee", "mtime")


class IntBalances:
    """``Balances.trade`` on integers at each asset's ``prec_save``: the same steps, without
    quantize (nothing to truncate)."""

    def __init__(self) -> None:
        self.accounts: dict[tuple[int, str], list[int]] = {}

    def trade(self, user: int, out_asset: str, out: int, from_frozen: bool, in_asset: str,
              got: int, fee: int) -> tuple[int, int, int]:
        accounts = self.accounts
        key = (user, out_asset)
        account = accounts.get(key)
        out_total = 0
        if account is None:
            if out:
                raise ValueError("negative balance")
        else:
            index = 1 if from_frozen else 0
            value = account[index] - out
            if value < 0:
                raise ValueError("negative balance")
            account[index] = value
            if not value and not account[1 - index]:
                del accounts[key]
            else:
                out_total = account[0] + account[1]
        key = (user, in_asset)
        account = accounts.get(key)
        if account is None:
            if not got:
                return out_total, 0, 0
            account = accounts[key] = [got, 0]
        else:
            account[0] += got
        in_total = account[0] + account[1]
        if not fee:
            return out_total, in_total, in_total
        value = account[0] - fee
        if value < 0:
            raise ValueError("negative balance")
        account[0] = value
        if not value and not account[1]:
            del accounts[key]
            return out_total, in_total, 0
        return out_total, in_total, value + account[1]


class IntMarket:
    """``Market._deal`` on integers, with the factors that bring a deal's amounts to the assets'
    scales (fixed per market: what a market would hold)."""

    def __init__(self, balances: IntBalances) -> None:
        self.balances = balances
        self.stock, self.money = "BTC", "BCH"
        self.ask_amount = self.bid_amount = 0
        self.amount_up = 10 ** (STOCK_SAVE - AMOUNT_PREC)
        self.deal_up = 10 ** (MONEY_SAVE - AMOUNT_PREC - PRICE_PREC)
        self.ask_fee_up = 10 ** (MONEY_SAVE - AMOUNT_PREC - PRICE_PREC - FEE_PREC)
        self.bid_fee_up = 10 ** (STOCK_SAVE - AMOUNT_PREC - FEE_PREC)

    def deal(self, taker: IntOrder, maker: IntOrder, price: int, amount: int,
             now: float) -> None:
        deal = price * amount
        taker.mtime = maker.mtime = now
        if taker.side == ASK:
            ask, bid = taker, maker
            ask_rate, bid_rate = taker.taker_fee, maker.maker_fee
        else:
            ask, bid = maker, taker
            ask_rate, bid_rate = maker.maker_fee, taker.taker_fee
        ask_fee = deal * ask_rate
        bid_fee = amount * bid_rate
        ask.left -= amount
        ask.deal_stock += amount
        ask.deal_money += deal
        ask.deal_fee += ask_fee
        bid.left -= amount
        bid.deal_stock += amount
        bid.deal_money += deal
        bid.deal_fee += bid_fee
        if maker is ask:
            maker.freeze -= amount
            self.ask_amount -= amount
        else:
            maker.freeze -= deal
            self.bid_amount -= amount
        trade = self.balances.trade
        stock, money = self.stock, self.money
        scaled_amount, scaled_deal = amount * self.amount_up, deal * self.deal_up
        if taker is ask:
            trade(taker.user, stock, scaled_amount, False, money, scaled_deal,
                  ask_fee * self.ask_fee_up)
            trade(maker.user, money, scaled_deal, True, stock, scaled_amount,
                  bid_fee * self.bid_fee_up)
        else:
            trade(taker.user, money, scaled_deal, False, stock, scaled_amount,
                  bid_fee * self.bid_fee_up)
            trade(maker.user, stock, scaled_amount, True, money, scaled_deal,
                  ask_fee * self.ask_fee_up)


def _scaled(value: Decimal, places: int) -> int:
    return int(value.scaleb(places, CONTEXT))


def int_deals(todo: list[Deal], run: bool = True) -> tuple[float, dict[Any, Any]]:
    """The same deals on integers: CPU seconds and the balances (as integers)."""
    balances = IntBalances()
    for user in range(1, USERS + 1):
        balances.accounts[(user, "BTC")] = [_scaled(HOLDINGS[0], STOCK_SAVE),
                                            _scaled(HOLDINGS[1], STOCK_SAVE)]
        balances.accounts[(user, "BCH")] = [_scaled(HOLDINGS[2], MONEY_SAVE),
                                            _scaled(HOLDINGS[3], MONEY_SAVE)]
    market = IntMarket(balances)
    items = []
    for taker_user, maker_user, side, price_text, amount_text in todo:
        price = _scaled(Decimal(price_text), PRICE_PREC)
        amount = _scaled(Decimal(amount_text), AMOUNT_PREC)
        pair = []
        for user, order_side in ((taker_user, side), (maker_user, 3 - side)):
            order = IntOrder()
            order.user, order.side, order.type, order.mtime = user, order_side, LIMIT, 0.0
            order.left, order.freeze = amount, 0
            order.deal_stock = order.deal_money = order.deal_fee = 0
            order.taker_fee = _scaled(Decimal(TAKER_FEE), FEE_PREC)
            order.maker_fee = _scaled(Decimal(MAKER_FEE), FEE_PREC)
            pair.append(order)
        pair[1].freeze = amount if pair[1].side == ASK else price * amount
        items.append((pair[0], pair[1], price, amount))
    deal = market.deal
    start = time.process_time()
    for taker, maker, price, amount in items if run else ():
        deal(taker, maker, price, amount, 1.0)
    return time.process_time() - start, balances.accounts


def main(n: int = 100_000, kinds: tuple[str, ...] = ("dec", "int"),
         run: bool = True) -> dict[str, float]:
    todo = deals(n)
    runs = {"dec": decimal_deals, "int": int_deals}
    best: dict[str, float] = {}
    for _ in range(3 if len(kinds) > 1 else 1):
        for kind in kinds:
            seconds, _balances = runs[kind](todo, run)
            best[kind] = min(best.get(kind, seconds), seconds)
    figures: dict[str, float] = {"deals": n}
    figures.update({f"{kind} CPU us/deal": best[kind] / n * 1e6 for kind in kinds})
    report("a deal's arithmetic: Decimals (the engine's) against scaled integers", figures)
    return figures


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 100_000,
         tuple(args[1:2]) if len(args) > 1 else ("dec", "int"), args[2:3] != ["noloop"])
