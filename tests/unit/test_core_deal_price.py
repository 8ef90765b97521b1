"""A deal is made at the maker's own price object, exponent and all (engine.md 7).

Why: orders at equal prices written differently ("100.810", "100.81") share one level of the
book, keyed by the price object of the order that opened it.  Once that order is gone, the
level's key and the next maker's price differ in exponent; the deal's money, fees, the last
price and every message keep the exponent of the price used, so using the level's key gave
"555.160670" where the original says "555.16067" (and a restart, which keys the level by the
remaining maker's price, gave the original's answer: the two disagreed).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from exchange_server.common.config import default_matchengine_data, load_matchengine
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import ASK, BID, Deal


def engine() -> Engine:
    e = Engine.from_config(load_matchengine(default_matchengine_data(), embedded=True))
    for user in (1, 2, 3):
        e.balances.add(user, "BTC", Decimal(10**6))
        e.balances.add(user, "BCH", Decimal(10**9))
    return e


@pytest.mark.parametrize("taker_type", ["limit", "market"])
def test_the_deal_is_at_the_makers_price_not_the_levels_key(taker_type: str) -> None:
    e = engine()
    market = e.markets["BTCBCH"]
    fee = Decimal("0.001")
    opener = e.put_limit(1.0, market, 1, ASK, Decimal("1"), Decimal("100.810"), fee, fee, "t")
    assert opener is not None
    e.put_limit(2.0, market, 2, ASK, Decimal("7.511"), Decimal("100.81"), fee, fee, "t")
    e.cancel(3.0, market, 1, opener.id)  # the level keeps its key: Decimal("100.810")
    assert repr(next(iter(market.asks))) == "Decimal('100.810')"
    e.take_events()
    if taker_type == "limit":
        e.put_limit(4.0, market, 3, BID, Decimal("5.507"), Decimal("101"), fee, fee, "t")
    else:
        e.put_market(4.0, market, 3, BID, Decimal("555.16067"), fee, "t")
    deals = [ev for ev in e.take_events() if isinstance(ev, Deal)]
    assert deals and all(repr(d.price) == "Decimal('100.81')" for d in deals)
    assert repr(market.last) == "Decimal('100.81')"
    (maker,) = market.orders.values()
    (deal,) = deals
    assert repr(maker.deal_money) == repr(Decimal("100.81") * deal.amount)
    if taker_type == "limit":
        assert repr(maker.deal_money) == "Decimal('555.16067')"
