"""Assets and markets at run time: config.update_asset / config.update_market /
config.suspend_market / config.resume_market, logged like every write (replay and slices keep
them), and refused on accesshttp without the admin token."""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from exchange_server.accesshttp.routes import ADMIN_METHODS, ROUTES
from exchange_server.matchengine.methods import MatchEngineMethods
from exchange_server.readhistory.methods import ReadHistoryMethods
from exchange_server.rpc.commands import MATCHENGINE_COMMANDS, READHISTORY_COMMANDS
from tests.support.ext_support import FEES, Ex, fingerprint
from tests.support.server import ServerProcess

DOGE = {"name": "DOGE", "prec_save": 12, "prec_show": 8}
DOGEBCH = {"name": "DOGEBCH", "stock": {"name": "DOGE", "prec": 4},
           "money": {"name": "BCH", "prec": 8}, "fee_prec": 3, "min_amount": "10"}


@pytest.fixture
def ex() -> Ex:
    ex = Ex()
    for user in (1, 2):
        ex.deposit(user, "BTC", "100")
        ex.deposit(user, "BCH", "100000")
    return ex


# -- the engine ----------------------------------------------------------------------------------


def test_add_asset_and_market_then_trade(ex: Ex) -> None:
    assert ex.err("balance.update", 1, "DOGE", "deposit", 500, "1", {}) == 1
    assert ex.call("config.update_asset", DOGE) == {"status": "success"}
    assert {"name": "DOGE", "prec": 8} in ex.call("asset.list")
    assert "DOGE" in ex.call("balance.query", 1)
    ex.deposit(1, "DOGE", "1000.123456789")
    assert ex.balance(1, "DOGE") == ("1000.12345678", "0")  # prec_show 8
    assert ex.call("config.update_market", DOGEBCH) == {"status": "success"}
    assert ex.call("market.list")[-1] == {
        "name": "DOGEBCH", "stock": "DOGE", "money": "BCH", "fee_prec": 3, "stock_prec": 4,
        "money_prec": 8, "min_amount": "10"}
    assert ex.call("market.detail", "DOGEBCH") == {
        "name": "DOGEBCH", "stock": "DOGE", "money": "BCH", "fee_prec": 3, "stock_prec": 4,
        "money_prec": 8, "min_amount": "10", "last": "0", "suspended": False}
    ex.call("order.put_limit", 1, "DOGEBCH", 1, "100", "0.01", "0.002", "0.001", "t")
    ex.call("order.put_limit", 2, "DOGEBCH", 2, "100", "0.01", "0.002", "0.001", "t")
    assert ex.balance(2, "DOGE") == ("99.8", "0")  # taker fee 0.2
    assert ex.call("market.detail", "DOGEBCH")["last"] == "0.01"
    ex.check_replay()


def test_update_existing_asset(ex: Ex) -> None:
    ex.call("config.update_asset", {"name": "BTC", "prec_save": 14, "prec_show": 4})
    ex.deposit(1, "BTC", "0.123456")
    assert ex.balance(1, "BTC") == ("100.1234", "0")
    # prec_save never goes down (stored balances would lose digits)
    assert ex.err("config.update_asset", {"name": "BTC", "prec_save": 12, "prec_show": 4}) == 1
    ex.check_replay()


def test_update_existing_market_fee_prec_and_min_amount(ex: Ex) -> None:
    market = {"name": "BTCBCH", "stock": {"name": "BTC", "prec": 8},
              "money": {"name": "BCH", "prec": 8}, "fee_prec": 2, "min_amount": "0.5"}
    ex.call("config.update_market", market)
    detail = ex.call("market.detail", "BTCBCH")
    assert (detail["fee_prec"], detail["min_amount"]) == (2, "0.5")
    assert ex.err("order.put_limit", 1, "BTCBCH", 1, "0.4", "100", *FEES, "t") == 11
    order = ex.call("order.put_limit", 1, "BTCBCH", 1, "0.5", "100", "0.0025", "0.0019", "t")
    assert (order["taker_fee"], order["maker_fee"]) == ("0", "0")  # truncated to 2 places
    # stock / money and their precisions cannot change
    for change in ({"stock": {"name": "BTC", "prec": 6}}, {"money": {"name": "USDT", "prec": 2}}):
        assert ex.err("config.update_market", {**market, **change}) == 1
    ex.check_replay()


@pytest.mark.parametrize("method,params", [
    ("config.update_asset", [{"name": "X"}]),
    ("config.update_asset", [{"name": "X", "prec_save": 4, "prec_show": 8}]),
    ("config.update_asset", [{"name": "", "prec_save": 4}]),
    ("config.update_asset", ["X"]),
    ("config.update_asset", [DOGE, DOGE]),
    ("config.update_market", [{**DOGEBCH}]),  # DOGE does not exist yet
    ("config.update_market", [{**DOGEBCH, "name": "BB", "stock": {"name": "BCH", "prec": 4}}]),
    ("config.update_market", [{**DOGEBCH, "name": "BTCX", "stock": {"name": "BTC", "prec": 8},
                               "fee_prec": 10}]),  # precisions beyond prec_save
    ("config.update_market", [{**DOGEBCH, "min_amount": "-1"}]),
    ("config.suspend_market", ["NOPE"]),
    ("config.resume_market", []),
])
def test_admin_invalid(ex: Ex, method: str, params: list[Any]) -> None:
    before = fingerprint(ex.engine)
    assert ex.err(method, *params) == 1
    assert fingerprint(ex.engine) == before


def test_suspend_and_resume(ex: Ex) -> None:
    ex.trade_at("100")
    order = ex.limit(1, 1, "1", "101")
    stop = ex.stop_limit(1, 1, "1", "90", "90")
    assert ex.call("config.suspend_market", "BTCBCH") == {"status": "success"}
    assert ex.call("market.detail", "BTCBCH")["suspended"] is True
    assert ex.err("order.put_limit", 2, "BTCBCH", 2, "1", "101", *FEES, "t") == 30
    assert ex.err("order.put_market", 2, "BTCBCH", 2, "10", "0.002", "t") == 30
    assert ex.err("order.put_stop_market", 2, "BTCBCH", 2, "200", "110", "0.002", "s", None,
                  None) == 30
    # leaving is always possible; reads work
    assert ex.call("order.cancel", 1, "BTCBCH", order["id"])["id"] == order["id"]
    assert ex.call("order.cancel_stop", 1, "BTCBCH", stop["id"])["id"] == stop["id"]
    assert ex.call("order.depth", "BTCBCH", 10, "0") == {"asks": [], "bids": []}
    # other markets trade on
    ex.deposit(1, "USDT", "1000")
    ex.limit(1, 2, "1", "100", market="BTCUSDT")
    ex.call("config.resume_market", "BTCBCH")
    ex.limit(2, 2, "1", "101")
    ex.check_replay()


# -- routing and the admin token ------------------------------------------------------------------


def test_every_method_is_routed() -> None:
    from exchange_server.matchengine.configured import Engine
    from tests.support.ext_support import config

    methods = MatchEngineMethods(Engine.from_config(config()))
    assert set(methods.reads) | set(methods.writes) == set(MATCHENGINE_COMMANDS.values())
    assert set(ReadHistoryMethods(None).table) == set(READHISTORY_COMMANDS.values())  # type: ignore[arg-type]
    admin = {"config.update_asset", "config.update_market", "config.suspend_market",
             "config.resume_market"}
    assert admin == ADMIN_METHODS
    numbers = [cmd for _, cmd in ROUTES.values()]
    assert len(numbers) == len(set(numbers))


def post(port: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/", body=json.dumps(body), headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


def rpc(method: str, *params: Any, req_id: int = 1) -> dict[str, Any]:
    return {"method": method, "params": list(params), "id": req_id}


def balances(srv: ServerProcess) -> dict[tuple[int, str], Any]:
    return {(u, a): srv.call("balance.query", u, a)
            for u in (1, 2) for a in ("DOGE", "BCH")}


REFUSED = {"error": {"code": 6, "message": "require authentication"}, "result": None, "id": 1}


def test_admin_methods_refused_without_a_configured_token(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra=["--disable", "marketprice", "--disable",
                                                  "accessws", "--disable", "readhistory"]).start()
    try:
        for headers in (None, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
            assert post(srv.port, rpc("config.update_asset", DOGE), headers) == (403, REFUSED)
        assert srv.call("asset.list")[-1]["name"] == "DSH"
    finally:
        assert srv.stop() == 0


def test_admin_token_over_http_and_a_crash_keeps_the_new_market(tmp_path: Path) -> None:
    """Admin token rules, then a market added at run time, trading and a pending stop in it,
    SIGKILL: the restart (log replay) gives everything back; a clean stop and start (slice)
    too."""
    token = "s3cret-token"
    extra = ["--admin-token", token, "--disable", "marketprice", "--disable", "accessws"]
    srv = ServerProcess(tmp_path / "data", extra=extra).start()
    good = {"Authorization": f"Bearer {token}"}
    try:
        for headers in (None, {"Authorization": token}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Basic {token}"}, {"X-Admin-Token": token}):
            assert post(srv.port, rpc("config.update_asset", DOGE), headers) == (403, REFUSED)
        # in a batch only the admin element is refused
        status, replies = post(srv.port, [rpc("config.update_asset", DOGE),
                                          rpc("asset.list", req_id=2)])
        assert status == 200 and replies[0] == REFUSED and replies[1]["error"] is None
        # with the token (any case of "bearer")
        assert post(srv.port, rpc("config.update_asset", DOGE), good)[1]["result"] == {
            "status": "success"}
        status, reply = post(srv.port, rpc("config.update_market", DOGEBCH),
                             {"authorization": f"bearer {token}"})
        assert (status, reply["result"]) == (200, {"status": "success"})
        # non-admin methods need no token
        srv.call("balance.update", 1, "DOGE", "deposit", 1, "500", {})
        srv.call("balance.update", 2, "BCH", "deposit", 2, "10", {})
        srv.call("order.put_limit", 1, "DOGEBCH", 1, "100", "0.01", *FEES, "t")
        srv.call("order.put_limit", 2, "DOGEBCH", 2, "50", "0.01", *FEES, "t")
        stop = srv.call("order.put_stop_limit", 1, "DOGEBCH", 1, "20", "0.009", "0.009", *FEES,
                        "t", None, None, 0, "after-crash")
        expected = balances(srv)
        assert expected[(1, "DOGE")]["DOGE"]["freeze"] == "70"  # 50 on the book, 20 for the stop
        book = srv.call("order.book", "DOGEBCH", 1, 0, 10)
        stops = srv.call("order.pending_stop", 1, None, 0, 0, 10)
        assert stops["records"] == [stop]
    finally:
        srv.stop(signal.SIGKILL)  # a crash: no final slice, the log is replayed
    srv = ServerProcess(tmp_path / "data", extra=extra).start()
    try:
        assert srv.call("market.list")[-1]["name"] == "DOGEBCH"
        assert balances(srv) == expected
        assert srv.call("order.book", "DOGEBCH", 1, 0, 10) == book
        assert srv.call("order.pending_stop", 1, None, 0, 0, 10) == stops
        assert srv.call("market.detail", "DOGEBCH")["last"] == "0.01"
    finally:
        assert srv.stop() == 0  # clean stop: a slice holds the runtime config now
    srv = ServerProcess(tmp_path / "data", extra=extra).start()
    try:
        assert srv.call("market.detail", "DOGEBCH")["last"] == "0.01"
        assert srv.call("order.book", "DOGEBCH", 1, 0, 10) == book
        assert srv.call("order.pending_stop", 1, None, 0, 0, 10) == stops
        assert balances(srv) == expected
    finally:
        assert srv.stop() == 0
