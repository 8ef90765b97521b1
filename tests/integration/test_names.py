"""Names of assets and markets added at run time (config.update_asset / config.update_market):
at most 15 bytes, as the original's accessws takes, and market names in the market page's
characters, so that every added market can be subscribed and shown.  Code 1 with a clear
message otherwise.  The check is for live requests only: an older operation log replays as it
was accepted, and existing names (the config file allows longer ones) can still be updated."""

from __future__ import annotations

import asyncio
import http.client
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exchange_server.common.errors import RpcError
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import OperRecord
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from tests.support.ext_support import Ex, config, fingerprint
from tests.support.server import ServerProcess

TOKEN = "names-admin-token"


def asset(name: str) -> dict[str, Any]:
    return {"name": name, "prec_save": 8, "prec_show": 8}


def market(name: str, stock: str = "BTC", money: str = "BCH") -> dict[str, Any]:
    return {"name": name, "stock": {"name": stock, "prec": 4}, "money": {"name": money, "prec": 4},
            "fee_prec": 4, "min_amount": "0.01"}


def refusal(ex: Ex, method: str, detail: dict[str, Any]) -> str:
    before = fingerprint(ex.engine)
    with pytest.raises(RpcError) as info:
        ex.call(method, detail)
    assert info.value.code == 1
    assert fingerprint(ex.engine) == before
    return info.value.message


@pytest.mark.parametrize("name", ["A" * 16, "Ä" * 8, "€" * 6])
def test_new_asset_names_longer_than_15_bytes_are_refused(name: str) -> None:
    message = refusal(Ex(), "config.update_asset", asset(name))
    assert "asset.name" in message and "at most 15" in message


@pytest.mark.parametrize("name", ["A" * 16, "BTC" * 6, "Ä" * 8])
def test_new_market_names_longer_than_15_bytes_are_refused(name: str) -> None:
    message = refusal(Ex(), "config.update_market", market(name))
    assert "market.name" in message and "at most 15" in message


@pytest.mark.parametrize("name", ["BTC/BCH", "BTC BCH", "BTC<b>", "BTCÄ", "BTC\nBCH"])
def test_new_market_names_outside_the_page_characters_are_refused(name: str) -> None:
    message = refusal(Ex(), "config.update_market", market(name))
    assert "market.name" in message and "letters, digits" in message


def test_names_up_to_15_bytes_are_accepted() -> None:
    ex = Ex()
    assert ex.call("config.update_asset", asset("A" * 15)) == {"status": "success"}
    assert ex.call("config.update_asset", asset("Ä" * 7)) == {"status": "success"}  # 14 bytes
    assert ex.call("config.update_market", market("B_T.C-" + "X" * 9, "A" * 15)) == {
        "status": "success"}
    ex.check_replay()


def test_existing_long_names_can_still_be_updated() -> None:
    """The config file allows market names up to 30 characters: updating one is not refused."""
    cfg = config()
    long_name = "BTCBCH-LONG-CONFIG-NAME"
    cfg.markets.append(replace(cfg.markets[0], name=long_name))
    ex = Ex(cfg)
    detail = market(long_name)
    detail["stock"]["prec"] = cfg.markets[0].stock_prec
    detail["money"]["prec"] = cfg.markets[0].money_prec
    detail["fee_prec"] = 3
    assert ex.call("config.update_market", detail) == {"status": "success"}
    assert ex.engine.markets[long_name].fee_prec == 3


def test_replay_of_an_older_log_is_not_checked(tmp_path: Path) -> None:
    """A log written before the check (20-byte asset and market names; the config readers
    allow 15 and 30 characters) replays as accepted."""
    store = SqliteEngineStore(tmp_path / "data")
    store.open()
    long_asset, long_market = "Ä" * 10, "LONGMARKET/NAME-20BY"
    store.append([
        OperRecord(1, 1_790_000_000.0, "update_asset", [asset(long_asset)]),
        OperRecord(2, 1_790_000_001.0, "update_market", [market(long_market, long_asset)]),
    ])
    service = MatchEngineService(config(), store)
    service.restore()
    try:
        assert long_asset in service.engine.assets
        assert long_market in service.engine.markets
        # the same request live is refused
        with pytest.raises(RpcError) as info:
            service.execute("config.update_asset", [asset("Ö" * 10)])
        assert info.value.code == 1
    finally:
        store.close()


# -- a real server: an added market can be subscribed and shown ------------------------------------


def post(port: int, method: str, *params: Any) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/", json.dumps({"method": method, "params": list(params), "id": 1}),
                     {"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


async def ws_call(url: str, method: str, *params: Any) -> Any:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"method": method, "params": list(params), "id": 3})
        while True:
            reply = await ws.receive_json(timeout=10)
            if reply.get("id") == 3:
                return reply


def test_added_market_can_be_subscribed_and_shown(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra=["--admin-token", TOKEN]).start()
    try:
        name = "A" * 7 + "BCH" + "x_.-9"  # 15 bytes
        assert post(srv.port, "config.update_asset", asset("A" * 7))[1]["result"] == {
            "status": "success"}
        assert post(srv.port, "config.update_market", market(name, "A" * 7))[1]["result"] == {
            "status": "success"}
        url = f"ws://127.0.0.1:{srv.ws_port}/"
        reply = asyncio.run(ws_call(url, "depth.subscribe", name, 10, "0"))
        assert reply["error"] is None and reply["result"] == {"status": "success"}
        reply = asyncio.run(ws_call(url, "depth.query", name, 10, "0"))
        assert reply["error"] is None
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            conn.request("GET", f"/market/{name}")
            resp = conn.getresponse()
            assert resp.status == 200 and name.encode() in resp.read()
        finally:
            conn.close()
        status, reply = post(srv.port, "config.update_market", market(name + "Z", "A" * 7))
        assert status == 200 and reply["error"]["code"] == 1
        assert "at most 15" in reply["error"]["message"]
    finally:
        assert srv.stop() == 0
