"""The matching engine's core imports nothing impure (Structure issue, item 7).

Why: replay rebuilds the engine by feeding it the logged commands again, which is only sound if
the core is a deterministic function of them: no I/O, clock, randomness, logging, threads or
ambient decimal context.  The core's imports are walked with :mod:`ast` (every ``import`` and
``from ... import``, wherever written), and every name it uses from :mod:`decimal` is checked
too (``getcontext``, ``setcontext`` and ``localcontext`` reach the thread's context).  The one
exception is the body of ``engine_context`` in ``core/arith.py``, which installs the engine's own
context around every public entry point so that the core can use plain operators; the hostile
thread context test below fails if any entry point the session uses lacks it.
"""

from __future__ import annotations

import ast
import decimal
import inspect
import textwrap
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from exchange_server.common.config import AssetConfig, MarketConfig
from exchange_server.common.decimals import CONTEXT
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.core.arith import WRAPPED_MARK
from exchange_server.matchengine.core.engine import Engine
from exchange_server.matchengine.core.market import Market
from exchange_server.matchengine.core.model import ASK, BID, LIMIT
from tests.support.server import REPO

CORE = REPO / "exchange_server" / "matchengine" / "core"
CORE_PACKAGE = "exchange_server.matchengine.core"

#: Pure standard-library modules and the third-party ones the core may import.
ALLOWED_MODULES = frozenset({
    "__future__", "collections", "collections.abc", "dataclasses", "decimal", "enum",
    "functools", "itertools", "operator", "typing", "sortedcontainers",
})
#: Project modules outside the core that the core may import.
ALLOWED_PROJECT = frozenset({"exchange_server.common.decimals", "exchange_server.common.errors"})
#: Names of :mod:`decimal` that reach the thread's ambient context.
AMBIENT_DECIMAL = frozenset({"getcontext", "setcontext", "localcontext", "DefaultContext"})
#: Helpers of ``common.decimals`` that install a context in the thread.
AMBIENT_HELPERS = frozenset({"use_engine_context"})
#: The one function of the core allowed to swap the thread's context: (file, function name).
CONTEXT_HELPER = ("arith.py", "engine_context")


def imported(tree: ast.AST, package: str) -> list[tuple[str, int]]:
    """Every module an ast imports, with its line (relative imports resolved in ``package``)."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.append((base, node.lineno))
    return out


def refused(module: str) -> bool:
    if module == CORE_PACKAGE or module.startswith(CORE_PACKAGE + "."):
        return False
    return module not in ALLOWED_MODULES and module not in ALLOWED_PROJECT


def ambient_decimal_uses(tree: ast.AST, exempt: str | None = None) -> list[tuple[str, int]]:
    """``decimal.getcontext()``-style attribute uses and ``from decimal import getcontext``,
    outside the body of the module-level function named ``exempt``."""
    out: list[tuple[str, int]] = []
    skip = {id(node) for top in getattr(tree, "body", [])
            if isinstance(top, ast.FunctionDef) and top.name == exempt
            for node in ast.walk(top)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "decimal":
            out += [(alias.name, node.lineno) for alias in node.names
                    if alias.name in AMBIENT_DECIMAL]
        elif isinstance(node, ast.ImportFrom) and node.module == "exchange_server.common.decimals":
            out += [(alias.name, node.lineno) for alias in node.names
                    if alias.name in AMBIENT_HELPERS]
        elif (isinstance(node, ast.Attribute) and node.attr in AMBIENT_DECIMAL
              and isinstance(node.value, ast.Name) and node.value.id == "decimal"):
            out.append((node.attr, node.lineno))
    return out


def core_files() -> list[Path]:
    files = sorted(CORE.glob("*.py"))
    assert {p.name for p in files} >= {"engine.py", "market.py", "balance.py", "model.py"}
    return files


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.name)
def test_the_core_imports_only_pure_modules(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [f"{path.name}:{line}: {module}" for module, line in imported(tree, CORE_PACKAGE)
           if refused(module)]
    assert not bad, "impure imports in the core:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.name)
def test_the_core_uses_no_ambient_decimal_context(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    exempt = CONTEXT_HELPER[1] if path.name == CONTEXT_HELPER[0] else None
    bad = [f"{path.name}:{line}: decimal.{name}"
           for name, line in ambient_decimal_uses(tree, exempt)]
    assert not bad, "ambient decimal context in the core:\n" + "\n".join(bad)


@pytest.mark.parametrize("source", [
    "import time", "import os.path", "from random import random", "import logging",
    "import asyncio", "from exchange_server.common.config import Node",
    "from exchange_server.matchengine.service import MatchEngineService",
    "from ...common import config", "def f():\n    import socket",
])
def test_the_check_refuses_impure_imports(source: str) -> None:
    modules = imported(ast.parse(source), CORE_PACKAGE)
    assert modules and any(refused(module) for module, _ in modules)


@pytest.mark.parametrize("source", [
    "from decimal import localcontext", "import decimal\ndecimal.getcontext().prec = 3",
    "import decimal\ndecimal.setcontext(decimal.Context())",
    "from exchange_server.common.decimals import use_engine_context",
])
def test_the_check_refuses_ambient_decimal_context(source: str) -> None:
    assert ambient_decimal_uses(ast.parse(source))


def test_the_helper_is_the_only_exemption() -> None:
    helper = ("def engine_context(f):\n    from decimal import getcontext, setcontext\n"
              "    return f\n")
    assert not ambient_decimal_uses(ast.parse(helper), "engine_context")
    assert ambient_decimal_uses(ast.parse(helper), "other")
    outside = helper + "from decimal import localcontext\n"
    assert ambient_decimal_uses(ast.parse(outside), "engine_context") == [("localcontext", 4)]
    nested = "class C:\n" + "".join("    " + line + "\n" for line in helper.splitlines())
    assert ambient_decimal_uses(ast.parse(nested), "engine_context")


def test_the_helper_exists_and_touches_the_context() -> None:
    path = CORE / CONTEXT_HELPER[0]
    uses = {name for name, _ in ambient_decimal_uses(ast.parse(path.read_text()))}
    assert {"getcontext", "setcontext"} <= uses  # else the exemption is dead


def test_the_check_allows_the_core_and_its_pure_dependencies() -> None:
    source = ("from . import model\nfrom .balance import Balances\nimport decimal\n"
              "from sortedcontainers import SortedDict\n"
              "from exchange_server.common.decimals import ZERO\n")
    assert not [m for m, _ in imported(ast.parse(source), CORE_PACKAGE) if refused(m)]


def _session() -> tuple[list[Any], list[Any], Any]:
    """A few trades whose products need more than 28 digits, then the engine's output.

    Every core entry point that does arithmetic runs at least once on such numbers (deposits
    and withdrawals, limit, market and stop orders, the cancels, the depth, a slice reloaded
    into a fresh engine), so each one computes wrongly in a hostile thread if it does not
    install the engine's context."""
    assets = [AssetConfig("AAA", 24, 24), AssetConfig("BBB", 24, 24)]
    markets = [MarketConfig("AAABBB", "AAA", "BBB", 12, 12, 12, Decimal("0.000000000001"))]
    engine = Engine(assets, markets)
    market = engine.markets["AAABBB"]
    for user in (1, 2, 3):
        engine.update_balance(0.0, user, "AAA", "deposit", user, Decimal("98765432.1"), {})
        engine.update_balance(0.0, user, "BBB", "deposit", user, Decimal("987654321987.5"), {})
    engine.update_balance(0.0, 3, "BBB", "deposit", 4, Decimal("0.123456789123"), {})
    engine.update_balance(0.0, 3, "AAA", "withdraw", 5, Decimal("-0.987654321987"), {})
    fee = Decimal("0.000123456789")
    for i in range(1, 6):
        price = Decimal(f"1234.56789012345{i}")
        amount = Decimal(f"77.12345678901{i}")
        engine.put_limit(float(i), market, 1, ASK, amount, price, fee, fee, "t")
        engine.put_limit(float(i), market, 2, BID, CONTEXT.multiply(amount, 2), price, fee, fee,
                         "t")
    engine.put_market(9.0, market, 1, ASK, Decimal("3.333333333333"), fee, "t")
    _cancels(engine, market, fee)
    state = engine.dump_state()
    reloaded = Engine(assets, markets)
    reloaded.load_state(state)
    again = reloaded.markets["AAABBB"]
    return engine.take_events(), state.balances, (
        market.ask_amount, market.bid_amount, market.depth(BID, 10, Decimal("0.7")),
        again.ask_amount, again.bid_amount, reloaded.dump_state().balances)


def _cancels(engine: Engine, market: Market, fee: Decimal) -> None:
    """Orders and stops of user 3 away from the market, cancelled every way there is."""
    price, amount = Decimal("1.234567890123"), Decimal("7.123456789123")
    ids = [engine.put_limit(10.0, market, 3, BID, amount, price, fee, fee, "t").id
           for _ in range(4)]
    engine.cancel(11.0, market, 3, ids[0])
    engine.cancel_batch(11.0, market, 3, [ids[1]])
    engine.cancel_all(11.0, market, 3, BID)
    engine.put_limit(12.0, market, 3, BID, amount, price, fee, fee, "t")  # stays for the slice
    stop_price = Decimal("1.5")
    for _ in range(2):
        stop = engine.put_stop(13.0, market, 3, LIMIT, BID, amount, stop_price, price, fee, fee,
                               "t", 0, "")
    engine.cancel_stop(14.0, market, 3, stop.id)
    engine.cancel_stop_all(14.0, market, 3, BID)
    engine.put_stop(15.0, market, 3, LIMIT, BID, amount, stop_price, price, fee, fee, "t", 0, "")


def _in_thread(context: decimal.Context) -> tuple[list[Any], list[Any], Any]:
    def run() -> tuple[list[Any], list[Any], Any]:
        decimal.setcontext(context)
        result = _session()
        assert decimal.getcontext() is context  # the core installed nothing
        return result
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def test_the_core_computes_the_same_whatever_the_threads_context() -> None:
    hostile = decimal.Context(prec=9, rounding=decimal.ROUND_UP, traps=[])
    expected = _in_thread(CONTEXT.copy())
    assert any(len(str(b[3]).replace(".", "")) > 28 for b in expected[1])  # the test bites
    assert _in_thread(hostile) == expected


#: The core's entry points outside :class:`Engine`: public methods of the book that the service
#: calls directly and that compute (methods.py's order.depth).
OTHER_ENTRY_POINTS = [Market.depth]
#: Public Engine methods that touch no decimal, left unwrapped because they run once per command.
NO_ARITHMETIC = frozenset({"take_events"})


def _engine_entry_points() -> list[Any]:
    return [getattr(Engine, name) for name in dir(Engine)
            if (not name.startswith("_") or name == "__init__") and name not in NO_ARITHMETIC
            and callable(getattr(Engine, name))]


def test_the_unwrapped_methods_touch_no_decimal() -> None:
    """What ``NO_ARITHMETIC`` exempts does no arithmetic, calls nothing and is still there."""
    for name in NO_ARITHMETIC:
        tree = ast.parse(textwrap.dedent(inspect.getsource(getattr(Engine, name))))
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.BinOp, ast.UnaryOp,
                                                                 ast.AugAssign))], name
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert calls <= {"self.events.clear"}, (name, calls)


@pytest.mark.parametrize("function", _engine_entry_points() + OTHER_ENTRY_POINTS,
                         ids=lambda f: f.__qualname__)
def test_every_entry_point_installs_the_engines_context(function: Any) -> None:
    """Also those whose arithmetic the session above cannot reach (admin config, snapshots)."""
    function = getattr(function, "__func__", function)
    assert getattr(function, WRAPPED_MARK, False) is True, (
        f"{function.__qualname__} is not wrapped in core.arith.engine_context")
    assert getattr(function, "__wrapped__", None) is not None


def test_the_callers_context_comes_back_after_a_refused_command() -> None:
    """An entry point that raises still restores the thread's own context."""
    hostile = decimal.Context(prec=9, rounding=decimal.ROUND_UP, traps=[])

    def run() -> tuple[str, bool]:
        decimal.setcontext(hostile)
        engine = Engine([AssetConfig("AAA", 8, 8), AssetConfig("BBB", 8, 8)],
                        [MarketConfig("AAABBB", "AAA", "BBB", 4, 4, 4, Decimal("0.0001"))])
        try:
            engine.cancel(1.0, engine.markets["AAABBB"], 1, 42)
        except RpcError as e:
            return e.message, decimal.getcontext() is hostile
        raise AssertionError("cancelling an unknown order was accepted")

    with ThreadPoolExecutor(1) as pool:
        message, restored = pool.submit(run).result()
    assert message == "order not found"
    assert restored


def test_the_services_engine_leaves_its_context_installed_in_the_building_thread() -> None:
    """The service's engine (matchengine/configured.py), built by ``from_config`` as the service
    builds it, leaves ``CONTEXT`` as the thread's context: the code around the engine computes
    on it, and the core's entry points then find it installed and swap nothing."""
    from exchange_server.matchengine.configured import Engine as ServiceEngine

    config = SimpleNamespace(
        assets=[AssetConfig("AAA", 8, 8), AssetConfig("BBB", 8, 8)],
        markets=[MarketConfig("AAABBB", "AAA", "BBB", 4, 4, 4, Decimal("0.0001"))],
        self_trade_prevention="none")

    def run() -> tuple[bool, bool]:
        decimal.setcontext(decimal.Context())
        engine = ServiceEngine.from_config(config)
        built = decimal.getcontext() is CONTEXT
        engine.cancel_all(1.0, engine.markets["AAABBB"], 1, 0)
        return built, decimal.getcontext() is CONTEXT

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(run).result() == (True, True)
