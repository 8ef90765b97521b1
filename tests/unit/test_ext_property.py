"""Property test of the fork's commands, in the spirit of test_conservation: random sequences of
deposits, withdrawals, orders with options, stops, cancels of every kind, suspensions and
market changes keep the books.

After every operation, per asset: every user's available + frozen plus the fees collected
equals deposits minus withdrawals; no balance is negative; each user's frozen amount equals
what their open orders AND pending stops hold; books are never crossed; no deal has one user on
both sides; no stop waits whose price the last price has reached; a fill-or-kill order filled
completely or changed nothing; a post-only order never took.  At the end, replaying the log
into a fresh engine rebuilds exactly the same state.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange_server.common.config import load_matchengine
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.core.balance import FREEZE
from exchange_server.matchengine.core.model import (
    ASK,
    OPTION_FOK,
    OPTION_MAKER_ONLY,
    BalanceUpdated,
    Deal,
)
from tests.support.ext_support import Ex, fingerprint
from tests.unit.test_conservation import ASSETS, CONFIG, MARKETS, USERS

amounts = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("8"), places=3,
                      allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=Decimal("95"), max_value=Decimal("105"), places=3,
                     allow_nan=False, allow_infinity=False)
fees = st.sampled_from(["0", "0.001", "0.002", "0.0025", "0.1"])
options = st.sampled_from([0, 0, 0, 0x04, 0x08, 0x10, 0x80, 0x100, 0x200, 0x300, 0x218, 0x308])
users = st.sampled_from(USERS)
markets = st.sampled_from(MARKETS)
sides = st.sampled_from([1, 2])
ids = st.integers(min_value=1, max_value=60)

deposit = st.tuples(st.just("deposit"), users, st.sampled_from(ASSETS),
                    st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1000"), places=9,
                                allow_nan=False, allow_infinity=False))
withdraw = st.tuples(st.just("withdraw"), users, st.sampled_from(ASSETS), amounts)
limit = st.tuples(st.just("limit"), users, markets, sides, amounts, prices, fees, fees, options)
market = st.tuples(st.just("market"), users, markets, sides, amounts, fees, options)
stop_limit = st.tuples(st.just("stop_limit"), users, markets, sides, amounts, prices, prices,
                       fees, options)
stop_market = st.tuples(st.just("stop_market"), users, markets, sides, amounts, prices, fees)
cancel = st.tuples(st.just("cancel"), users, markets, ids)
cancel_stop = st.tuples(st.just("cancel_stop"), users, markets, ids)
cancel_all = st.tuples(st.just("cancel_all"), users, markets, st.sampled_from([0, 1, 2]))
cancel_stop_all = st.tuples(st.just("cancel_stop_all"), users, markets,
                            st.sampled_from([0, 1, 2]))
cancel_batch = st.tuples(st.just("cancel_batch"), users, markets, st.lists(ids, min_size=1,
                                                                           max_size=5))
suspend = st.tuples(st.just("suspend"), markets, st.sampled_from([True, False, False]))
min_amount = st.tuples(st.just("min_amount"), markets,
                       st.sampled_from(["0", "0.001", "0.001", "0.5"]), st.sampled_from([2, 3, 4]))
operation = st.one_of(limit, limit, limit, limit, limit, limit, market, market, stop_limit,
                      stop_limit, stop_market, cancel, cancel_stop, cancel_all, cancel_stop_all,
                      cancel_batch, deposit, withdraw, suspend, min_amount)


def market_config(ex: Ex, name: str, min_amount: str, fee_prec: int) -> dict[str, object]:
    m = ex.engine.markets[name]
    return {"name": name, "stock": {"name": m.stock, "prec": m.stock_prec},
            "money": {"name": m.money, "prec": m.money_prec}, "fee_prec": fee_prec,
            "min_amount": min_amount}


def run(ex: Ex, op: tuple) -> object:
    kind = op[0]
    if kind in ("deposit", "withdraw"):
        ex.business_id += 1
        change = op[3] if kind == "deposit" else -op[3]
        ex.call("balance.update", op[1], op[2], kind, ex.business_id, str(change), {})
    elif kind == "limit":
        return ex.call("order.put_limit", op[1], op[2], op[3], str(op[4]), str(op[5]), op[6], op[7],
                "prop", None, None, op[8])
    elif kind == "market":
        return ex.call("order.put_market", op[1], op[2], op[3], str(op[4]), op[5], "prop", None, None,
                op[6])
    elif kind == "stop_limit":
        ex.call("order.put_stop_limit", op[1], op[2], op[3], str(op[4]), str(op[5]), str(op[6]),
                op[7], op[7], "prop", None, None, op[8] & ~(OPTION_FOK | OPTION_MAKER_ONLY))
    elif kind == "stop_market":
        ex.call("order.put_stop_market", op[1], op[2], op[3], str(op[4]), str(op[5]), op[6],
                "prop", None, None)
    elif kind in ("cancel", "cancel_stop"):
        # the k-th open order / stop of the user if there is one (else an id that may be
        # anyone's or nobody's)
        m = ex.engine.markets[op[2]]
        mine = list((m.users if kind == "cancel" else m.stop_users).get(op[1], {}))
        ex.call(f"order.{kind}", op[1], op[2], mine[op[3] % len(mine)] if mine else op[3])
    elif kind in ("cancel_all", "cancel_stop_all"):
        ex.call(f"order.{kind}", op[1], op[2], op[3])
    elif kind == "cancel_batch":
        ex.call("order.cancel_batch", op[1], op[2], op[3])
    elif kind == "suspend":
        ex.call("config.suspend_market" if op[2] else "config.resume_market", op[1])
    else:
        ex.call("config.update_market", market_config(ex, op[1], op[2], op[3]))
    return None


def check(ex: Ex, flows: dict[str, Decimal], fees_paid: dict[str, Decimal]) -> None:
    engine = ex.engine
    held: dict[str, Decimal] = defaultdict(Decimal)
    frozen: dict[tuple[int, str], Decimal] = {}
    for user, asset, kind, value in engine.balances.items():
        assert value > 0
        held[asset] += value
        if kind == FREEZE:
            frozen[(user, asset)] = value
    for asset in ASSETS:
        assert held[asset] + fees_paid[asset] == flows[asset], asset
    expected: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    for m in engine.markets.values():
        for order in m.orders.values():
            assert order.left > 0
            expected[(order.user, m.stock if order.side == ASK else m.money)] += order.freeze
        for stop in m.stops.values():
            expected[(stop.user, m.stock if stop.side == ASK else m.money)] += stop.freeze
            if stop in m.stops_low.values():
                assert stop.stop_price < m.last
            else:
                assert stop.stop_price > m.last
        best_ask, best_bid = m.best_ask(), m.best_bid()
        if best_ask and best_bid:
            assert best_bid.price < best_ask.price
        # the tops matching reads are the book's own first keys (the very objects)
        assert m.ask_top is (m.asks.peekitem(0)[0] if m.asks else None)
        assert m.bid_top is (m.bids.peekitem(-1)[0] if m.bids else None)
        assert m.ask_count + m.bid_count == len(m.orders)
        assert len(m.stops_low) + len(m.stops_high) == len(m.stops)
    assert {k: v for k, v in expected.items() if v} == frozen


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=10, max_size=80))
def test_conservation_with_the_forks_commands(ops: list[tuple]) -> None:
    # under cancel_taker every order has a prevention mode (none of the options below is 0x400,
    # "none"), so no deal may have one user on both sides; the default ("none", the original's
    # behaviour) is covered by tests/unit/test_ext_stp.py
    cfg = dataclasses.replace(load_matchengine(CONFIG, embedded=True),
                              self_trade_prevention="cancel_taker")
    ex = Ex(cfg)
    flows: dict[str, Decimal] = defaultdict(Decimal)
    fees_paid: dict[str, Decimal] = defaultdict(Decimal)
    for user in USERS:
        for asset in ASSETS:
            ex.deposit(user, asset, "5000")
            flows[asset] += 5000
    for name in MARKETS:  # a first deal in every market (stops need it), and some depth
        m = ex.engine.markets[name]
        ex.deposit(90, m.stock, "100")
        ex.deposit(91, m.money, "10000")
        flows[m.stock] += 100
        flows[m.money] += 10000
        ex.call("order.put_limit", 90, name, 1, "0.1", "100", "0", "0", "o")
        ex.call("order.put_limit", 91, name, 2, "0.1", "100", "0", "0", "o")
        for price in ("101", "103", "105"):
            ex.call("order.put_limit", 90, name, 1, "3", price, "0", "0.001", "o")
        for price in ("99", "97", "95"):
            ex.call("order.put_limit", 91, name, 2, "3", price, "0", "0.001", "o")
    accepted: dict[str, int] = defaultdict(int)
    for op in ops:
        before = fingerprint(ex.engine)
        result = None
        try:
            result = run(ex, op)
            accepted[op[0]] += 1
        except RpcError as e:
            assert e.code in (1, 10, 11, 12, 13, 30), e
            if e.code in (12, 13) and op[0] in ("limit", "market"):
                assert fingerprint(ex.engine) == before  # FOK / post-only changed nothing
            ex.events = []
        for event in ex.events:
            if isinstance(event, BalanceUpdated):
                flows[event.asset] += event.change
            elif isinstance(event, Deal):
                assert event.ask_user != event.bid_user
                fees_paid[event.money] += event.ask_fee
                fees_paid[event.stock] += event.bid_fee
        if isinstance(result, dict):  # an order placed with options: check them
            option = op[-1]
            took = [e for e in ex.events if isinstance(e, Deal)
                    and (e.ask_order_id if e.taker_side == ASK else e.bid_order_id)
                    == result["id"]]
            if option & OPTION_MAKER_ONLY and op[0] == "limit":
                assert not took
            if option & OPTION_FOK and op[0] == "limit":
                assert Decimal(result["left"]) == 0
            if option & OPTION_FOK and result["side"] == ASK:
                assert Decimal(result["left"]) == 0
        check(ex, flows, fees_paid)
    ex.check_replay()
    STATS.update(accepted)


STATS: Counter[str] = Counter()


def test_the_property_run_exercised_every_command() -> None:
    """Runs after the property test (file order): the new commands were accepted many times
    (single cancels of a resting order are rarer: most random orders cross)."""
    if not STATS:
        return  # run alone
    for kind in ("limit", "market", "stop_limit", "stop_market", "cancel_all", "cancel_stop_all",
                 "cancel_batch", "suspend", "min_amount"):
        assert STATS[kind] >= 50, STATS
