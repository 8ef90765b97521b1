"""Stop-limit and stop-market orders (extensions.md 1): placement checks, frozen funds, the
trigger on the market's last deal price in both directions (the stop fired by the very deal
of another order, firing order, cascades, a fired order refused), cancel / cancel-all / lists.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from exchange_server.matchengine.core.model import (
    OPTION_FOK,
    OPTION_IOC,
    OPTION_MAKER_ONLY,
    OPTION_STOP,
    OPTION_UNLIMITED_MIN_AMOUNT,
    STOP_EVENT_ACTIVE,
    STOP_STATE_HIGH,
    STOP_STATE_LOW,
    STOP_STATUS_ACTIVE,
    STOP_STATUS_FAIL,
    Deal,
    OrderChanged,
    StopChanged,
)
from tests.support.ext_support import FEES, NO_FEE_ASSET, Ex, fingerprint

STOP_KEYS = ["id", "type", "side", "user", "option", "state", "ctime", "mtime", "market",
             "source", "client_id", "stop_price", "price", "amount", "taker_fee", "maker_fee",
             "fee_discount", "fee_asset"]


@pytest.fixture
def ex() -> Ex:
    ex = Ex()
    for user in (1, 2, 3, 4):
        ex.deposit(user, "BTC", "100")
        ex.deposit(user, "BCH", "100000")
    ex.trade_at("100")
    return ex


def no_stop_due(ex: Ex) -> None:
    """After every command: no stop waits whose price the last price has reached."""
    for m in ex.engine.markets.values():
        assert all(s.stop_price < m.last for s in m.stops_low.values())
        assert all(s.stop_price > m.last for s in m.stops_high.values())


def fired(ex: Ex) -> list[tuple[int, int, int]]:
    """(stop id, status, order id) of the stops the last command fired, in order."""
    return [(e.stop.id, e.status, e.order_id) for e in ex.events
            if isinstance(e, StopChanged) and e.event == STOP_EVENT_ACTIVE]


def last(ex: Ex) -> D:
    return ex.engine.markets["BTCBCH"].last


# -- placement ------------------------------------------------------------------------------------


def test_put_stop_limit_returns_the_stop_and_freezes(ex: Ex) -> None:
    stop = ex.stop_limit(1, 1, "1", "95", "94", OPTION_IOC, "sl-1")
    assert list(stop) == STOP_KEYS
    assert stop["type"] == 1 and stop["side"] == 1 and stop["user"] == 1
    assert stop["option"] == OPTION_IOC | OPTION_STOP | OPTION_UNLIMITED_MIN_AMOUNT
    assert stop["state"] == STOP_STATE_LOW and stop["client_id"] == "sl-1"
    assert (stop["stop_price"], stop["price"], stop["amount"]) == ("95", "94", "1")
    assert (stop["fee_discount"], stop["fee_asset"]) == ("1", None)
    assert stop["id"] == ex.engine.order_id  # ids come from the order sequence
    assert ex.balance(1, "BTC") == ("99", "1")
    assert ex.kinds() == ["StopChanged"]
    bid = ex.stop_limit(1, 2, "2", "105", "106")
    assert bid["state"] == STOP_STATE_HIGH and bid["client_id"] == ""
    assert ex.balance(1, "BCH") == ("99788", "212")
    mkt = ex.stop_market(1, 2, "50", "110")
    assert mkt["type"] == 2 and mkt["price"] == "0" and mkt["maker_fee"] == "0"
    assert ex.balance(1, "BCH") == ("99738", "262")  # a market bid freezes its money amount
    ex.check_replay()


def test_put_stop_checks(ex: Ex) -> None:
    before = fingerprint(ex.engine)
    # stop price equal to the last price
    assert ex.err("order.put_stop_limit", 1, "BTCBCH", 1, "1", "100", "99", *FEES, "s",
                  *NO_FEE_ASSET) == 11
    # amount too small: limit, market sell, market buy (money below stop price x min amount)
    assert ex.err("order.put_stop_limit", 1, "BTCBCH", 1, "0.0001", "95", "95", *FEES, "s",
                  *NO_FEE_ASSET) == 12
    assert ex.err("order.put_stop_market", 1, "BTCBCH", 1, "0.0001", "95", "0.002", "s",
                  *NO_FEE_ASSET) == 12
    assert ex.err("order.put_stop_market", 1, "BTCBCH", 2, "0.1", "105", "0.002", "s",
                  *NO_FEE_ASSET) == 12
    # balance: what the order will need is frozen now
    assert ex.err("order.put_stop_limit", 1, "BTCBCH", 1, "100.1", "95", "95", *FEES, "s",
                  *NO_FEE_ASSET) == 10
    assert ex.err("order.put_stop_limit", 1, "BTCBCH", 2, "1000", "105", "101", *FEES, "s",
                  *NO_FEE_ASSET) == 10
    assert ex.err("order.put_stop_market", 1, "BTCBCH", 2, "100001", "105", "0.002", "s",
                  *NO_FEE_ASSET) == 10
    # fill-or-kill and post-only make no sense on a stop (the fork's code 1)
    for option in (OPTION_FOK, OPTION_MAKER_ONLY):
        assert ex.err("order.put_stop_limit", 1, "BTCBCH", 1, "1", "95", "95", *FEES, "s",
                      None, None, option) == 1
    # parameter counts: 11..13 and 9..11
    assert ex.err("order.put_stop_limit", 1, "BTCBCH", 1, "1", "95", "95", *FEES, "s",
                  None) == 1
    assert ex.err("order.put_stop_market", 1, "BTCBCH", 1, "1", "95", "0.002", "s") == 1
    assert fingerprint(ex.engine) == before
    # the minimum can be waived as for orders
    ex.stop_market(1, 2, "0.1", "105", OPTION_UNLIMITED_MIN_AMOUNT)


def test_no_stop_before_the_first_deal() -> None:
    ex = Ex()
    ex.deposit(1, "BTC", "10")
    assert ex.err("order.put_stop_limit", 1, "BTCBCH", 1, "1", "95", "95", *FEES, "s",
                  *NO_FEE_ASSET) == 11


def test_cancel_stop_releases_funds(ex: Ex) -> None:
    stop = ex.stop_limit(1, 2, "1", "105", "106")
    assert ex.balance(1, "BCH") == ("99894", "106")
    assert ex.err("order.cancel_stop", 2, "BTCBCH", stop["id"]) == 11
    assert ex.err("order.cancel_stop", 1, "BTCBCH", stop["id"] + 100) == 10
    assert ex.err("order.cancel_stop", 1, "LTCBCH", stop["id"]) == 10
    order = ex.limit(1, 1, "1", "120")
    assert ex.err("order.cancel_stop", 1, "BTCBCH", order["id"]) == 10  # an order, not a stop
    cancelled = ex.call("order.cancel_stop", 1, "BTCBCH", stop["id"])
    assert cancelled["id"] == stop["id"] and cancelled["stop_price"] == "105"
    assert ex.balance(1, "BCH") == ("100000", "0")
    assert ex.kinds() == ["StopChanged"] and ex.events[0].event == 3
    assert ex.err("order.cancel_stop", 1, "BTCBCH", stop["id"]) == 10
    ex.check_replay()


def test_frozen_funds_guarantee_the_fired_order(ex: Ex) -> None:
    """The fork froze nothing: spending the money meanwhile made the fired order fail.  Here
    the funds stay frozen until the stop fires or is cancelled."""
    stop = ex.stop_limit(1, 1, "1", "95", "95")
    ex.call("balance.update", 1, "BTC", "withdraw", 9999, "-99", {})
    assert ex.err("balance.update", 1, "BTC", "withdraw", 10000, "-0.5", {}) == 11
    ex.limit(3, 2, "2", "95")
    ex.limit(2, 1, "1", "95")  # last -> 95: the stop fires
    assert fired(ex) == [(stop["id"], STOP_STATUS_ACTIVE, ex.engine.order_id)]
    assert ex.balance(1, "BTC") == ("0", "0")
    no_stop_due(ex)
    ex.check_replay()


# -- the trigger ----------------------------------------------------------------------------------


def test_stop_fired_by_the_very_deal_of_another_order(ex: Ex) -> None:
    stop = ex.stop_limit(1, 1, "1", "95", "90", None, "loss")
    ex.limit(3, 2, "1", "95")
    ex.limit(3, 2, "2", "90")
    taker = ex.limit(2, 1, "1", "95")  # deals at 95: that deal fires the stop
    assert D(taker["left"]) == 0  # the reply is the caller's own order
    spawned = ex.engine.order_id
    assert fired(ex) == [(stop["id"], STOP_STATUS_ACTIVE, spawned)]
    # in one command: the caller's deal, the stop's ACTIVE event, then the new order's deal
    kinds = [(type(e).__name__, getattr(e, "price", None)) for e in ex.events
             if isinstance(e, Deal | StopChanged)]
    assert kinds == [("Deal", D(95)), ("StopChanged", None), ("Deal", D(90))]
    at = next(i for i, e in enumerate(ex.events) if isinstance(e, StopChanged))
    assert all(not (isinstance(e, OrderChanged) and e.order.id == spawned)
               for e in ex.events[:at])
    assert last(ex) == D(90)
    detail = ex.call("order.book", "BTCBCH", 2, 0, 10)["orders"][0]
    assert (detail["user"], detail["left"]) == (3, "1")
    assert ex.balance(1, "BTC") == ("99", "0")
    assert ex.call("order.pending_stop", 1, "BTCBCH", 0, 0, 10)["total"] == 0
    spawned_order = [e.order for e in ex.events
                     if isinstance(e, OrderChanged) and e.order.id == spawned][-1]
    assert spawned_order.client_id == "loss" and spawned_order.option & OPTION_STOP
    no_stop_due(ex)
    ex.check_replay()


def test_stop_fires_when_the_price_rises(ex: Ex) -> None:
    stop = ex.stop_market(1, 2, "210", "105")
    ex.limit(2, 1, "1", "105")
    ex.limit(3, 1, "1", "106")
    ex.limit(4, 2, "0.5", "104")  # no deal: nothing fires
    assert fired(ex) == []
    ex.limit(4, 2, "0.5", "105")  # last 105
    assert fired(ex) == [(stop["id"], STOP_STATUS_ACTIVE, ex.engine.order_id)]
    # the market buy took the rest of 105 and then 106
    spent = D(100000) - D(ex.balance(1, "BCH")[0])
    assert spent == D("0.5") * 105 + D(1) * 106 and ex.balance(1, "BCH")[1] == "0"
    assert last(ex) == D(106)
    no_stop_due(ex)
    ex.check_replay()


def test_price_moving_away_or_staying_fires_nothing(ex: Ex) -> None:
    ex.stop_limit(1, 1, "1", "95", "95")
    ex.stop_limit(1, 2, "1", "105", "105")
    ex.trade_at("100")
    ex.trade_at("104.99")
    ex.trade_at("95.01")
    assert fired(ex) == [] and len(ex.engine.markets["BTCBCH"].stops) == 2


def test_firing_order_highest_first_when_falling_oldest_first_on_ties(ex: Ex) -> None:
    s1 = ex.stop_limit(1, 1, "0.1", "96", "50")
    s2 = ex.stop_limit(1, 1, "0.1", "95", "50")
    s3 = ex.stop_limit(2, 1, "0.1", "96", "50")
    s4 = ex.stop_limit(2, 1, "0.1", "94", "50")
    book = ex.call("order.stop_book", "BTCBCH", STOP_STATE_LOW, 0, 10)
    assert [o["id"] for o in book["orders"]] == [s1["id"], s3["id"], s2["id"], s4["id"]]
    ex.limit(3, 2, "10", "93")
    ex.limit(4, 1, "0.1", "93")
    assert [f[0] for f in fired(ex)] == [s1["id"], s3["id"], s2["id"], s4["id"]]
    assert all(f[1] == STOP_STATUS_ACTIVE for f in fired(ex))
    ex.check_replay()


def test_firing_order_lowest_first_when_rising(ex: Ex) -> None:
    s1 = ex.stop_market(1, 2, "10", "106")
    s2 = ex.stop_market(1, 2, "10", "105")
    s3 = ex.stop_market(2, 2, "10", "105")
    book = ex.call("order.stop_book", "BTCBCH", STOP_STATE_HIGH, 0, 10)
    assert [o["id"] for o in book["orders"]] == [s2["id"], s3["id"], s1["id"]]
    ex.limit(3, 1, "10", "110")
    ex.limit(4, 2, "0.1", "110")
    assert [f[0] for f in fired(ex)] == [s2["id"], s3["id"], s1["id"]]
    ex.check_replay()


def test_cascade_in_one_command(ex: Ex) -> None:
    """A fired stop's order moves the price on and fires the next stop."""
    s1 = ex.stop_market(1, 1, "1", "99")
    s2 = ex.stop_market(2, 1, "1", "97")
    ex.limit(3, 2, "1", "99")
    ex.limit(3, 2, "1", "97")
    ex.limit(3, 2, "1", "95")
    ex.limit(4, 1, "0.5", "99")
    assert [(f[0], f[1]) for f in fired(ex)] == [(s1["id"], STOP_STATUS_ACTIVE),
                                                 (s2["id"], STOP_STATUS_ACTIVE)]
    assert last(ex) == D(95)
    assert ex.call("order.depth", "BTCBCH", 10, "0")["bids"] == [["95", "0.5"]]
    no_stop_due(ex)
    ex.check_replay()


def test_direction_change_and_a_refused_order(ex: Ex) -> None:
    """A LOW stop's buy drives the price up to a HIGH stop, whose market sell finds no bids:
    that stop is consumed with status 2 and its funds are released."""
    low = ex.stop_limit(1, 2, "1", "95", "110")     # buy the dip
    high = ex.stop_market(2, 1, "0.5", "102")       # sell on the rise
    assert ex.balance(2, "BTC") == ("99.5", "0.5")
    ex.limit(3, 1, "1", "103")
    ex.limit(3, 2, "1", "95")
    ex.limit(4, 1, "1", "95")
    assert fired(ex) == [(low["id"], STOP_STATUS_ACTIVE, ex.engine.order_id),
                         (high["id"], STOP_STATUS_FAIL, 0)]
    assert ex.balance(2, "BTC") == ("100", "0")
    assert last(ex) == D(103)
    assert not ex.engine.markets["BTCBCH"].stops
    no_stop_due(ex)
    ex.check_replay()


def test_fired_stop_limit_with_ioc_does_not_rest(ex: Ex) -> None:
    ex.stop_limit(1, 1, "2", "95", "95", OPTION_IOC)
    ex.limit(3, 2, "1.5", "95")
    ex.limit(4, 1, "0.5", "95")
    assert len(fired(ex)) == 1
    assert ex.call("order.pending", 1, "BTCBCH", 0, 10)["total"] == 0
    assert ex.balance(1, "BTC") == ("99", "0")


# -- lists and bulk cancel ------------------------------------------------------------------------


def test_pending_stop_and_stop_book(ex: Ex) -> None:
    a = ex.stop_limit(1, 1, "1", "95", "95")
    b = ex.stop_limit(1, 2, "1", "105", "105")
    c = ex.stop_market(1, 1, "1", "90")
    ex.trade_at("100", market="BTCUSDT")
    d = ex.stop_limit(1, 1, "1", "95", "95", market="BTCUSDT")
    page = ex.call("order.pending_stop", 1, "BTCBCH", 0, 0, 10)
    assert list(page) == ["limit", "offset", "total", "records"]
    assert page["total"] == 3 and [r["id"] for r in page["records"]] == [c["id"], b["id"],
                                                                         a["id"]]
    asks = ex.call("order.pending_stop", 1, None, 1, 0, 10)  # every market
    assert asks["total"] == 3
    assert [r["id"] for r in asks["records"]] == [d["id"], c["id"], a["id"]]
    assert ex.call("order.pending_stop", 1, "BTCBCH", 0, 1, 1)["records"][0]["id"] == b["id"]
    assert ex.call("order.pending_stop", 2, None, 0, 0, 10) == {
        "limit": 10, "offset": 0, "total": 0, "records": []}
    low = ex.call("order.stop_book", "BTCBCH", STOP_STATE_LOW, 0, 10)
    assert list(low) == ["offset", "limit", "total", "orders"]
    assert [o["id"] for o in low["orders"]] == [a["id"], c["id"]]
    for params in ([1, "BTCBCH", 3, 0, 10], [1, "BTCBCH", 0, 0, 102], [1, "NOPE", 0, 0, 10],
                   [1, "BTCBCH", 0, 0]):
        assert ex.err("order.pending_stop", *params) == 1
    assert ex.err("order.stop_book", "BTCBCH", 0, 0, 10) == 1


def test_cancel_stop_all(ex: Ex) -> None:
    ex.stop_limit(1, 1, "1", "95", "95")
    ex.stop_limit(1, 2, "1", "105", "105")
    ex.stop_market(1, 1, "1", "90")
    other = ex.stop_market(2, 1, "1", "90")
    assert ex.call("order.cancel_stop_all", 1, "BTCBCH", 1) == {"status": "success"}
    assert [e.stop.side for e in ex.events] == [1, 1]
    assert ex.call("order.pending_stop", 1, None, 0, 0, 10)["total"] == 1
    assert ex.call("order.cancel_stop_all", 1, "BTCBCH") == {"status": "success"}
    assert ex.call("order.pending_stop", 1, None, 0, 0, 10)["total"] == 0
    assert ex.balance(1, "BTC") == ("100", "0") and ex.balance(1, "BCH") == ("100000", "0")
    assert ex.call("order.pending_stop", 2, None, 0, 0, 10)["records"][0]["id"] == other["id"]
    assert ex.call("order.cancel_stop_all", 3, "BTCBCH", 0) == {"status": "success"}
    assert ex.err("order.cancel_stop_all", 1, "BTCBCH", 3) == 1
    ex.check_replay()
