"""The OpenRPC document: valid against the OpenRPC meta-schema, served by accesshttp at
``GET /openrpc.json``, and true of the live server.

The schema-driven client reads only the served document: for every method it builds valid
params from each param's schema (its ``examples`` value, else one made from the type and
bounds), calls the running server and checks the result against the declared result schema;
then it calls again with each param of the wrong type (or, for readhistory's lenient integers,
out of range) and with a required param missing, and expects error code 1.

The meta-schema is vendored from the npm package @open-rpc/meta-schema
(tests/data/openrpc-meta-schema.json, scripts/vendor-js.sh).  It refers to its JSON Schema
dialect as https://meta.json-schema.tools, which is draft-07: that reference is resolved to the
draft-07 meta-schema bundled with ``jsonschema`` (no network).
"""

from __future__ import annotations

import argparse
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from exchange_server.api.openrpc import PATH, document
from exchange_server.client import ApiError, HttpClient
from tests.support.server import REPO, ServerProcess

META_SCHEMA = REPO / "tests" / "data" / "openrpc-meta-schema.json"


def meta_validator() -> Draft7Validator:
    draft7 = Resource(contents=dict(Draft7Validator.META_SCHEMA), specification=DRAFT7)
    registry: Registry = Registry().with_resources(
        [("https://meta.json-schema.tools", draft7), ("https://meta.json-schema.tools/", draft7)])
    return Draft7Validator(json.loads(META_SCHEMA.read_text()), registry=registry)


def test_document_is_valid_openrpc() -> None:
    doc = document()
    errors = list(meta_validator().iter_errors(doc))
    assert not errors, errors[0].message[:500]
    names = [m["name"] for m in doc["methods"]]
    assert len(names) == len(set(names))
    for method in doc["methods"]:
        Draft7Validator.check_schema(method["result"]["schema"])
        for param in method["params"]:
            Draft7Validator.check_schema(param["schema"])


def test_meta_schema_catches_a_broken_document() -> None:
    doc = document()
    doc["methods"][0]["params"][0]["schema"]["type"] = 5
    doc["methods"][0]["errors"] = [{"code": "one"}]
    assert list(meta_validator().iter_errors(doc))


# -- against the live server ------------------------------------------------------------------------


#: Admin methods (if this build has them) need the admin token: the sweep sends it.
ADMIN_TOKEN = "openrpc-test-admin"


def _admin_args() -> list[str]:
    from exchange_server.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    has_admin = any("--admin-token" in a.option_strings for a in run._actions)
    return ["--admin-token", ADMIN_TOKEN] if has_admin else []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("openrpc") / "data", extra=_admin_args()).start()
    try:
        yield srv
    finally:
        srv.stop()


def _get(port: int, path: str,
         headers: dict[str, str] | None = None) -> tuple[int, str | None, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def test_served_at_documented_path(server: ServerProcess) -> None:
    status, ctype, body = _get(server.port, PATH)
    assert status == 200
    assert ctype == "application/json"
    assert json.loads(body) == document(f"http://127.0.0.1:{server.port}/")
    # anything else is still the original's 400 with an empty body ("/" is the index page)
    for path in ("/openrpc", "/openrpc.json/x", "/static/../routes.py"):
        status, _, body = _get(server.port, path)
        assert (status, body) == (400, b""), path


def _servers(port: int, headers: dict[str, str]) -> list[dict[str, str]]:
    status, _, body = _get(port, PATH, headers)
    assert status == 200
    servers: list[dict[str, str]] = json.loads(body)["servers"]
    return servers


@pytest.mark.parametrize(("headers", "url"), [
    ({"Host": "exchange.example.com"}, "http://exchange.example.com/"),
    ({"Host": "api.example.com:8443", "X-Forwarded-Proto": "https"},
     "https://api.example.com:8443/"),
    ({"Host": "EX.example.com", "X-Forwarded-Proto": "HTTPS, http"}, "https://EX.example.com/"),
    ({"Host": "[::1]:8080", "X-Forwarded-Proto": "gopher"}, "http://[::1]:8080/"),
    ({"Host": "10.0.0.5:8080", "X-Forwarded-Proto": "http"}, "http://10.0.0.5:8080/"),
    # a Host that is no host name: the relative "/" (wherever the document came from)
    ({"Host": "evil.example/<script>"}, "/"),
    ({"Host": "a b"}, "/"),
])
def test_servers_entry_is_the_host_the_client_used(server: ServerProcess, headers: dict[str, str],
                                                    url: str) -> None:
    assert _servers(server.port, headers) == [{"name": "this server", "url": url}]
    # the rest of the document does not depend on the request
    assert json.loads(_get(server.port, PATH, headers)[2])["methods"] == document()["methods"]


def test_servers_entry_without_host_is_relative(server: ServerProcess) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {PATH} HTTP/1.0\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["servers"] == [{"name": "this server", "url": "/"}]


def test_examples_name_the_methods_params() -> None:
    from exchange_server.api.registry import http_methods

    registry = http_methods()
    named = 0
    for method in document()["methods"]:
        declared = [p["name"] for p in method["params"]]
        variadic = bool(method["params"]) and method["params"][-1].get("x-variadic", False)
        for example in method.get("examples", []):
            names = [p["name"] for p in example["params"]]
            assert not any(n.startswith("param") for n in names), (method["name"], names)
            if variadic:
                expected = declared + [declared[-1]] * (len(names) - len(declared))
            else:
                expected = declared
            assert names == expected[:len(names)], (method["name"], names)
            named += bool(names)
    assert named > 20
    # balance.query's repeatable asset: every repetition is an "asset"
    from exchange_server.api.openrpc import example_param_names

    assert example_param_names(registry["balance.query"], 3) == ["user_id", "asset", "asset"]


def value_for(schema: dict[str, Any]) -> Any:
    """A valid value built from a schema."""
    if "examples" in schema:
        return schema["examples"][0]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "oneOf" in schema:
        return value_for(next(s for s in schema["oneOf"] if s.get("type") != "null"))
    kind = schema.get("type")
    if kind == "integer":
        low = schema.get("minimum", 0)
        return max(low, min(1, schema.get("maximum", 1)))
    if kind == "string":
        return "1" if schema.get("format") == "decimal" else "x"
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "object":
        return {k: value_for(v) for k, v in schema.get("properties", {}).items()
                if k in schema.get("required", [])}
    if kind == "array":
        return []
    return None


def wrong_value(schema: dict[str, Any]) -> Any:
    """A value the method must refuse with code 1 (wrong type; for lenient integers, which read
    a wrong type as 0, a negative number)."""
    kind = schema.get("type")
    if kind == "integer":
        return -1 if schema.get("x-lenient") else "1"
    if kind == "string":
        return 12345
    if kind == "object":
        return "x"
    if kind == "number":
        return "x"
    return None


def _setup(api: HttpClient) -> None:
    """State in which the schema examples (user 1, BTCBCH, order id 1...) are meaningful."""
    api.balance_update(1, "BTC", "deposit", 100, "50", {})
    api.balance_update(1, "BCH", "deposit", 101, "5000", {})
    api.balance_update(2, "BCH", "deposit", 102, "5000", {})
    first = api.order_put_limit(1, "BTCBCH", 1, "1", "200", "0.002", "0.001", "setup")
    assert first["id"] == 1  # the examples' order id
    api.order_put_limit(2, "BTCBCH", 2, "5", "100", "0.002", "0.001", "setup")


def _call(api: HttpClient, method: str, params: list[Any]) -> tuple[Any, ApiError | None]:
    try:
        return api.call(method, *params), None
    except ApiError as e:
        return None, e


def test_schema_driven_client_calls_every_method(server: ServerProcess) -> None:
    status, _, body = _get(server.port, PATH)
    assert status == 200
    doc = json.loads(body)
    with HttpClient(f"http://127.0.0.1:{server.port}/", decode=False,
                    admin_token=ADMIN_TOKEN) as api:
        _setup(api)
        succeeded, refused, checked_invalid = [], [], 0
        for method in doc["methods"]:
            name = method["name"]
            if method.get("x-undocumented"):
                continue  # tests/unit/test_apidoc.py fails for it
            params = method["params"]
            valid = [value_for(p["schema"]) for p in params]
            result, error = _call(api, name, valid)
            documented = {e["code"] for e in method.get("errors", [])}
            if error is None:
                errors = list(Draft7Validator(method["result"]["schema"]).iter_errors(result))
                assert not errors, f"{name}{valid}: {errors[0].message} in {result!r:.300}"
                succeeded.append(name)
            else:
                assert error.code != 1 and error.code in documented, \
                    f"{name}{valid}: undocumented error {error.code} {error.message}"
                refused.append(f"{name}: {error.code} {error.message}")
            if method.get("x-params-ignored"):
                continue
            required = [p for p in params if p.get("required")]
            if required:
                _, error = _call(api, name, valid[: len(required) - 1])
                assert error is not None and error.code == 1, f"{name}: missing param accepted"
                checked_invalid += 1
            for i, param in enumerate(params):
                bad = wrong_value(param["schema"])
                if bad is None:
                    continue
                mutated = [*valid[:i], bad, *valid[i + 1:]]
                result, error = _call(api, name, mutated)
                assert error is not None and error.code == 1, \
                    f"{name}: {param['name']} = {bad!r} was not refused with code 1 ({result!r:.200})"
                checked_invalid += 1
        print(f"{len(succeeded)} succeeded, refused: {refused}, {checked_invalid} invalid calls")
        assert len(succeeded) >= 0.9 * (len(succeeded) + len(refused)), refused
        assert checked_invalid > 50
