"""bench/deal_ints.py's integer prototype computes what the engine's Decimal deal computes (else
its speed-up would say nothing): every balance after the same deals, value for value."""

from __future__ import annotations

from decimal import Decimal

from bench.deal_ints import MONEY_SAVE, STOCK_SAVE, deals, decimal_deals, int_deals


def test_the_integer_deals_leave_the_engines_balances() -> None:
    todo = deals(400)
    _, exact = decimal_deals(todo)
    _, scaled = int_deals(todo)
    assert exact.keys() == scaled.keys() and len(exact) == 2000
    places = {"BTC": STOCK_SAVE, "BCH": MONEY_SAVE}
    for (user, asset), (available, frozen) in exact.items():
        ints = scaled[(user, asset)]
        assert [Decimal(i).scaleb(-places[asset]) for i in ints] == [available, frozen], (
            user, asset)
    # the deals moved money: not a comparison of untouched holdings
    assert len({tuple(v) for v in exact.values()}) > 100


def test_without_the_loop_nothing_moves() -> None:
    todo = deals(50)
    _, idle = int_deals(todo, run=False)
    assert len({tuple(v) for v in idle.values()}) == 2
