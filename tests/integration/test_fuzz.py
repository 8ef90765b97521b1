"""Every public method, HTTP and WebSocket, fed arbitrary JSON params on a real
``exchange-server run``.

Why: a gateway is attacked through its params.  Each method in the API registry
(``exchange_server.api.registry``) gets params drawn from plausible values (real market,
asset and user names, so the deeper checks are reached) mixed with hostile ones: wrong types,
huge and negative integers, decimal edge cases, long and unicode strings, containers nested up
to 100 deep, and wrong arity.  The HTTP side includes the trusted (back office) methods, since
a buggy back office sends garbage too.  A reply must be a success or an error whose code the
registry documents for that method (or the generic 1 "invalid argument" and 5 "service
timeout"); the server must log no traceback and must still answer afterwards.

Determinism: hypothesis runs derandomized (the same examples every run) with a bounded number
of examples per method; replies are waited for with generous deadlines, never timed.  The
whole module (68 methods x 40 examples) takes about 20 s on 2 shared cores.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange_server.api.model import Method
from exchange_server.api.registry import http_methods, ws_methods
from tests.support.accessws_support import AuthService, RawWs
from tests.support.server import REPO, ServerProcess
from tests.support.waiting import wait_until

#: Examples per method: enough to reach every type check, small enough for 2 shared cores.
EXAMPLES = 40
#: Generous deadline for one reply (the server answers in milliseconds when idle).
DEADLINE = 60.0
#: Codes any method may answer: a bad param, and a backend that did not answer in time.
GENERIC = {1, 5}
USER = 1
TOKEN = "fuzz-token"
ADMIN_TOKEN = "fuzz-admin"

FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

# -- params ---------------------------------------------------------------------------------------

#: Values that pass the first checks, so the fuzz reaches the later ones.
PLAUSIBLE: list[Any] = [
    "BTCBCH", "BTC", "BCH", "web", "api", "deposit", USER, 2, 0, 1, 10, 60, 3600, 86400,
    "1", "0.5", "100", "0", "0.01", "0.001", 1_700_000_000, {}, [], None, "BTCBCH", 100,
]

DECIMAL_TEXT = st.one_of(
    st.sampled_from(["-0", "+1", ".5", "5.", "1e308", "1e-308", "-1", "1e+30", "0e0", "1_000",
                     "0x10", " 1", "1 ", "", "NaN", "Infinity", "-inf", "1" * 40,
                     "0." + "0" * 40 + "1", "9" * 23 + ".9", "１２３", "1,5"]),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.decimals(min_value=Decimal("-1e30"), max_value=Decimal("1e30"), places=12).map(str),
)

INTEGERS = st.one_of(
    st.integers(),
    st.sampled_from([-1, 0, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
                     -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**30)]),
)

TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.integers(200, 5000).map(lambda n: "A" * n),
    st.sampled_from(["\u0000", "ÄÖÜ", "比特币", "🚀" * 20, "BTC\nBCH", "%s%n", "'; DROP TABLE x"]),
)


def _nest(depth: int, leaf: Any, as_dict: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


DEEP = st.builds(_nest, st.integers(1, 100), st.sampled_from([1, "BTC", None]), st.booleans())

SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, st.floats(allow_nan=False,
                                                                     allow_infinity=False),
                    TEXT, DECIMAL_TEXT, st.sampled_from(PLAUSIBLE))

VALUES = st.one_of(
    st.sampled_from(PLAUSIBLE),
    SCALARS,
    DEEP,
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8),
)


#: Each method's recorded valid call (docs/api/examples.json), mutated to reach later checks.
EXAMPLES_JSON = json.loads((REPO / "docs" / "api" / "examples.json").read_text())


def recorded_params(kind: str, name: str) -> list[Any]:
    params: list[Any] = EXAMPLES_JSON[kind][name]["request"]["params"]
    return params


def _mutated(valid: list[Any]) -> st.SearchStrategy[list[Any]]:
    """``valid`` with one or two params replaced, or cut short, or with extra params."""
    if not valid:
        return st.lists(VALUES, min_size=1, max_size=3)

    def replace(spots: list[tuple[int, Any]]) -> list[Any]:
        params = list(valid)
        for index, value in spots:
            params[index % len(params)] = value
        return params

    return st.one_of(
        st.lists(st.tuples(st.integers(0, len(valid) - 1), VALUES), min_size=1, max_size=2)
        .map(replace),
        st.integers(0, len(valid) - 1).map(lambda n: valid[:n]),
        st.lists(VALUES, min_size=1, max_size=3).map(lambda extra: valid + extra),
    )


def params_for(method: Method, valid: list[Any]) -> st.SearchStrategy[list[Any]]:
    """Mostly the recorded valid params with a few changed; otherwise garbage of the method's
    own arity or of any arity."""
    fewest, most = method.param_count()
    top = most if most is not None else fewest + 4
    return st.one_of(
        _mutated(valid),
        _mutated(valid),
        st.integers(fewest, top).flatmap(lambda n: st.lists(VALUES, min_size=n, max_size=n)),
        st.lists(VALUES, max_size=top + 3),
    )


def allowed_codes(method: Method) -> set[int]:
    return {e.code for e in method.errors} | GENERIC


# -- the server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module: the WebSocket link and the auth service live on it (the
    auth service answers while a WebSocket call is being waited for)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def auth(loop: asyncio.AbstractEventLoop) -> Iterator[AuthService]:
    service = AuthService()
    service.tokens[TOKEN] = USER
    loop.run_until_complete(service.start())
    yield service
    loop.run_until_complete(service.stop())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, auth: AuthService) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("fuzz")
    ws_config = base / "accessws.json"
    ws_config.write_text(json.dumps({"auth_url": auth.auth_url, "sign_url": auth.sign_url,
                                     "backend_timeout": 10}))
    proc = ServerProcess(base / "data", extra=["--ws-config", str(ws_config),
                                              "--admin-token", ADMIN_TOKEN]).start()
    # money for the order methods to work with
    for user in (1, 2, 3):  # the users of the recorded examples
        proc.call("balance.update", user, "BCH", "deposit", 10 + user, "1000000", {})
        proc.call("balance.update", user, "BTC", "deposit", 20 + user, "1000", {})
    try:
        yield proc
    finally:
        proc.stop()


class WsLink:
    """One WebSocket connection driven from synchronous test code."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        self.loop = loop
        self.port = port
        self.raw: RawWs | None = None
        self.next_id = 1

    def connect(self) -> None:
        raw, head = self.loop.run_until_complete(RawWs.open(self.port, RawWs.handshake()))
        assert head.startswith(b"HTTP/1.1 101"), head
        self.raw = raw

    def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        """The reply to one request (pushes in between are skipped)."""
        assert self.raw is not None
        req_id = self.next_id
        self.next_id += 1
        self.raw.send_frame(json.dumps({"method": method, "params": params, "id": req_id})
                            .encode())
        return self.loop.run_until_complete(self._reply(req_id))

    async def _reply(self, req_id: int) -> dict[str, Any]:
        assert self.raw is not None
        while True:
            frame = await self.raw.read_frame(DEADLINE)
            assert frame is not None, "the server closed the connection"
            opcode, payload = frame
            assert opcode == 1, frame
            message: dict[str, Any] = json.loads(payload)
            if message.get("id") is None:
                continue  # a push of something a fuzzed subscribe subscribed to
            assert message["id"] == req_id, message
            return message

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None


@pytest.fixture(scope="module")
def ws(loop: asyncio.AbstractEventLoop, server: ServerProcess) -> Iterator[WsLink]:
    link = WsLink(loop, server.ws_port)
    wait_until(lambda: _try_connect(link), DEADLINE, interval=0.1, message="accessws listening")
    assert link.call("server.auth", [TOKEN, "web"])["result"] == {"status": "success"}
    yield link
    link.close()


def _try_connect(link: WsLink) -> bool:
    try:
        link.connect()
    except (OSError, AssertionError):
        return False
    return True


def _http(server: ServerProcess, method: str, params: list[Any]) -> tuple[int, dict[str, Any]]:
    """POST one request as the back office does (with the admin token)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE)
    try:
        conn.request("POST", "/", body=json.dumps({"method": method, "params": params, "id": 1}),
                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        response = conn.getresponse()
        status, body = response.status, response.read()
    finally:
        conn.close()
    assert body, (status, method, params)
    reply: dict[str, Any] = json.loads(body)
    return status, reply


def _check(method: Method, params: list[Any], reply: dict[str, Any]) -> None:
    error = reply["error"]
    if error is None:
        return
    assert error["code"] in allowed_codes(method), (method.name, params, error)
    assert reply["result"] is None, reply


def _log_size(server: ServerProcess) -> int:
    return server.log_path.stat().st_size


def _no_traceback_since(server: ServerProcess, start: int, name: str) -> None:
    with open(server.log_path, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    assert "Traceback" not in text, f"{name}: the server logged a traceback:\n{text[-4000:]}"


# -- the tests ------------------------------------------------------------------------------------

HTTP = http_methods()
WS = ws_methods()


@pytest.mark.parametrize("name", list(HTTP))
def test_http_method_survives_garbage(server: ServerProcess, name: str) -> None:
    method = HTTP[name]
    start = _log_size(server)

    @FUZZ
    @given(params=params_for(method, recorded_params("http", name)))
    def fuzz(params: list[Any]) -> None:
        status, reply = _http(server, name, params)
        assert status == 200 or (status == 504 and reply["error"]["code"] == 5), (status, reply)
        _check(method, params, reply)

    fuzz()
    _no_traceback_since(server, start, name)
    # still alive
    assert wait_until(lambda: _http(server, "market.list", [])[1]["result"], DEADLINE)


@pytest.mark.parametrize("name", list(WS))
def test_ws_method_survives_garbage(server: ServerProcess, ws: WsLink, name: str) -> None:
    method = WS[name]
    start = _log_size(server)

    @FUZZ
    @given(params=params_for(method, recorded_params("websocket", name)))
    def fuzz(params: list[Any]) -> None:
        _check(method, params, ws.call(name, params))

    fuzz()
    _no_traceback_since(server, start, name)
    # still alive, and still the same (authenticated) user
    assert ws.call("server.ping", [])["result"] == "pong"
    assert ws.call("server.auth", [TOKEN, "web"])["result"] == {"status": "success"}
    assert wait_until(lambda: _http(server, "market.list", [])[1]["result"], DEADLINE)
