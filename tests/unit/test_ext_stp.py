"""Self-trade prevention, a matchengine config (``self_trade_prevention``) and option bits.

By default ("none") a user's orders trade with each other, as in the original.  With a mode
(the config's, or the order's option bits 0x100 cancel taker / 0x200 cancel maker / 0x300 cancel
both; 0x400 asks for "none" whatever the config) an order never deals with an order of its own
user.  Most tests here run under ``cancel_taker``; the log replays the same under any config.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D
from typing import Any

import orjson
import pytest

from exchange_server.bus.messages import order_message
from exchange_server.common.config import (
    ConfigError,
    MatchEngineConfig,
    default_matchengine_data,
    load_matchengine,
)
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.core.model import (
    OPTION_FOK,
    OPTION_STP_NONE,
    STP_CANCEL_BOTH,
    STP_CANCEL_MAKER,
    STP_CANCEL_TAKER,
    Deal,
    OrderChanged,
    OrderFinished,
)
from tests.support.ext_support import FEES, Ex, config, fingerprint


def stp_config(mode: str) -> MatchEngineConfig:
    return dataclasses.replace(config(), self_trade_prevention=mode)


def funded(cfg: MatchEngineConfig) -> Ex:
    ex = Ex(cfg)
    for user in (1, 2, 3):
        ex.deposit(user, "BTC", "100")
        ex.deposit(user, "BCH", "100000")
    return ex


@pytest.fixture
def ex() -> Ex:
    return funded(stp_config("cancel_taker"))


@pytest.fixture
def plain() -> Ex:
    """The default config: no self-trade prevention."""
    return funded(config())


def depth(ex: Ex) -> dict[str, list[list[str]]]:
    return ex.call("order.depth", "BTCBCH", 100, "0")


def deals(ex: Ex) -> list[tuple[int, int, D]]:
    return [(e.ask_user, e.bid_user, e.amount) for e in ex.events if isinstance(e, Deal)]


def finished_ids(ex: Ex) -> list[int]:
    return [e.order.id for e in ex.events if isinstance(e, OrderChanged) and e.event == 3]


@pytest.mark.parametrize("layout", ["original", "default", "cancel_taker"])
def test_cancel_taker_config(ex: Ex, layout: str) -> None:
    own = ex.limit(1, 1, "1", "100")
    ex.limit(2, 1, "1", "100")
    before = ex.balance(1, "BCH")
    if layout == "original":
        taker = ex.limit(1, 2, "2", "100")
    else:
        taker = ex.limit_opt(1, 2, "2", "100", 0 if layout == "default" else STP_CANCEL_TAKER)
    assert D(taker["left"]) == 2 and D(taker["deal_stock"]) == 0
    assert taker["stp_cancelled"] is True and "stp_cancelled_orders" not in taker
    assert deals(ex) == [] and finished_ids(ex) == [taker["id"]]
    # it is not pending but in the history (order.finished), though nothing was dealt
    assert [e.order.id for e in ex.events if isinstance(e, OrderFinished)] == [taker["id"]]
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
    assert taker["stp_cancelled_orders"] == [own["id"]] and "stp_cancelled" not in taker
    assert finished_ids(ex) == [own["id"]]
    # the resting taker's object does not keep the list (it was about its placement)
    assert "stp_cancelled_orders" not in ex.call("order.pending_detail", "BTCBCH", taker["id"])
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


# -- the default: the original's behaviour ------------------------------------------------------


def test_default_config_is_none() -> None:
    assert config().self_trade_prevention == "none"
    assert Ex().engine.self_trade_prevention == 0


@pytest.mark.parametrize("layout", ["original", "fork"])
def test_default_a_users_orders_trade_with_each_other(plain: Ex, layout: str) -> None:
    """The original's behaviour: a deal, taker and maker fees as usual, nothing cancelled."""
    ask = plain.limit(1, 1, "1", "100")
    if layout == "original":
        bid = plain.limit(1, 2, "1", "100")
    else:
        bid = plain.limit_opt(1, 2, "1", "100", 0)
        assert bid["option"] == 0
    assert (D(bid["deal_stock"]), D(bid["deal_money"]), D(bid["left"])) == (1, 100, 0)
    assert D(bid["deal_fee"]) == D("0.002")  # taker fee, in the stock it bought
    assert "stp_cancelled" not in bid
    assert deals(plain) == [(1, 1, D(1))]
    assert plain.call("order.pending_detail", "BTCBCH", ask["id"]) is None  # filled
    # ask: +100 BCH - 0.1 maker fee; bid: -100 BCH, +1 BTC - 0.002 taker fee
    assert plain.balance(1, "BCH") == ("99999.9", "0")
    assert plain.balance(1, "BTC") == ("99.998", "0")
    plain.check_replay()


def test_option_none_trades_under_a_prevention_config(ex: Ex) -> None:
    ex.limit(1, 1, "1", "100")
    bid = ex.limit_opt(1, 2, "1", "100", OPTION_STP_NONE)
    assert (bid["deal_stock"], bid["option"]) == ("1", OPTION_STP_NONE)
    assert "stp_cancelled" not in bid
    assert deals(ex) == [(1, 1, D(1))]
    ex.check_replay()


def test_option_none_with_a_mode_is_refused(ex: Ex) -> None:
    for option in (OPTION_STP_NONE | STP_CANCEL_TAKER, OPTION_STP_NONE | STP_CANCEL_BOTH):
        assert ex.err("order.put_limit", 1, "BTCBCH", 2, "1", "100", *FEES, "t", None, None,
                      option) == 1
        assert ex.err("order.put_market", 1, "BTCBCH", 2, "1", "0.002", "t", None, None,
                      option) == 1


def test_config_key_is_checked() -> None:
    data = default_matchengine_data()
    assert load_matchengine(data, embedded=True).self_trade_prevention == "none"
    for mode in ("none", "cancel_taker", "cancel_maker", "cancel_both"):
        cfg = load_matchengine(dict(data, self_trade_prevention=mode), embedded=True)
        assert cfg.self_trade_prevention == mode
    for bad in ("cancel", 1, None):
        with pytest.raises(ConfigError, match="self_trade_prevention"):
            load_matchengine(dict(data, self_trade_prevention=bad), embedded=True)


# -- what prevention cancelled says so -----------------------------------------------------------


def test_cancelled_orders_say_so_in_the_reply_and_the_order_message(ex: Ex) -> None:
    own = ex.limit(1, 1, "1", "100")
    rests = ex.limit(3, 2, "1", "90")
    assert "stp_cancelled" not in own and "stp_cancelled" not in rests
    taker = ex.limit_opt(1, 2, "1", "100", STP_CANCEL_BOTH)
    assert taker["stp_cancelled"] is True
    assert taker["stp_cancelled_orders"] == [own["id"]]
    messages = {e.order.id: orjson.loads(order_message(e)) for e in ex.events
                if isinstance(e, OrderChanged)}
    assert messages[own["id"]]["order"]["stp_cancelled"] is True  # the maker
    assert messages[taker["id"]]["order"]["stp_cancelled"] is True
    assert messages[taker["id"]]["order"]["stp_cancelled_orders"] == [own["id"]]
    # both go to the history, deals or not (order.finished shows them)
    assert sorted(e.order.id for e in ex.events if isinstance(e, OrderFinished)) == sorted(
        [own["id"], taker["id"]])
    # an order prevention did not touch has no such key
    ex.limit(2, 1, "1", "95")
    deal = ex.limit(3, 2, "1", "95")
    assert "stp_cancelled" not in deal
    assert all("stp_cancelled" not in orjson.loads(order_message(e))["order"]
               for e in ex.events if isinstance(e, OrderChanged))


# -- the log replays the same whatever the config is ----------------------------------------------


def _session(ex: Ex) -> None:
    """Self-trades in every layout: original, fork without and with options, market, stops.
    A step a mode makes impossible (e.g. a market order with an empty book) is refused and
    not logged."""
    steps: list[tuple[str, tuple[Any, ...]]] = [
        ("limit", (1, 1, "1", "100")),
        ("limit", (2, 1, "1", "100")),
        ("limit", (1, 2, "0.5", "100")),  # original layout
        ("limit_opt", (1, 2, "0.5", "100", 0)),
        ("limit", (1, 2, "0.5", "100", None, None)),  # fork layout without option
        ("limit_opt", (1, 2, "0.3", "100", OPTION_STP_NONE)),
        ("limit", (1, 1, "1", "101")),
        ("market_order", (1, 2, "50")),
        ("market_order", (1, 2, "50", None, None, STP_CANCEL_MAKER)),
        ("limit", (3, 1, "1", "102")),
        ("limit", (1, 1, "1", "103")),
        ("stop_limit", (1, 2, "1", "102", "103")),  # fires when the price reaches 102
        ("stop_market", (1, 2, "110", "102")),
        ("limit", (2, 1, "1", "102")),
        ("limit", (1, 2, "2", "102")),  # reaches 102: stops fire into user 1's ask at 103
    ]
    accepted = 0
    for name, args in steps:
        try:
            getattr(ex, name)(*args)
            accepted += 1
        except RpcError:
            pass
    assert accepted >= len(steps) - 2


@pytest.mark.parametrize("written, replayed", [
    ("cancel_taker", "none"), ("cancel_maker", "cancel_both"), ("none", "cancel_both"),
    ("cancel_both", "cancel_taker")])
def test_log_replays_the_same_under_another_config(written: str, replayed: str) -> None:
    ex = funded(stp_config(written))
    _session(ex)
    assert fingerprint(ex.replayed(stp_config(replayed))) == fingerprint(ex.engine)
    ex.check_replay()


def test_configs_really_differ_on_the_session() -> None:
    """The replay test above is meaningful: the session ends differently under each config."""
    prints = []
    for mode in ("none", "cancel_taker", "cancel_maker", "cancel_both"):
        ex = funded(stp_config(mode))
        _session(ex)
        prints.append(orjson.dumps(fingerprint(ex.engine)))
    assert len(set(prints)) == 4


def test_the_log_records_the_mode_the_config_gave() -> None:
    ex = funded(stp_config("cancel_maker"))
    ex.limit(1, 1, "1", "100")
    ex.limit_opt(1, 2, "0.1", "99", 0)
    ex.limit_opt(1, 2, "0.1", "99", OPTION_STP_NONE)
    ex.market_order(1, 2, "5")
    logged = [params for _, name, params in ex.log if name in ("limit_order", "market_order")]
    assert logged[0][8:] == [STP_CANCEL_MAKER]  # the original's layout: one more param
    assert logged[1][10] == STP_CANCEL_MAKER  # the fork's: in option
    assert logged[2][10] == OPTION_STP_NONE  # chosen by the order: as sent
    assert logged[3][6:] == [STP_CANCEL_MAKER]
    # under "none" nothing is added: the original's log records
    plain = funded(config())
    plain.limit(1, 1, "1", "100")
    assert plain.log[-1][2] == [1, "BTCBCH", 1, "1", "100", *FEES, "t"]
    # the recorded 9th param is a replay-only layout: clients cannot send it
    assert plain.err("order.put_limit", 1, "BTCBCH", 2, "1", "100", *FEES, "t",
                     STP_CANCEL_TAKER) == 1
