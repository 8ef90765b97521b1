"""The OpenRPC document of the HTTP JSON-RPC API, generated from the API description.

accesshttp serves it at ``GET /openrpc.json`` with the gateway as the client reached it in
``servers`` (pages.py builds the URL from the request's Host); ``python -m
exchange_server.api.openrpc`` prints it with the embedded default, http://127.0.0.1:8080/.

Methods are listed in the order of the method table (exchange_server.common.methods, which
accesshttp routes); a routed method without a registry entry is still listed (params unknown)
with ``x-undocumented: true`` so the document never hides a method, while
``tests/unit/test_apidoc.py`` fails until it is documented.

Extensions used (allowed by OpenRPC as ``x-`` fields):

* ``x-variadic`` on a param: it may be repeated (``[user_id, asset, asset, ...]``);
* ``x-params-ignored`` on a method: any params array is accepted;
* ``x-service`` on a method: the backend service that answers;
* ``x-lenient`` inside an integer schema: non-integers are read as 0 (readhistory);
* ``format: decimal`` on strings holding decimal numbers.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path
from typing import Any

import orjson

from exchange_server.api.model import Method
from exchange_server.api.registry import http_methods, served_http_methods

OPENRPC_VERSION = "1.3.2"
API_VERSION = "0.1.0"
#: Where accesshttp serves the document.
PATH = "/openrpc.json"
EXAMPLES_FILE = Path(__file__).resolve().parents[2] / "docs" / "api" / "examples.json"


def _content(name: str, schema: dict[str, Any], description: str, required: bool = True,
             variadic: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "schema": copy.deepcopy(schema), "required": required}
    if description:
        out["description"] = description
    if variadic:
        out["x-variadic"] = True
    return out


def _errors(method: Method) -> list[dict[str, Any]]:
    return [{"code": e.code, "message": e.message, "data": e.when} for e in method.all_errors()]


def load_examples() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(EXAMPLES_FILE.read_text())
        return data
    except (OSError, ValueError):
        return {}


def example_param_names(method: Method, count: int) -> list[str]:
    """The names of ``count`` example params: the method's own (a repeatable last param lends
    its name to every repetition), ``param<i>`` past the documented ones."""
    names = [p.name for p in method.params]
    if method.params and method.params[-1].variadic:
        names += [method.params[-1].name] * max(0, count - len(names))
    return [names[i] if i < len(names) else f"param{i}" for i in range(count)]


def _example(method: Method, recorded: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not recorded:
        return []
    request, response = recorded.get("request"), recorded.get("response")
    if not isinstance(request, dict) or not isinstance(response, dict):
        return []
    if response.get("error") is not None:
        return []
    params = request.get("params", [])
    names = example_param_names(method, len(params))
    return [{
        "name": f"{method.name} (recorded)",
        "description": "Recorded from a real run by python -m exchange_server.apidoc.examples.",
        "params": [{"name": n, "value": v} for n, v in zip(names, params, strict=True)],
        "result": {"name": "result", "value": response.get("result")},
    }]


def method_object(method: Method, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    description = method.notes
    if method.result_doc:
        description = (description + "\n\nResult: " + method.result_doc).strip()
    out: dict[str, Any] = {
        "name": method.name,
        "summary": method.summary,
        "description": description,
        "tags": [{"name": method.group}, {"name": method.service}] if method.service else
        [{"name": method.group}],
        "paramStructure": "by-position",
        "params": [_content(p.name, p.schema, p.doc(), p.required, p.variadic)
                   for p in method.params],
        "result": _content("result", method.result, method.result_doc),
        "errors": _errors(method),
        "x-service": method.service,
    }
    if method.params_ignored:
        out["x-params-ignored"] = True
    examples = _example(method, recorded)
    if examples:
        out["examples"] = examples
    return out


def _undocumented(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "summary": "(not documented yet)",
        "paramStructure": "by-position",
        "params": [],
        "result": {"name": "result", "schema": {}},
        "x-undocumented": True,
    }


#: Where the document says the API is when no request tells (the embedded default).
DEFAULT_SERVER_URL = "http://127.0.0.1:8080/"


def document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenRPC document (a fresh dict) for the gateway at ``server_url``."""
    registry = http_methods()
    examples = load_examples().get("http", {})
    methods = []
    for name in served_http_methods():
        entry = registry.get(name)
        methods.append(method_object(entry, examples.get(name)) if entry is not None
                       else _undocumented(name))
    doc: dict[str, Any] = {
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "exchange-server HTTP JSON-RPC API",
            "version": API_VERSION,
            "description": (
                "JSON-RPC over HTTP POST, compatible with the ViaBTC exchange server. Requests "
                "are `{\"method\", \"params\": [...], \"id\": int}` (params by position); "
                "replies are `{\"error\", \"result\", \"id\"}`. Decimal numbers travel as JSON "
                "strings. Error codes 10-12 mean different things per method: read the "
                "message. See docs/api/http.md."),
            "license": {"name": "MIT"},
        },
        "servers": [server(server_url)],
        "methods": methods,
    }
    return doc


def server(url: str | None) -> dict[str, str]:
    """The ``servers`` entry for the gateway at ``url`` (None: the embedded default)."""
    if url is None:
        return {"name": "embedded default", "url": DEFAULT_SERVER_URL}
    return {"name": "this server", "url": url}


@functools.lru_cache(maxsize=1)
def _base_document() -> dict[str, Any]:
    return document()


@functools.lru_cache(maxsize=8)
def document_bytes(server_url: str | None = None) -> bytes:
    """The document as served to clients that reached the gateway at ``server_url`` (the
    methods are computed once per process, the few URLs a gateway is known by are cached)."""
    doc = {**_base_document(), "servers": [server(server_url)]}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(json.dumps(document(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
