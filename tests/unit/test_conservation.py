"""Property test: random sequences of deposits, withdrawals, orders and cancels keep the books.

After every operation, per asset: the sum of every user's available + frozen balance plus the
fees collected equals deposits minus withdrawals; no balance is negative; each user's frozen
amount equals what their open orders hold; books are never crossed.  Runs through the RPC method
layer, so validation paths are exercised too.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange_server.common.config import load_matchengine
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.balance import FREEZE
from exchange_server.matchengine.core.model import ASK, BalanceUpdated, Deal
from exchange_server.matchengine.methods import MatchEngineMethods

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
        # price x amount x fee has 14 decimals here but USDT keeps 12: fees are truncated.
        {"name": "BTCUSDT", "stock": {"name": "BTC", "prec": 8}, "money": {"name": "USDT", "prec": 2},
         "fee_prec": 4, "min_amount": "0.0001"},
    ],
}

USERS = [1, 2, 3]
MARKETS = ["BTCBCH", "ETHBCH", "BTCUSDT"]
ASSETS = ["BCH", "BTC", "ETH", "USDT"]

amounts = st.decimals(min_value=Decimal("0.00001"), max_value=Decimal("8"), places=5,
                      allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=Decimal("95"), max_value=Decimal("105"), places=3,
                     allow_nan=False, allow_infinity=False)
fees = st.sampled_from(["0", "0.001", "0.002", "0.0025", "0.1"])

deposit = st.tuples(st.just("deposit"), st.sampled_from(USERS), st.sampled_from(ASSETS),
                    st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1000"), places=9,
                                allow_nan=False, allow_infinity=False))
withdraw = st.tuples(st.just("withdraw"), st.sampled_from(USERS), st.sampled_from(ASSETS), amounts)
limit = st.tuples(st.just("limit"), st.sampled_from(USERS), st.sampled_from(MARKETS),
                  st.sampled_from([1, 2]), amounts, prices, fees, fees)
market = st.tuples(st.just("market"), st.sampled_from(USERS), st.sampled_from(MARKETS),
                   st.sampled_from([1, 2]), amounts, fees)
cancel = st.tuples(st.just("cancel"), st.sampled_from(USERS), st.sampled_from(MARKETS),
                   st.integers(min_value=1, max_value=40))
operation = st.one_of(deposit, withdraw, limit, limit, limit, limit, market, cancel, cancel)


def check_invariants(engine: Engine, flows: dict[str, Decimal], fees_paid: dict[str, Decimal]) -> None:
    held: dict[str, Decimal] = defaultdict(Decimal)
    frozen: dict[tuple[int, str], Decimal] = {}
    for user, asset, kind, value in engine.balances.items():
        assert value > 0
        held[asset] += value
        if kind == FREEZE:
            frozen[(user, asset)] = value
    for account in engine.balances.accounts.values():
        assert account[0] >= 0 and account[1] >= 0 and (account[0] or account[1])
    for asset in ASSETS:
        assert held[asset] + fees_paid[asset] == flows[asset], asset

    frozen_by_orders: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    for m in engine.markets.values():
        for order in m.orders.values():
            assert order.left > 0
            asset = m.stock if order.side == ASK else m.money
            frozen_by_orders[(order.user, asset)] += order.freeze
        best_ask, best_bid = m.best_ask(), m.best_bid()
        if best_ask and best_bid:
            assert best_bid.price < best_ask.price
        # the tops matching reads are the book's own first keys (the very objects)
        assert m.ask_top is (m.asks.peekitem(0)[0] if m.asks else None)
        assert m.bid_top is (m.bids.peekitem(-1)[0] if m.bids else None)
        assert m.ask_count + m.bid_count == len(m.orders)
    for key, value in frozen_by_orders.items():
        assert frozen.get(key, Decimal(0)) == value, key
    assert set(frozen) <= set(frozen_by_orders)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=10, max_size=80))
def test_conservation(ops: list[tuple]) -> None:
    engine = Engine.from_config(load_matchengine(CONFIG, embedded=True))
    methods = MatchEngineMethods(engine)
    flows: dict[str, Decimal] = defaultdict(Decimal)
    fees_paid: dict[str, Decimal] = defaultdict(Decimal)
    now = 1_700_000_000.0
    business_id = 0
    for user in USERS:  # everybody starts funded, so most orders are accepted and trade
        for asset in ASSETS:
            business_id += 1
            methods.balance_update(now, [user, asset, "deposit", business_id, "5000", {}])
            flows[asset] += 5000
    engine.take_events()
    for op in ops:
        now += 1
        kind = op[0]
        try:
            if kind in ("deposit", "withdraw"):
                business_id += 1
                change = op[3] if kind == "deposit" else -op[3]
                methods.balance_update(now, [op[1], op[2], kind, business_id, str(change), {}])
            elif kind == "limit":
                methods.order_put_limit(now, [op[1], op[2], op[3], str(op[4]), str(op[5]), op[6],
                                              op[7], "prop"])
            elif kind == "market":
                methods.order_put_market(now, [op[1], op[2], op[3], str(op[4]), op[5], "prop"])
            else:
                methods.order_cancel(now, [op[1], op[2], op[3]])
        except RpcError as e:
            assert e.code in (1, 10, 11, 12), e
        for event in engine.take_events():
            if isinstance(event, BalanceUpdated):
                flows[event.asset] += event.change
            elif isinstance(event, Deal):
                fees_paid[event.money] += event.ask_fee
                fees_paid[event.stock] += event.bid_fee
        check_invariants(engine, flows, fees_paid)
