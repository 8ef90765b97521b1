"""The API description (exchange_server/api) against the servers and the committed docs.

These fail when accesshttp routes, or accessws serves or pushes, something the registry does
not document; when docs/api/*.md or exchange_server/client/methods.py are out of date (run
``python -m exchange_server.apidoc.build``); or when a recorded example does not match its
documented schema.  Only the push checks start a server: the example recorder's real session,
which must receive nothing but the pushes the table (common/methods.py) declares.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from jsonschema import Draft7Validator

from exchange_server.api import registry
from exchange_server.api.model import GENERIC_ERRORS, Method
from exchange_server.apidoc import build, examples
from exchange_server.apidoc.coverage import coverage
from exchange_server.common.methods import WS_PUSHES


def test_every_served_method_and_push_is_documented() -> None:
    problems = coverage().problems()
    assert not problems, "\n".join(problems)


def test_generated_files_are_up_to_date() -> None:
    stale = [str(path.relative_to(build.REPO)) for path, text in build.outputs().items()
             if not path.exists() or path.read_text() != text]
    assert not stale, f"out of date (run python -m exchange_server.apidoc.build): {stale}"


def test_every_documented_method_has_a_recorded_example() -> None:
    gaps = examples.missing(build.load_examples())
    assert not gaps, f"run python -m exchange_server.apidoc.examples: {gaps}"


def _all_methods() -> list[tuple[str, Method]]:
    return ([("http", m) for m in registry.http_methods().values()]
            + [("ws", m) for m in registry.ws_methods().values()])


@pytest.mark.parametrize("where,method", _all_methods(), ids=lambda v: getattr(v, "name", v))
def test_schemas_are_valid_and_complete(where: str, method: Method) -> None:
    assert method.summary and method.summary.endswith(".")
    Draft7Validator.check_schema(method.result)
    seen_optional = False
    for i, param in enumerate(method.params):
        Draft7Validator.check_schema(param.schema)
        assert param.doc(), f"{method.name} param {param.name} has no description"
        assert "examples" in param.schema, f"{method.name} {param.name}: no example value"
        if param.variadic:
            assert i == len(method.params) - 1, "only the last param may repeat"
        if not param.required:
            seen_optional = True
        else:
            assert not seen_optional, "optional params must come last"
    for error in method.errors:
        assert error.code in GENERIC_ERRORS or error.code >= 10


def _check(schema: dict[str, Any], value: Any, what: str) -> None:
    errors = sorted(Draft7Validator(schema).iter_errors(value), key=str)
    assert not errors, f"{what}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_recorded_examples_match_the_schemas() -> None:
    recorded = build.load_examples()
    for table, key in ((registry.http_methods(), "http"), (registry.ws_methods(), "websocket")):
        for name, entry in recorded[key].items():
            method = table[name]
            reply = entry["response"]
            assert reply["error"] is None, name
            _check(method.result, reply["result"], f"{key} {name} result")
            params = entry["request"]["params"]
            if not method.params_ignored:
                fewest, most = method.param_count()
                assert len(params) >= fewest and (most is None or len(params) <= most), name
                for i, value in enumerate(params):
                    param = method.params[min(i, len(method.params) - 1)]
                    _check(param.schema, value, f"{key} {name} param {param.name}")
    pushes = registry.ws_pushes()
    for name, items in recorded["pushes"].items():
        for item in items:
            note = item["notification"]
            assert note["method"] == name and note["id"] is None
            _check(pushes[name].schema, note["params"], f"push {name}")


def test_param_examples_match_their_schemas() -> None:
    for _, method in _all_methods():
        for param in method.params:
            _check(param.schema, param.schema["examples"][0], f"{method.name} {param.name}")


def test_a_feed_push_missing_from_the_push_table_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange_server.apidoc import coverage as coverage_module

    table = tuple(name for name in coverage_module.WS_PUSHES if name != "kline.update")
    monkeypatch.setattr(coverage_module, "WS_PUSHES", table)
    problems = coverage_module.coverage().problems()
    assert "push of an accessws feed missing from common/methods.py WS_PUSHES: kline.update" in problems
    assert "documented push that accessws does not send: kline.update" in problems


def test_every_push_a_real_session_receives_is_declared() -> None:
    # record() runs a real server through a session that triggers every push, and fails on a
    # notification that the push table does not declare
    recorded = asyncio.run(examples.record())
    assert set(recorded["pushes"]) == set(WS_PUSHES)


def test_a_push_missing_from_the_table_fails_the_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(examples, "WS_PUSHES", tuple(p for p in WS_PUSHES if p != "asset.update"))
    with pytest.raises(RuntimeError, match=r"does not declare: asset\.update$"):
        asyncio.run(examples.record())
