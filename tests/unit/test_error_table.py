"""Each method's errors are declared once (common/errors.py) and raised from there.

Why: codes 10 and up mean different things per method (fill-or-kill is 12 in order.put_limit,
13 in order.put_market), so a raise site that borrows another method's declaration answers a
wrong code that no type checker sees.  These checks read the source: every raise site of a
per-method error names the declarations of the method it serves, every declaration is raised
somewhere, the API description documents exactly the declared ones, and nothing outside
common/errors.py builds an RpcError by hand.  The wire values themselves are pinned below
against the original's (rpc.md) through the real method handlers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange_server.api.registry import http_methods, ws_methods
from exchange_server.common import errors
from exchange_server.common.config import default_matchengine_data, load_matchengine
from exchange_server.common.errors import (
    METHOD_ERRORS,
    MethodErrors,
    PutLimit,
    RpcError,
    errors_of,
)
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.methods import MatchEngineMethods

PACKAGE = Path(errors.__file__).resolve().parents[1]
CLASSES: dict[str, type[MethodErrors]] = {c.__name__: c for c in METHOD_ERRORS}

#: The function that raises a method's own errors, by method (found by name anywhere in the
#: package, so the check survives a module moving).
RAISERS: dict[str, tuple[str, ...]] = {
    "update_balance": ("balance.update",),
    "put_limit": ("order.put_limit",),
    "put_limit_quiet": ("order.put_limit",),  # a replayed put_limit: its checks and codes
    "_market": ("order.put_market",),
    "cancel": ("order.cancel",),
    "cancel_batch": ("order.cancel",),  # per-order results with order.cancel's codes
    "put_stop": ("order.put_stop_limit", "order.put_stop_market"),
    "cancel_stop": ("order.cancel_stop",),
    "auth": ("server.auth",),
    "sign": ("server.sign",),
}


def sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def functions() -> Iterator[tuple[Path, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for path, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path, node


def declared_refs(func: ast.AST) -> set[tuple[str, str]]:
    """(class, attribute) of every ``PutLimit.FILL_OR_KILL``-like reference in ``func``; a
    local alias (``errors = PutStopLimit if ... else PutStopMarket``) stands for its classes."""
    aliases: dict[str, set[str]] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            names = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
            if names & CLASSES.keys():
                aliases[node.targets[0].id] = names & CLASSES.keys()
    refs: set[tuple[str, str]] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owners = aliases.get(node.value.id) or ({node.value.id} & CLASSES.keys())
            refs |= {(owner, node.attr) for owner in owners}
    return refs


def raise_sites() -> dict[str, set[tuple[str, str]]]:
    """Function name -> the declarations it references (functions referencing none left out)."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path, func in functions():
        if path.name == "errors.py" and path.parent.name == "common":
            continue
        refs = declared_refs(func)
        if refs:
            found.setdefault(func.name, set()).update(refs)
    return found


def test_every_raise_site_uses_its_own_methods_declarations() -> None:
    sites = raise_sites()
    assert set(sites) == set(RAISERS), "a function raising per-method errors is not in RAISERS"
    for name, refs in sites.items():
        expected = {cls.__name__ for cls in METHOD_ERRORS if set(cls.methods) & set(RAISERS[name])}
        assert {owner for owner, _ in refs} == expected, name
        for owner, attr in refs:
            assert isinstance(getattr(CLASSES[owner], attr, None), errors.ErrorCode), \
                f"{name}: {owner}.{attr} is not declared"


def test_one_raise_site_for_several_methods_means_the_same_codes() -> None:
    for name, refs in raise_sites().items():
        for _, attr in refs:
            owners = {owner for owner, a in refs if a == attr}
            codes = {getattr(CLASSES[o], attr).code for o in owners}
            assert len(codes) == 1, f"{name}: {attr} has codes {codes} across {owners}"


def test_every_declared_error_is_raised_somewhere() -> None:
    raised = set().union(*raise_sites().values())
    for cls in METHOD_ERRORS:
        for attr, value in vars(cls).items():
            if isinstance(value, errors.ErrorCode):
                assert (cls.__name__, attr) in raised, f"{cls.__name__}.{attr} is never raised"


def test_the_api_documents_exactly_the_declared_errors() -> None:
    documented = {**http_methods(), **ws_methods()}
    for cls in METHOD_ERRORS:
        for method in cls.methods:
            assert method in documented, f"{cls.__name__}: {method} is not an API method"
    for name, method in documented.items():
        own = [e for e in method.errors if e.code >= 10]
        if method.forwards:
            assert own == [e for e in errors_of(method.forwards) if e.code >= 10], name
            continue
        assert tuple(sorted(own, key=lambda e: e.code)) == errors_of(name), name
        for e in method.errors:
            if e.code < 10:
                assert e.message.startswith(errors.GENERIC_MESSAGES[e.code]), (name, e)


def test_no_rpc_error_is_built_outside_the_declarations() -> None:
    for path, tree in sources():
        if path.name == "errors.py" and path.parent.name in ("common", "client"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "RpcError", f"{path}:{node.lineno}: RpcError built by hand"


def test_no_module_holds_a_shared_error_instance() -> None:
    factories = {"invalid_argument", "internal_error", "service_unavailable", "method_not_found",
                 "service_timeout", "require_authentication", "invalid_argument_because"}
    for path, tree in sources():
        for node in tree.body:
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            if not isinstance(value, ast.Call):
                continue
            func = value.func
            called = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            assert called not in factories | {"RpcError", "saying"} \
                and not (isinstance(func, ast.Attribute) and func.attr.isupper()), \
                f"{path}:{node.lineno}: a module-level error instance"


def test_a_declaration_raises_a_fresh_instance() -> None:
    first, second = PutLimit.FILL_OR_KILL(), PutLimit.FILL_OR_KILL()
    assert first is not second
    assert (first.code, first.message) == (12, "can't be completely executed, kill the order")


# -- the wire values, through the real handlers (rpc.md and extensions.md) -----------------------

@pytest.fixture
def methods() -> MatchEngineMethods:
    engine = Engine.from_config(load_matchengine(default_matchengine_data(), embedded=True))
    handlers = MatchEngineMethods(engine)
    handlers.balance_update(0.0, [1, "BTC", "deposit", 1, "100", {}])
    handlers.balance_update(0.0, [1, "BCH", "deposit", 2, "100000", {}])
    handlers.balance_update(0.0, [2, "BTC", "deposit", 3, "100", {}])
    return handlers


def refused(call: object, *args: object) -> tuple[int, str]:
    assert callable(call)
    with pytest.raises(RpcError) as e:
        call(1.0, *args)
    return e.value.code, e.value.message


def test_fill_or_kill_is_12_for_a_limit_order_and_13_for_a_market_order(
        methods: MatchEngineMethods) -> None:
    methods.order_put_limit(1.0, [2, "BTCBCH", 1, "1", "100", "0", "0", "s"])  # a resting ask
    fok = 0x10
    assert refused(methods.order_put_limit, [1, "BTCBCH", 2, "5", "100", "0", "0", "s", None,
                                             None, fok]) \
        == (12, "can't be completely executed, kill the order")
    assert refused(methods.order_put_market, [1, "BTCBCH", 2, "50000", "0", "s", None, None,
                                              fok]) \
        == (13, "can't be completely executed, kill the order")
    assert refused(methods.order_put_limit, [1, "BTCBCH", 2, "1", "100", "0", "0", "s", None,
                                             None, 0x80]) \
        == (13, "the order may be executed, kill the order")


def test_method_specific_codes_on_the_wire(methods: MatchEngineMethods) -> None:
    assert refused(methods.balance_update, [1, "BTC", "deposit", 1, "1", {}]) \
        == (10, "repeat update")
    assert refused(methods.balance_update, [1, "BTC", "withdraw", 9, "-1000", {}]) \
        == (11, "balance not enough")
    assert refused(methods.order_put_market, [1, "BTCBCH", 1, "1", "0", "s"]) \
        == (12, "no enough trader")
    assert refused(methods.order_put_limit, [1, "BTCBCH", 1, "1000", "1", "0", "0", "s"]) \
        == (10, "balance not enough")
    assert refused(methods.order_cancel, [1, "BTCBCH", 999]) == (10, "order not found")
    assert refused(methods.order_cancel_stop, [1, "BTCBCH", 999]) == (10, "order not found")
    order_id = methods.order_put_limit(1.0, [2, "BTCBCH", 1, "1", "100", "0", "0", "s"]).id
    assert refused(methods.order_cancel, [1, "BTCBCH", order_id]) == (11, "user not match")
    assert refused(methods.order_put_stop_limit, [1, "BTCBCH", 2, "1", "90", "100", "0", "0",
                                                  "s", None, None]) \
        == (11, "invalid stop price")
    methods.config_suspend_market(1.0, ["BTCBCH"])
    assert refused(methods.order_put_limit, [1, "BTCBCH", 2, "1", "1", "0", "0", "s"]) \
        == (30, "market suspended")
