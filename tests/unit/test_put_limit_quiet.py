"""``Engine.put_limit_quiet`` (a replayed order of the original's parameters while quiet, with
its deals through ``Market.execute_quiet``) leaves exactly the state ``put_limit`` leaves: the
same errors, ids, orders (every field, exponents included), book levels and their key objects'
texts, market totals, balances (their order too) and stops, over random streams that sweep
several levels, fill takers and makers partly and wholly, truncate fees, fire stops and fail
checks."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

from exchange_server.common.errors import RpcError
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import ASK, BID, LIMIT
from tests.integration.test_methods import config
from tests.support.ext_support import fingerprint

#: texts of one value at several exponents: the core keeps the exponent of what it is given
PRICES = ["99", "99.5", "99.50", "100", "100.0", "1.00E+2", "100.5", "101", "101.00", "98.75"]
AMOUNTS = ["0.5", "0.50", "1", "1.0", "2", "0.25", "3.125", "0.001", "7", "5E-1", "0.0005"]
FEES = ["0.001", "0.0010", "0.002", "0", "0.0015"]


def _state(engine: Engine) -> dict[str, Any]:
    """``fingerprint`` plus what it leaves out: every market's book (levels in order, each
    level's key text and its orders in time order), user index, counts, amounts and tops,
    the accounts in their order with their values' texts, and every order's fields."""
    books = {}
    for name, m in engine.markets.items():
        books[name] = (
            [(repr(p), list(level)) for p, level in m.asks.items()],
            [(repr(p), list(level)) for p, level in m.bids.items()],
            {u: list(orders) for u, orders in m.users.items()},
            [tuple(repr(getattr(o, f)) for f in o.__slots__) for o in m.orders.values()],
            m.ask_count, m.bid_count, repr(m.ask_amount), repr(m.bid_amount),
            repr(m.ask_top), repr(m.bid_top), repr(m.last),
            [repr(s.sort_key()) for s in m.stops_low.values()],
            [repr(s.sort_key()) for s in m.stops_high.values()])
    accounts = [(key, repr(a), repr(f)) for key, (a, f) in engine.balances.accounts.items()]
    return {"fingerprint": fingerprint(engine), "books": books, "accounts": accounts}


def _run(seed: int, quiet: bool, market_name: str) -> tuple[Engine, list[str]]:
    """A random stream on ``market_name``: deposits, a few stops, then limit orders through
    ``put_limit`` (not quiet) or ``put_limit_quiet`` (quiet); each command's outcome."""
    rng = random.Random(seed)
    engine = Engine.from_config(config())
    market = engine.markets[market_name]
    now = 1_700_000_000.0
    for user in range(1, 9):
        engine.update_balance(now, user, market.stock, "deposit", user, Decimal("40"), {})
        engine.update_balance(now, user, market.money, "deposit", user, Decimal("4000"), {})
    engine.take_events()
    engine.set_quiet(quiet)
    outcomes: list[str] = []
    for n in range(400):
        now += 0.5
        user = rng.randint(1, 8)
        side = rng.choice((ASK, BID))
        amount, price = Decimal(rng.choice(AMOUNTS)), Decimal(rng.choice(PRICES))
        taker_fee, maker_fee = Decimal(rng.choice(FEES)), Decimal(rng.choice(FEES))
        try:
            if n % 37 == 5 and market.last:  # a stop the next deals may fire
                stop_price = market.last + Decimal(rng.choice(("-0.5", "0.5", "1", "-1")))
                engine.put_stop(now, market, user, LIMIT, side, amount, stop_price, price,
                                taker_fee, maker_fee, "s", 0, "")
            elif quiet:
                assert engine.put_limit_quiet(now, market, user, side, amount, price, taker_fee,
                                              maker_fee, "t") is None
            else:
                engine.put_limit(now, market, user, side, amount, price, taker_fee, maker_fee,
                                 "t")
            outcomes.append("ok")
        except RpcError as e:
            outcomes.append(f"{e.code} {e.message}")
        # the book after each command, not only at the end (a user's index emptied, ...)
        outcomes.append(f"{sorted(market.users)} {market.ask_count} {market.bid_count} "
                        f"{market.ask_amount!r} {market.bid_amount!r} {market.last!r}")
        if n == 200:
            engine.suspend(market, True)
        elif n == 210:
            engine.suspend(market, False)
    engine.set_quiet(False)
    engine.take_events()
    return engine, outcomes


@pytest.mark.parametrize("market_name", ["BTCBCH", "BTCUSDT"])
@pytest.mark.parametrize("seed", range(8))
def test_put_limit_quiet_leaves_the_state_put_limit_leaves(seed: int, market_name: str) -> None:
    (loud, loud_outcomes), (quiet, quiet_outcomes) = (
        _run(seed, False, market_name), _run(seed, True, market_name))
    assert quiet_outcomes == loud_outcomes
    assert {"ok"} < set(loud_outcomes[::2])  # some fail (funds, minimum, suspended)
    assert loud.deal_id > 50
    assert _state(quiet) == _state(loud)


def test_the_fee_truncating_market_is_covered() -> None:
    """BTCUSDT's ask fees are truncated to what USDT stores (``_ask_fee_quant``): the path
    ``execute_quiet`` repeats."""
    engine = Engine.from_config(config())
    assert engine.markets["BTCUSDT"]._ask_fee_quant is not None
    assert engine.markets["BTCBCH"]._ask_fee_quant is None


def test_put_limit_quiet_is_put_limit_when_not_quiet() -> None:
    """Not quiet (a live engine, or the history follower's history-only replay) it is
    ``put_limit`` with its events."""
    engine = Engine.from_config(config())
    market = engine.markets["BTCBCH"]
    for user in (1, 2):
        engine.update_balance(0.0, user, "BTC", "deposit", user, Decimal("10"), {})
        engine.update_balance(0.0, user, "BCH", "deposit", user, Decimal("10000"), {})
    engine.take_events()
    fee = Decimal("0.001")
    engine.put_limit_quiet(1.0, market, 1, ASK, Decimal("1"), Decimal("100"), fee, fee, "t")
    engine.put_limit_quiet(2.0, market, 2, BID, Decimal("2"), Decimal("100"), fee, fee, "t")
    assert len(engine.take_events()) > 3 and engine.deal_id == 1
    engine.set_history_only(True)
    engine.put_limit_quiet(3.0, market, 1, ASK, Decimal("1"), Decimal("100"), fee, fee, "t")
    assert engine.take_events() and engine.deal_id == 2
