"""Self-trade prevention: an order never deals with an order of its own user.  The taker's
mode (option bits 0x300) decides: cancel the taker's remainder (default, 0x100), cancel the
maker and go on (0x200), or cancel both (0x300)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from exchange_server.matchengine.model import (
    OPTION_FOK,
    STP_CANCEL_BOTH,
    STP_CANCEL_MAKER,
    STP_CANCEL_TAKER,
    Deal,
    OrderChanged,
    OrderFinished,
)
from tests.ext_support import FEES, Ex, fingerprint


@pytest.fixture
def ex() -> Ex:
    ex = Ex()
    for user in (1, 2, 3):
        ex.deposit(user, "BTC", "100")
        ex.deposit(user, "BCH", "100000")
    return ex


def depth(ex: Ex) -> dict[str, list[list[str]]]:
    return ex.call("order.depth", "BTCBCH", 100, "0")


def deals(ex: Ex) -> list[tuple[int, int, D]]:
    return [(e.ask_user, e.bid_user, e.amount) for e in ex.events if isinstance(e, Deal)]


def finished_ids(ex: Ex) -> list[int]:
    return [e.order.id for e in ex.events if isinstance(e, OrderChanged) and e.event == 3]


@pytest.mark.parametrize("layout", ["original", "default", "cancel_taker"])
def test_default_cancels_the_taker(ex: Ex, layout: str) -> None:
    own = ex.limit(1, 1, "1", "100")
    ex.limit(2, 1, "1", "100")
    before = ex.balance(1, "BCH")
    if layout == "original":
        taker = ex.limit(1, 2, "2", "100")
    else:
        taker = ex.limit_opt(1, 2, "2", "100", 0 if layout == "default" else STP_CANCEL_TAKER)
    assert D(taker["left"]) == 2 and D(taker["deal_stock"]) == 0
    assert deals(ex) == [] and finished_ids(ex) == [taker["id"]]
    assert ex.balance(1, "BCH") == before  # nothing frozen for the cancelled taker
    assert depth(ex) == {"asks": [["100", "2"]], "bids": []}
    assert ex.call("order.pending_detail", "BTCBCH", own["id"])["left"] == "1"
    ex.check_replay()


def test_cancel_taker_after_dealing_with_others(ex: Ex) -> None:
    ex.limit(2, 1, "1", "99")
    ex.limit(1, 1, "1", "100")
    ex.limit(3, 1, "1", "100")
    taker = ex.limit(1, 2, "3", "100")
    assert (taker["deal_stock"], taker["left"]) == ("1", "2")
    assert deals(ex) == [(2, 1, D(1))]
    assert any(isinstance(e, OrderFinished) and e.order.id == taker["id"] for e in ex.events)
    assert depth(ex) == {"asks": [["100", "2"]], "bids": []}


def test_cancel_maker_goes_on_matching(ex: Ex) -> None:
    own = ex.limit(1, 1, "1", "100")
    ex.limit(2, 1, "1", "100")
    taker = ex.limit_opt(1, 2, "1", "100", STP_CANCEL_MAKER)
    assert D(taker["left"]) == 0
    assert deals(ex) == [(2, 1, D(1))]
    assert own["id"] in finished_ids(ex)
    assert ex.call("order.pending_detail", "BTCBCH", own["id"]) is None
    assert ex.balance(1, "BTC") == ("100.998", "0")  # ask released, 1 bought, 0.002 fee
    assert depth(ex) == {"asks": [], "bids": []}
    ex.check_replay()


def test_cancel_maker_then_rest(ex: Ex) -> None:
    own = ex.limit(1, 1, "1", "100")
    taker = ex.limit_opt(1, 2, "1", "100", STP_CANCEL_MAKER)
    assert taker["left"] == "1"
    assert finished_ids(ex) == [own["id"]]
    assert depth(ex) == {"asks": [], "bids": [["100", "1"]]}


def test_cancel_both(ex: Ex) -> None:
    ex.limit(2, 1, "0.5", "99")
    own = ex.limit(1, 1, "1", "100")
    ex.limit(2, 1, "1", "100")
    taker = ex.limit_opt(1, 2, "2", "100", STP_CANCEL_BOTH)
    assert (taker["deal_stock"], taker["left"]) == ("0.5", "1.5")
    assert own["id"] in finished_ids(ex) and taker["id"] in finished_ids(ex)
    assert depth(ex) == {"asks": [["100", "1"]], "bids": []}
    assert ex.balance(1, "BTC") == ("100.499", "0")  # 0.5 bought, 0.001 fee
    ex.check_replay()


def test_partly_filled_maker_cancelled_by_stp_goes_to_history(ex: Ex) -> None:
    own = ex.limit(1, 1, "2", "100")
    ex.limit(2, 2, "1", "100")  # fills half of it
    ex.limit_opt(1, 2, "1", "100", STP_CANCEL_MAKER)
    finished = [e.order for e in ex.events if isinstance(e, OrderFinished)]
    assert [(o.id, str(o.deal_stock)) for o in finished] == [(own["id"], "1.00000000")]


def test_market_orders(ex: Ex) -> None:
    ex.limit(1, 1, "1", "100")
    ex.limit(2, 1, "1", "101")
    order = ex.market_order(1, 2, "200")
    assert D(order["deal_stock"]) == 0 and order["left"] == "200"
    order = ex.market_order(1, 2, "200", None, None, STP_CANCEL_MAKER)
    assert order["deal_stock"] == "1" and order["deal_money"] == "101"
    assert depth(ex) == {"asks": [], "bids": []}
    ex.check_replay()


def test_fill_or_kill_counts_only_what_stp_lets_it_fill(ex: Ex) -> None:
    ex.limit(1, 1, "1", "100")
    ex.limit(2, 1, "1", "100")
    before = fingerprint(ex.engine)
    # the own order comes first: by default the taker would stop there
    for option in (OPTION_FOK, OPTION_FOK | STP_CANCEL_BOTH):
        assert ex.err("order.put_limit", 1, "BTCBCH", 2, "1", "100", *FEES, "t", None, None,
                      option) == 12
    # cancelling makers, only user 2's order is there to fill it
    assert ex.err("order.put_limit", 1, "BTCBCH", 2, "2", "100", *FEES, "t", None, None,
                  OPTION_FOK | STP_CANCEL_MAKER) == 12
    assert fingerprint(ex.engine) == before
    order = ex.limit_opt(1, 2, "1", "100", OPTION_FOK | STP_CANCEL_MAKER)
    assert D(order["left"]) == 0
    assert depth(ex) == {"asks": [], "bids": []}


def test_no_user_ever_trades_with_itself(ex: Ex) -> None:
    """Many users crossing their own orders in every mode: no deal has one user on both
    sides, and balances are conserved."""
    import random

    from exchange_server.common.errors import RpcError

    rng = random.Random(3)
    modes = [0, STP_CANCEL_TAKER, STP_CANCEL_MAKER, STP_CANCEL_BOTH]
    fees = {"BTC": D(0), "BCH": D(0)}
    dealt = 0
    for _ in range(600):
        user = rng.choice([1, 2])
        side = rng.choice([1, 2])
        price = str(rng.randint(98, 102))
        try:
            ex.limit_opt(user, side, str(rng.randint(1, 30) / 10), price, rng.choice(modes))
        except RpcError:
            continue
        for e in ex.events:
            if isinstance(e, Deal):
                assert e.ask_user != e.bid_user
                fees["BCH"] += e.ask_fee
                fees["BTC"] += e.bid_fee
                dealt += 1
    assert dealt > 50
    totals = {a: sum(D(x) for u in (1, 2, 3) for x in ex.balance(u, a)) for a in ("BTC", "BCH")}
    assert totals == {"BTC": 300 - fees["BTC"], "BCH": 300000 - fees["BCH"]}
    ex.check_replay()
