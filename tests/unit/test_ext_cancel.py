"""Bulk cancel: order.cancel_all (a user's orders in a market, optionally one side) and
order.cancel_batch (a list of ids, one result each), the CoinEx fork's v1 layouts."""

from __future__ import annotations

import pytest

from exchange_server.matchengine.core.model import OrderChanged, OrderFinished
from tests.support.ext_support import Ex, fingerprint


@pytest.fixture
def ex() -> Ex:
    ex = Ex()
    for user in (1, 2):
        ex.deposit(user, "BTC", "100")
        ex.deposit(user, "BCH", "100000")
        ex.deposit(user, "USDT", "100000")
    return ex


def finished(ex: Ex) -> list[int]:
    return [e.order.id for e in ex.events if isinstance(e, OrderChanged) and e.event == 3]


def test_cancel_all_one_side_then_both(ex: Ex) -> None:
    a1 = ex.limit(1, 1, "1", "110")
    b1 = ex.limit(1, 2, "1", "90")
    a2 = ex.limit(1, 1, "2", "111")
    other = ex.limit(2, 1, "1", "112")
    usdt = ex.limit(1, 1, "1", "110", market="BTCUSDT")
    ex.trade_at("100")
    stop = ex.stop_limit(1, 1, "1", "95", "95")
    assert ex.balance(1, "BTC") == ("95", "5")
    assert ex.call("order.cancel_all", 1, "BTCBCH", 1) == {"status": "success"}
    assert finished(ex) == [a1["id"], a2["id"]]  # oldest first
    assert ex.balance(1, "BTC") == ("98", "2")  # the BTCUSDT ask and the stop stay
    assert ex.call("order.cancel_all", 1, "BTCBCH") == {"status": "success"}
    assert finished(ex) == [b1["id"]]
    assert ex.balance(1, "BCH") == ("100000", "0")
    # other users, other markets and stops are left alone
    assert ex.call("order.pending_detail", "BTCBCH", other["id"]) is not None
    assert ex.call("order.pending_detail", "BTCUSDT", usdt["id"]) is not None
    assert ex.call("order.pending_stop", 1, "BTCBCH", 0, 0, 10)["records"][0]["id"] == stop["id"]
    # nothing left: still success, no events
    assert ex.call("order.cancel_all", 1, "BTCBCH", 0) == {"status": "success"}
    assert ex.events == []
    ex.check_replay()


@pytest.mark.parametrize("params", [[1], [1, "NOPE"], [1, "BTCBCH", 3], [1, "BTCBCH", "1"],
                                    [0, "BTCBCH"], [1, "BTCBCH", 0, 0]])
def test_cancel_all_invalid(ex: Ex, params: list) -> None:
    assert ex.err("order.cancel_all", *params) == 1


def test_cancel_all_partly_filled_order_goes_to_history(ex: Ex) -> None:
    order = ex.limit(1, 1, "2", "100")
    ex.limit(2, 2, "1", "100")
    ex.call("order.cancel_all", 1, "BTCBCH")
    assert [e.order.id for e in ex.events if isinstance(e, OrderFinished)] == [order["id"]]


def test_cancel_batch_per_order_results(ex: Ex) -> None:
    mine = ex.limit(1, 1, "1", "110")
    mine2 = ex.limit(1, 2, "1", "90")
    theirs = ex.limit(2, 1, "1", "111")
    results = ex.call("order.cancel_batch", 1, "BTCBCH",
                      [mine["id"], theirs["id"], 999, "x", mine["id"], -5, mine2["id"]])
    assert [(r["code"], r["message"]) for r in results] == [
        (0, ""), (11, "user not match"), (10, "order not found"), (10, "order not found"),
        (10, "order not found"), (10, "order not found"), (0, "")]
    assert results[0]["order"] == mine and results[6]["order"] == mine2
    assert [r["order"] for r in results[1:6]] == [None] * 5
    assert finished(ex) == [mine["id"], mine2["id"]]
    assert ex.balance(1, "BTC") == ("100", "0")
    assert ex.call("order.pending_detail", "BTCBCH", theirs["id"]) is not None
    assert ex.log[-1][1] == "cancel_order_batch"  # one operation in the log
    ex.check_replay()


@pytest.mark.parametrize("ids", [[], list(range(1, 103)), 5, None])
def test_cancel_batch_invalid(ex: Ex, ids: object) -> None:
    ex.limit(1, 1, "1", "110")
    before = fingerprint(ex.engine)
    assert ex.err("order.cancel_batch", 1, "BTCBCH", ids) == 1
    assert fingerprint(ex.engine) == before


def test_cancel_batch_of_101(ex: Ex) -> None:
    ids = [ex.limit(1, 1, "0.01", str(100 + i))["id"] for i in range(101)]
    results = ex.call("order.cancel_batch", 1, "BTCBCH", ids)
    assert [r["code"] for r in results] == [0] * 101
    assert ex.call("order.pending", 1, "BTCBCH", 0, 10)["total"] == 0
