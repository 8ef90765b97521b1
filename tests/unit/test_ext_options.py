"""Order options (the CoinEx fork's ``option`` bits, extensions.md 2) on limit and market
orders: immediate-or-cancel, fill-or-kill, post-only, unlimited minimum amount; the fork's
extended parameter layout; and the original's 8 / 6 parameters answering exactly as before."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from exchange_server.matchengine.core.model import (
    OPTION_FOK,
    OPTION_IOC,
    OPTION_MAKER_ONLY,
    OPTION_UNLIMITED_MIN_AMOUNT,
)
from tests.support.ext_support import FEES, NO_FEE_ASSET, Ex, fingerprint

ORIGINAL_KEYS = ["id", "market", "source", "type", "side", "user", "ctime", "mtime", "price",
                 "amount", "taker_fee", "maker_fee", "left", "deal_stock", "deal_money",
                 "deal_fee"]


@pytest.fixture
def ex() -> Ex:
    ex = Ex()
    for user in (1, 2, 3):
        ex.deposit(user, "BTC", "100")
        ex.deposit(user, "BCH", "100000")
    return ex


def book(ex: Ex) -> dict[str, list[list[str]]]:
    return ex.call("order.depth", "BTCBCH", 100, "0")


# -- parameter layouts --------------------------------------------------------------------------


def test_original_layout_answers_unchanged(ex: Ex) -> None:
    order = ex.limit(1, 1, "1", "100")
    assert list(order) == ORIGINAL_KEYS
    assert list(ex.market_order(2, 2, "50")) == ORIGINAL_KEYS
    assert list(ex.call("order.pending", 1, "BTCBCH", 0, 10)["records"][0]) == ORIGINAL_KEYS
    # 9 parameters stay invalid (the fork reads its trailing ones in pairs)
    assert ex.err("order.put_limit", 1, "BTCBCH", 1, "1", "100", *FEES, "t", None) == 1
    assert ex.err("order.put_limit", 1, "BTCBCH", 1, "1", "100", *FEES, "t", None, None, 0,
                  "c", "x") == 1
    assert ex.err("order.put_market", 1, "BTCBCH", 1, "1", "0.002", "t", None) == 1
    assert ex.err("order.put_market", 1, "BTCBCH", 1, "1", "0.002", "t", None, None, 0, "c",
                  "x") == 1
    ex.check_replay()


def test_extended_layout_shows_option_and_client_id(ex: Ex) -> None:
    plain = ex.limit(1, 1, "1", "100", *NO_FEE_ASSET)
    assert list(plain) == [*ORIGINAL_KEYS, "option", "client_id"]
    assert (plain["option"], plain["client_id"]) == (0, "")
    tagged = ex.limit(1, 1, "1", "101", "", "", OPTION_UNLIMITED_MIN_AMOUNT, "my-order_1")
    assert (tagged["option"], tagged["client_id"]) == (OPTION_UNLIMITED_MIN_AMOUNT, "my-order_1")
    pending = ex.call("order.pending", 1, "BTCBCH", 0, 10)["records"]
    assert [(r["id"], r["client_id"]) for r in pending] == [(tagged["id"], "my-order_1"),
                                                            (plain["id"], "")]
    assert ex.call("order.pending_detail", "BTCBCH", tagged["id"])["client_id"] == "my-order_1"
    m = ex.market_order(2, 2, "50", None, None, 0, "mkt")
    assert (m["option"], m["client_id"]) == (0, "mkt")
    ex.check_replay()


@pytest.mark.parametrize("ext", [
    (None, None, 0x01),            # SUGGEST_STOCK_FEE: fees in another asset are not supported
    (None, None, 0x02),
    (None, None, 0x20),            # HIDDEN: not supported
    (None, None, 0x800),           # beyond every known bit (0x400: self-trade "none")
    (None, None, -1),
    ("BCH", None),                 # a fee asset
    (None, "1.5"),                 # discount beyond 1
    (None, "x"),
    (None, 3),
    (None, None, 0, "a" * 33),     # client_id: at most 32 bytes
    (None, None, 0, "a b"),        # ... of A-Z a-z 0-9 - _
    (None, None, 0, "é"),
])
def test_extension_params_invalid(ex: Ex, ext: tuple) -> None:
    before = fingerprint(ex.engine)
    assert ex.err("order.put_limit", 1, "BTCBCH", 1, "1", "100", *FEES, "t", *ext) == 1
    assert fingerprint(ex.engine) == before


def test_extension_params_lenient(ex: Ex) -> None:
    """As the fork: a non-integer option reads as 0, a non-string client_id as none, a
    non-string or empty fee asset as none; a discount in [0, 1] is accepted (and unused)."""
    o = ex.limit(1, 1, "1", "100", 5, "0.5", "IOC?", 12)
    assert (o["option"], o["client_id"]) == (0, "")
    o = ex.limit(1, 1, "1", "100", "", "", None, "a" * 32)
    assert o["client_id"] == "a" * 32


# -- immediate-or-cancel ------------------------------------------------------------------------


def test_ioc_without_fill_changes_no_balance(ex: Ex) -> None:
    ex.limit(2, 1, "1", "105")
    before = ex.balance(1, "BCH")
    order = ex.limit_opt(1, 2, "1", "100", OPTION_IOC)
    assert order["left"] == "1" and order["deal_stock"] == "0"
    # finished at once: an orders FINISH message, no history row (nothing dealt)
    assert ex.kinds() == ["OrderChanged"] and ex.events[0].event == 3
    assert ex.balance(1, "BCH") == before
    assert ex.call("order.pending", 1, "BTCBCH", 0, 10)["total"] == 0
    assert book(ex) == {"asks": [["105", "1"]], "bids": []}
    assert ex.engine.order_id == order["id"]  # the id is used
    ex.check_replay()


def test_ioc_partial_fill_cancels_the_rest(ex: Ex) -> None:
    ex.limit(2, 1, "0.4", "100")
    ex.limit(2, 1, "1", "102")
    order = ex.limit_opt(1, 2, "1", "101", OPTION_IOC)
    assert (order["left"], order["deal_stock"], order["deal_money"]) == ("0.6", "0.4", "40")
    assert "OrderFinished" in ex.kinds()  # something was dealt: history row
    assert ex.balance(1, "BCH") == ("99960", "0")
    assert book(ex) == {"asks": [["102", "1"]], "bids": []}
    ex.check_replay()


def test_ioc_full_fill_is_a_normal_fill(ex: Ex) -> None:
    ex.limit(2, 1, "1", "100")
    order = ex.limit_opt(1, 2, "1", "100", OPTION_IOC)
    assert D(order["left"]) == 0 and order["deal_stock"] == "1"


# -- fill-or-kill ---------------------------------------------------------------------------------


def test_fok_exactly_at_the_depth_of_the_book(ex: Ex) -> None:
    ex.limit(2, 1, "1", "100")
    ex.limit(3, 1, "2", "101")
    ex.limit(2, 1, "5", "102")
    before = fingerprint(ex.engine)
    # one unit (1e-8) more than the crossing depth: nothing happens, no id used
    assert ex.err("order.put_limit", 1, "BTCBCH", 2, "3.00000001", "101", *FEES, "t",
                  None, None, OPTION_FOK) == 12
    assert fingerprint(ex.engine) == before
    # the whole depth up to the limit price: filled completely
    order = ex.limit_opt(1, 2, "3", "101", OPTION_FOK)
    assert D(order["left"]) == 0 and order["deal_stock"] == "3"
    assert order["id"] == int(before["order_id"]) + 1
    assert book(ex) == {"asks": [["102", "5"]], "bids": []}
    ex.check_replay()


def test_fok_sell_against_bids(ex: Ex) -> None:
    ex.limit(2, 2, "1", "100")
    ex.limit(3, 2, "1", "99")
    assert ex.err("order.put_limit", 1, "BTCBCH", 1, "2", "100", *FEES, "t", None, None,
                  OPTION_FOK) == 12  # 99 is below the limit
    order = ex.limit_opt(1, 1, "2", "99", OPTION_FOK)
    assert D(order["left"]) == 0
    assert book(ex) == {"asks": [], "bids": []}


def test_fok_checks_come_after_balance_and_minimum(ex: Ex) -> None:
    ex.limit(2, 1, "1", "100")
    assert ex.err("order.put_limit", 4, "BTCBCH", 2, "5", "100", *FEES, "t", None, None,
                  OPTION_FOK) == 10
    assert ex.err("order.put_limit", 1, "BTCBCH", 2, "0.0001", "100", *FEES, "t", None, None,
                  OPTION_FOK) == 11


def test_fok_market_orders(ex: Ex) -> None:
    ex.limit(2, 2, "1", "100")
    ex.limit(3, 2, "1", "99")
    before = fingerprint(ex.engine)
    # the fork's code for market orders is 13
    assert ex.err("order.put_market", 1, "BTCBCH", 1, "2.5", "0.002", "t", None, None,
                  OPTION_FOK) == 13
    assert fingerprint(ex.engine) == before
    order = ex.market_order(1, 1, "2", None, None, OPTION_FOK)
    assert D(order["left"]) == 0 and order["deal_money"] == "199"
    # a market bid spends money: the asks hold 1 x 100 + 2 x 101 = 302
    ex.limit(2, 1, "1", "100")
    ex.limit(3, 1, "2", "101")
    assert ex.err("order.put_market", 1, "BTCBCH", 2, "302.00000001", "0.002", "t", None, None,
                  OPTION_FOK) == 13
    order = ex.market_order(1, 2, "302", None, None, OPTION_FOK)
    assert D(order["left"]) == 0 and order["deal_stock"] == "3"
    ex.check_replay()


def test_fok_market_bid_counts_unspendable_dust_as_filled(ex: Ex) -> None:
    """1 BCH at price 3 buys 0.33333333 BTC and leaves 1e-8 BCH that cannot buy a unit."""
    ex.limit(2, 1, "1", "3")
    order = ex.market_order(1, 2, "1", None, None, OPTION_FOK)
    assert order["deal_stock"] == "0.33333333" and D(order["left"]) == D("1e-8")


# -- post-only ----------------------------------------------------------------------------------


def test_post_only_that_would_take_is_refused(ex: Ex) -> None:
    ex.limit(2, 1, "1", "100")
    ex.limit(2, 2, "1", "90")
    before = fingerprint(ex.engine)
    for side, price in ((2, "100"), (2, "150"), (1, "90"), (1, "10")):
        assert ex.err("order.put_limit", 1, "BTCBCH", side, "1", price, *FEES, "t", None, None,
                      OPTION_MAKER_ONLY) == 13
    assert fingerprint(ex.engine) == before
    bid = ex.limit_opt(1, 2, "1", "99.99999999", OPTION_MAKER_ONLY)
    ask = ex.limit_opt(1, 1, "1", "100.00000001", OPTION_MAKER_ONLY)
    assert bid["left"] == "1" and ask["left"] == "1"
    assert ex.call("order.pending", 1, "BTCBCH", 0, 10)["total"] == 2
    ex.check_replay()


def test_post_only_on_an_empty_book_rests(ex: Ex) -> None:
    order = ex.limit_opt(1, 2, "1", "100", OPTION_MAKER_ONLY)
    assert order["left"] == "1"
    assert ex.kinds() == ["OrderChanged"] and ex.events[0].event == 1


def test_post_only_and_ioc_are_accepted_on_market_orders(ex: Ex) -> None:
    """As the fork: no effect on a market order."""
    ex.limit(2, 1, "1", "100")
    order = ex.market_order(1, 2, "50", None, None, OPTION_MAKER_ONLY | OPTION_IOC)
    assert order["deal_stock"] == "0.5"


# -- minimum amount -------------------------------------------------------------------------------


def test_unlimited_min_amount(ex: Ex) -> None:
    assert ex.err("order.put_limit", 1, "BTCBCH", 1, "0.0001", "100", *FEES, "t") == 11
    order = ex.limit_opt(1, 1, "0.0001", "100", OPTION_UNLIMITED_MIN_AMOUNT)
    assert order["left"] == "0.0001"
    assert ex.err("order.put_market", 2, "BTCBCH", 2, "0.001", "0.002", "t") == 11
    order = ex.market_order(2, 2, "0.001", None, None, OPTION_UNLIMITED_MIN_AMOUNT)
    assert order["deal_stock"] == "0.00001"
