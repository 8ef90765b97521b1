"""The trust model (accesshttp/trust.py, README.md "Trust model"): the HTTP API is a trusted
back-office API; a public listener answers only the public market-data methods and pages;
``api_token`` locks every non-public method; ``config.*`` keep the admin token.

Against a real ``exchange-server run`` with ``--api-token``, ``--admin-token`` and
``--public-port``; the nginx deployment is in test_nginx.py."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from exchange_server.accesshttp.routes import ADMIN_METHODS, PUBLIC_METHODS, ROUTES
from exchange_server.accesshttp.standalone import load_accesshttp
from exchange_server.accesshttp.trust import Grant, TrustPolicy
from exchange_server.common.config import ConfigError
from tests.support.server import REPO, ServerProcess, free_port
from tests.support.waiting import wait_port

API_TOKEN = "api-token-of-the-back-office"
ADMIN_TOKEN = "admin-token-of-the-operator"
REFUSED = {"error": {"code": 6, "message": "require authentication"}, "result": None, "id": 1}
ASSET = {"name": "DOGE", "prec_save": 12, "prec_show": 8}
#: one call of every public method, with valid params
PUBLIC_CALLS: list[tuple[str, list[Any]]] = [
    ("market.list", []), ("market.summary", []), ("market.last", ["BTCBCH"]),
    ("market.deals", ["BTCBCH", 10, 0]), ("market.kline", ["BTCBCH", 1, 2, 60]),
    ("market.status", ["BTCBCH", 86400]), ("market.status_today", ["BTCBCH"]),
    ("asset.list", []), ("order.depth", ["BTCBCH", 10, "0"]), ("order.book", ["BTCBCH", 1, 0, 10]),
]


def post(port: int, body: Any, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/", body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def rpc(method: str, *params: Any, req_id: int = 1) -> dict[str, Any]:
    return {"method": method, "params": list(params), "id": req_id}


def served(reply: tuple[int, Any]) -> bool:
    status, body = reply
    return status == 200 and body["error"] is None



@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    public_port = free_port()
    srv = ServerProcess(tmp_path_factory.mktemp("trust") / "data", extra=[
        "--api-token", API_TOKEN, "--admin-token", ADMIN_TOKEN,
        "--public-port", str(public_port)]).start()
    try:
        wait_port(public_port)
        yield srv, public_port
    finally:
        assert srv.stop() == 0


# -- the policy -----------------------------------------------------------------------------------


def test_public_set_is_read_only_market_data() -> None:
    assert ROUTES.keys() >= PUBLIC_METHODS
    assert not PUBLIC_METHODS & ADMIN_METHODS
    assert {m for m, _ in PUBLIC_CALLS} == PUBLIC_METHODS
    for method in ("balance.query", "balance.update", "balance.history", "order.put_limit",
                   "order.cancel", "order.pending", "order.finished", "market.user_deals"):
        assert method not in PUBLIC_METHODS


@pytest.mark.parametrize("doc", ["README.md", "docs/operations.md"])
def test_docs_list_exactly_the_public_methods(doc: str) -> None:
    """The docs name the public set of routes.py, no more, no less (one marked line)."""
    text = (REPO / doc).read_text()
    match = re.search(r"^Public methods: (.*)$", text, re.MULTILINE)
    assert match, f"{doc} has no 'Public methods:' line"
    assert set(re.findall(r"`([a-z_]+\.[a-z_]+)`", match.group(1))) == PUBLIC_METHODS


def test_policy_matrix() -> None:
    open_ = TrustPolicy.of()
    tokens = TrustPolicy.of(admin_token="a", api_token="b")
    public = TrustPolicy.of(admin_token="a", api_token="b", public_only=True)
    assert tokens.grant(b"Bearer a") is Grant.ADMIN and tokens.grant(b"bearer  b ") is Grant.API
    for value in (None, b"", b"Bearer", b"Bearer c", b"Basic b", b"b"):
        assert tokens.grant(value) is Grant.NONE
    assert open_.grant(b"Bearer ") is Grant.NONE
    for method in ROUTES:
        public_method = method in PUBLIC_METHODS
        admin_method = method in ADMIN_METHODS
        assert open_.allows(method, Grant.NONE) is not admin_method
        assert tokens.allows(method, Grant.NONE) is public_method
        assert tokens.allows(method, Grant.API) is not admin_method
        assert tokens.allows(method, Grant.ADMIN)
        for grant in Grant:
            assert public.allows(method, grant) is public_method
    assert not public.reads_headers and tokens.reads_headers and not open_.reads_headers


def test_standalone_config_keys() -> None:
    base = {"svr": {"bind": ["tcp@127.0.0.1:8080"]},
            **{name: {"name": name, "addr": ["tcp@127.0.0.1:7316"], "max_pkg_size": 10240}
               for name in ("matchengine", "marketprice", "readhistory")}}
    config = load_accesshttp({**base, "api_token": "t", "public": {"bind": "tcp@0.0.0.0:8082"}})
    assert (config.api_token, config.public_bind, config.public_only) == (
        "t", ("tcp@0.0.0.0:8082",), False)
    assert load_accesshttp({**base, "public_only": True}).public_only is True
    assert load_accesshttp(base).public_bind == ()
    assert load_accesshttp({**base, "ws_url": "wss://ex.example/ws"}).ws_url == (
        "wss://ex.example/ws")
    for bad, where in (({"public": {"bind": ["udp@127.0.0.1:1"]}}, "public.bind[0]"),
                       ({"public": {}}, "public.bind"), ({"public_only": "yes"}, "public_only"),
                       ({"api_token": 5}, "api_token")):
        with pytest.raises(ConfigError, match=re.escape(where)):
            load_accesshttp({**base, **bad})


# -- a real server: api_token and the admin token --------------------------------------------------


def test_api_token_locks_every_non_public_method(server: tuple[ServerProcess, int]) -> None:
    srv, _ = server
    deposit = rpc("balance.update", 7, "BTC", "deposit", 1, "5", {})
    for token in (None, "", "wrong", ADMIN_TOKEN[:-1]):
        assert post(srv.port, deposit, token) == (403, REFUSED)
        assert post(srv.port, rpc("balance.query", 7), token) == (403, REFUSED)
        assert post(srv.port, rpc("order.pending", 7, "BTCBCH", 0, 10), token) == (403, REFUSED)
    # nothing was credited by the refused calls
    status, reply = post(srv.port, rpc("balance.query", 7, "BTC"), API_TOKEN)
    assert (status, reply["result"]) == (200, {"BTC": {"available": "0", "freeze": "0"}})
    # the right token: served (once: the business id dedups)
    assert served(post(srv.port, deposit, API_TOKEN))
    status, reply = post(srv.port, rpc("balance.query", 7, "BTC"), API_TOKEN)
    assert reply["result"] == {"BTC": {"available": "5", "freeze": "0"}}
    # the admin token unlocks everything
    assert served(post(srv.port, rpc("balance.query", 7, "BTC"), ADMIN_TOKEN))
    # public methods need no token
    for method, params in PUBLIC_CALLS:
        assert served(post(srv.port, rpc(method, *params))), method
    # a batch: each element on its own
    status, replies = post(srv.port, [rpc("balance.query", 7), rpc("asset.list", req_id=2)])
    assert status == 200 and replies[0] == REFUSED and replies[1]["error"] is None


def test_config_methods_keep_the_admin_token(server: tuple[ServerProcess, int]) -> None:
    srv, _ = server
    for token in (None, API_TOKEN, "wrong"):
        assert post(srv.port, rpc("config.update_asset", ASSET), token) == (403, REFUSED)
    status, reply = post(srv.port, rpc("config.update_asset", ASSET), ADMIN_TOKEN)
    assert (status, reply["result"]) == (200, {"status": "success"})


# -- a real server: the public listener -------------------------------------------------------------


def test_public_listener_serves_only_the_public_set(server: tuple[ServerProcess, int]) -> None:
    srv, public = server
    for token in (None, API_TOKEN, ADMIN_TOKEN):
        assert post(public, rpc("balance.update", 8, "BTC", "deposit", 1, "5", {}),
                    token) == (403, REFUSED)
        assert post(public, rpc("balance.query", 8), token) == (403, REFUSED)
        assert post(public, rpc("config.update_asset", ASSET), token) == (403, REFUSED)
    status, reply = post(srv.port, rpc("balance.query", 8, "BTC"), API_TOKEN)
    assert reply["result"] == {"BTC": {"available": "0", "freeze": "0"}}
    for method, params in PUBLIC_CALLS:
        assert served(post(public, rpc(method, *params))), method
    # a batch may only carry public methods: the others are refused, nothing else runs
    status, replies = post(public, [rpc("order.depth", "BTCBCH", 10, "0"),
                                    rpc("balance.update", 8, "BTC", "deposit", 2, "5", {},
                                        req_id=2)])
    assert status == 200 and replies[0]["error"] is None
    assert replies[1] == {**REFUSED, "id": 2}
    # unknown methods stay unknown
    assert post(public, rpc("no.such"))[0] == 404
    # the pages
    status, body = get(public, "/openrpc.json")
    assert status == 200 and json.loads(body)["openrpc"]
    status, body = get(public, "/market/BTCBCH")
    assert status == 200 and b"BTCBCH" in body
    status, body = get(public, "/market-config.json")
    assert status == 200 and json.loads(body)["ws_port"] == srv.ws_port
    assert get(public, "/") == get(srv.port, "/")
