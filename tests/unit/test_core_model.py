"""The core's named constructors and results agree with the plain ones.

Why: ``Order.fresh`` sets an order's slots itself (calling a class with keywords is several
times slower than a classmethod, and it runs for every order placed), so it must keep setting
exactly what the keyword constructor sets; and ``Balances`` returns an account's total from each
change, which must be what ``total`` says.
"""

from __future__ import annotations

from decimal import Decimal

from exchange_server.common.config import AssetConfig
from exchange_server.matchengine.core.balance import Balances
from exchange_server.matchengine.core.model import ASK, LIMIT, ZERO, Order


def test_a_fresh_order_is_the_keyword_constructors_order() -> None:
    price, amount, fee = Decimal("1.50"), Decimal("2.000"), Decimal("0.001")
    fresh = Order.fresh(id=7, market="BTCBCH", source="web", type=LIMIT, side=ASK, user=3,
                        now=1.25, price=price, amount=amount, taker_fee=fee, maker_fee=ZERO,
                        option=0x08, client_id="c")
    built = Order(id=7, market="BTCBCH", source="web", type=LIMIT, side=ASK, user=3, ctime=1.25,
                  mtime=1.25, price=price, amount=amount, taker_fee=fee, maker_fee=ZERO,
                  left=amount, option=0x08, client_id="c")
    assert all(hasattr(fresh, slot) for slot in Order.__slots__)
    assert {s: getattr(fresh, s) for s in Order.__slots__} == {
        s: getattr(built, s) for s in Order.__slots__}


def test_every_balance_change_returns_the_accounts_new_total() -> None:
    balances = Balances([AssetConfig("BTC", 8, 8)])
    steps = [
        (balances.add, Decimal("5")), (balances.freeze, Decimal("2")),
        (balances.sub, Decimal("1.5")), (balances.sub_frozen, Decimal("0.5")),
        (balances.add, Decimal("0.000000001")), (balances.sub, Decimal("1.5")),
        (balances.sub_frozen, Decimal("1.5")),
    ]
    for change, amount in steps:
        returned = change(1, "BTC", amount)
        if returned is not None:  # freeze moves funds and returns nothing
            assert returned == balances.total(1, "BTC")
            assert str(returned) == str(balances.total(1, "BTC"))  # the exponent too
    assert balances.total(1, "BTC") == ZERO and not balances.accounts


def test_freezing_everything_files_the_account_anew_as_the_original_does() -> None:
    balances = Balances([AssetConfig("BTC", 8, 8), AssetConfig("BCH", 8, 8)])
    balances.add(1, "BTC", Decimal("2"))
    balances.add(2, "BCH", Decimal("3"))
    balances.freeze(1, "BTC", Decimal("2"))  # available empties, nothing was frozen: moves
    assert list(balances.accounts) == [(2, "BCH"), (1, "BTC")]
    assert list(balances.items()) == [(2, "BCH", 1, Decimal("3.00000000")),
                                      (1, "BTC", 2, Decimal("2.00000000"))]
    balances.freeze(2, "BCH", Decimal("1"))  # stays in place
    balances.freeze(2, "BCH", Decimal("2"))  # available empties, something is frozen: stays
    assert list(balances.accounts) == [(2, "BCH"), (1, "BTC")]
    assert balances.accounts[(2, "BCH")] == [ZERO, Decimal("3")]
