"""``Balances.load`` (a restart's bulk load of a slice's balances) is ``set`` row by row.

Why: the bulk path builds the accounts with C-level passes when every row is a plain non-zero
value; any other row (a zero, a value the asset's precision truncates to zero, a kind that is
neither available nor frozen) must give what ``set`` gives, and so must duplicates: same
accounts, same values with the same exponents, same listing order.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

from exchange_server.common.config import AssetConfig
from exchange_server.matchengine.core.balance import AVAILABLE, FREEZE, Balances

ASSETS = [AssetConfig(name="BTC", prec_save=8, prec_show=8),
          AssetConfig(name="BCH", prec_save=4, prec_show=4)]


def rows(seed: int, n: int) -> list[tuple[int, str, int, Decimal]]:
    rng = random.Random(seed)
    return [(rng.randint(1, n // 3 + 1), rng.choice(["BTC", "BCH"]),
             rng.choice([AVAILABLE, FREEZE]),
             Decimal(rng.randint(1, 10**9)).scaleb(-rng.randint(0, 10)))
            for _ in range(n)]


def shape(balances: Balances) -> list[Any]:
    return [(key, [repr(v) for v in account]) for key, account in balances.accounts.items()]


def one_by_one(loaded: list[tuple[int, str, int, Decimal]]) -> Balances:
    balances = Balances(ASSETS)
    for user, asset, kind, amount in loaded:
        balances.set(user, asset, kind, amount)
    return balances


@pytest.mark.parametrize("extra", [
    [], [(5, "BTC", AVAILABLE, Decimal(0))], [(5, "BCH", FREEZE, Decimal("0.00001"))],
    [(6, "BTC", 3, Decimal(1))], "duplicates"])
def test_load_is_set_row_by_row(extra: Any) -> None:
    loaded = rows(seed=3, n=600)
    loaded += loaded[:50] if extra == "duplicates" else extra
    bulk = Balances(ASSETS)
    if extra and extra != "duplicates" and extra[0][2] == 3:
        with pytest.raises(IndexError):
            one_by_one(loaded)
        with pytest.raises(IndexError):
            bulk.load(loaded)
        return
    bulk.load(loaded)
    assert shape(bulk) == shape(one_by_one(loaded))
    assert list(bulk.items()) == list(one_by_one(loaded).items())


def test_load_onto_balances_that_hold_values_is_set_row_by_row() -> None:
    bulk = one_by_one(rows(seed=4, n=100))
    bulk.load(rows(seed=5, n=100))
    assert shape(bulk) == shape(one_by_one(rows(seed=4, n=100) + rows(seed=5, n=100)))


@pytest.mark.parametrize("text", ["1", "0.00000001", "1E+30", "123.4560", "0", "-0", "0E-8",
                                  "-0E-8", "-0.00000001", "-5", "Infinity", "-Infinity"])
def test_the_sign_test_of_trade_and_freeze_is_a_comparison_with_zero(text: str) -> None:
    """``Balances.trade``/``freeze`` test a new value with ``value and not value.is_signed()``
    instead of ``value > ZERO`` (cheaper): the same verdict for every value that is not NaN,
    negative zeros included."""
    value = Decimal(text)
    assert bool(value and not value.is_signed()) is (value > Decimal(0))
