"""A scripted trading session run through a real Engine + MatchEngineMethods.

Shared by the bus and marketprice tests: every operation's events are real engine events, with
controlled times (local time zone Asia/Shanghai, UTC+8) chosen to hit k-line boundaries: deals
exactly at a local midnight / hour / minute start and just before, several deals in one second
and in one operation, empty minutes, hours and days, a month change (Feb 29 -> Mar 1), Mondays,
and a market whose previous deal is more than 30 days old.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from exchange_server.common.config import load_matchengine
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import ASK, BID, BalanceUpdated, Deal, Event, OrderChanged
from exchange_server.matchengine.methods import MatchEngineMethods

TZ = ZoneInfo("Asia/Shanghai")

CONFIG = {
    "assets": [
        {"name": "BCH", "prec_save": 20, "prec_show": 8},
        {"name": "BTC", "prec_save": 12, "prec_show": 8},
        {"name": "ETH", "prec_save": 12, "prec_show": 8},
        {"name": "USDT", "prec_save": 12, "prec_show": 6},
    ],
    "markets": [
        {"name": "BTCBCH", "stock": {"name": "BTC", "prec": 8}, "money": {"name": "BCH", "prec": 8},
         "min_amount": "0.001"},
        {"name": "ETHBCH", "stock": {"name": "ETH", "prec": 4}, "money": {"name": "BCH", "prec": 6},
         "min_amount": "0.01"},
        {"name": "BTCUSDT", "stock": {"name": "BTC", "prec": 8}, "money": {"name": "USDT", "prec": 2},
         "fee_prec": 4, "min_amount": "0.0001"},
    ],
}

MAKERS = [1, 2]
TAKERS = [3, 4]


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0,
          frac: float = 0.0) -> float:
    """Epoch time of a local (Asia/Shanghai) wall-clock time (``frac``: a fraction of a second added)."""
    return datetime(year, month, day, hour, minute, sec, tzinfo=TZ).timestamp() + frac


@dataclass
class Op:
    oper_id: int
    time: float
    method: str
    events: list[Event]
    #: the request's params (to run the same session through a MatchEngineService)
    params: list[Any] = field(default_factory=list)


@dataclass
class Session:
    ops: list[Op] = field(default_factory=list)
    #: time at which the session is "now" for marketprice queries
    now: float = 0.0

    @property
    def deals(self) -> list[Deal]:
        return [e for op in self.ops for e in op.events if isinstance(e, Deal)]

    def events_of(self, kind: type) -> list[Event]:
        return [e for op in self.ops for e in op.events if isinstance(e, kind)]


def _order_id(result: object) -> int:
    """The id of a put_limit result (an order snapshot, or its info dict)."""
    order_id = result["id"] if isinstance(result, dict) else getattr(result, "id")  # noqa: B009
    assert isinstance(order_id, int)
    return order_id


class Script:
    def __init__(self, seed: int) -> None:
        self.engine = Engine.from_config(load_matchengine(CONFIG, embedded=True))
        self.methods = MatchEngineMethods(self.engine)
        self.session = Session()
        self.rng = random.Random(seed)
        self.prices = {"BTCBCH": Decimal("10.5"), "ETHBCH": Decimal("0.75")}

    def run(self, method: str, t: float, params: list[object]) -> object:
        write = self.methods.writes[method]
        try:
            result = write.run(t, params)
        except RpcError:
            self.engine.take_events()
            raise
        ops = self.session.ops
        ops.append(Op(len(ops) + 1, t, method, self.engine.take_events(), list(params)))
        return result

    def deposit(self, t: float) -> None:
        n = 0
        for user in MAKERS + TAKERS:
            for asset in ("BCH", "BTC", "ETH", "USDT"):
                n += 1
                self.run("balance.update", t, [user, asset, "deposit", n, "1000000", {"note": "é"}])

    def price(self, market: str) -> Decimal:
        step = Decimal(self.rng.randint(-20, 20)) / (100 if market == "BTCBCH" else 1000)
        p = max(self.prices[market] + step, Decimal("0.1"))
        self.prices[market] = p
        return p

    def trade(self, market: str, t: float, sweep: bool = False) -> None:
        """One taker order against fresh maker orders (book left empty afterwards)."""
        rng = self.rng
        taker_side = rng.choice([ASK, BID])
        maker_side = BID if taker_side == ASK else ASK
        prec = 4 if market == "ETHBCH" else 3
        amount = Decimal(rng.randint(10, 5000)).scaleb(-prec)
        price = self.price(market)
        maker = rng.choice(MAKERS)
        taker = rng.choice(TAKERS)
        resting = []
        extra = Decimal(rng.choice([0, 0, 0, 7])).scaleb(-prec)
        order = self.run("order.put_limit", t - 0.25, [maker, market, maker_side, str(amount + extra),
                                                       str(price), "0.001", "0.001", "maker"])
        resting.append((maker, _order_id(order)))
        taker_amount = amount
        limit_price = price
        if sweep:
            worse = price - Decimal("0.05") if maker_side == BID else price + Decimal("0.05")
            order = self.run("order.put_limit", t - 0.125, [maker, market, maker_side, str(amount),
                                                            str(worse), "0.002", "0.001", "maker"])
            resting.append((maker, _order_id(order)))
            taker_amount = amount * 2
            limit_price = worse
        if taker_side == ASK and not sweep and rng.random() < 0.3:
            self.run("order.put_market", t, [taker, market, ASK, str(taker_amount), "0.002", "taker"])
        else:
            self.run("order.put_limit", t, [taker, market, taker_side, str(taker_amount),
                                            str(limit_price), "0.002", "0.001", "taker"])
        for user, order_id in resting:
            if order_id in self.engine.markets[market].orders:
                self.run("order.cancel", t + 0.0625, [user, market, order_id])


def make_session(seed: int = 20240304) -> Session:
    s = Script(seed)
    s.deposit(local(2024, 1, 20, 9))
    # ETHBCH: one early trade, then nothing for more than 30 days.
    s.trade("ETHBCH", local(2024, 1, 25, 10, 0, 0, frac=0.5))
    # BTCBCH: sparse days (Monday Jan 29 00:00 exactly, gaps of several days).
    for t in (local(2024, 1, 25, 11, 30), local(2024, 1, 26, 23, 59, 59, frac=0.75),
              local(2024, 1, 29), local(2024, 1, 29, 13, 1, 2), local(2024, 2, 1, 8),
              local(2024, 2, 5, 0, 0, 1), local(2024, 2, 14, 12), local(2024, 2, 28, 23, 59, 59,
                                                                            frac=0.5),
              local(2024, 2, 29), local(2024, 2, 29, 17, 45, 3), local(2024, 3, 1, 0, 0, 0,
                                                                       frac=0.125),
              local(2024, 3, 3, 22, 10)):
        s.trade("BTCBCH", t, sweep=s.rng.random() < 0.2)
    s.trade("ETHBCH", local(2024, 3, 3, 23, 0, 30))
    # Dense: Mar 4 08:00 - 09:59 local, bursts within one second, an empty quarter hour.
    t = local(2024, 3, 4, 8)
    end = local(2024, 3, 4, 10)
    while t < end:
        if local(2024, 3, 4, 8, 30) <= t < local(2024, 3, 4, 8, 45):
            t = local(2024, 3, 4, 8, 45)
            continue
        s.trade("BTCBCH", t, sweep=s.rng.random() < 0.1)
        if s.rng.random() < 0.1:
            s.trade("ETHBCH", t + 0.5)
        t += s.rng.choice([1.0, 2.0, 7.0, 30.0, 61.0, 150.0])
    s.trade("BTCBCH", local(2024, 3, 4, 10, 0, 0, frac=0.25))
    s.trade("BTCBCH", local(2024, 3, 4, 10, 0, 0, frac=0.75))
    s.trade("BTCBCH", local(2024, 3, 4, 10, 0, 59, frac=0.99))
    s.run("balance.update", local(2024, 3, 4, 10, 1), [1, "BTC", "withdraw", 1, "-1.5", {}])
    s.session.now = local(2024, 3, 4, 10, 5, 17)
    return s.session


_cached: Session | None = None


def session() -> Session:
    """The default session (built once per test process)."""
    global _cached
    if _cached is None:
        _cached = make_session()
    return _cached


def test_session_covers_what_the_tests_need() -> None:
    s = session()
    deals = s.deals
    assert len(deals) > 150
    assert {d.market for d in deals} == {"BTCBCH", "ETHBCH"}
    assert {d.taker_side for d in deals} == {ASK, BID}
    assert [d.deal_id for d in deals] == list(range(1, len(deals) + 1))
    assert any(sum(isinstance(e, Deal) for e in op.events) > 1 for op in s.ops)
    assert {e.event for op in s.ops for e in op.events if isinstance(e, OrderChanged)} == {1, 2, 3}
    assert len(s.events_of(BalanceUpdated)) == 17
    times = [d.time for d in deals]
    assert times == sorted(times)
