"""The matching engine's core imports nothing impure (Structure issue, item 7).

Why: replay rebuilds the engine by feeding it the logged commands again, which is only sound if
the core is a deterministic function of them: no I/O, clock, randomness, logging, threads or
ambient decimal context.  The core's imports are walked with :mod:`ast` (every ``import`` and
``from ... import``, wherever written), and every name it uses from :mod:`decimal` is checked
too (``getcontext``, ``setcontext`` and ``localcontext`` reach the thread's context).
"""

from __future__ import annotations

import ast
import decimal
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import AssetConfig, MarketConfig
from exchange_server.common.decimals import CONTEXT
from exchange_server.matchengine.core.engine import Engine
from exchange_server.matchengine.core.model import ASK, BID
from tests.support.server import REPO

CORE = REPO / "exchange_server" / "matchengine" / "core"
CORE_PACKAGE = "exchange_server.matchengine.core"

#: Pure standard-library modules and the third-party ones the core may import.
ALLOWED_MODULES = frozenset({
    "__future__", "collections", "collections.abc", "dataclasses", "decimal", "enum",
    "typing", "sortedcontainers",
})
#: Project modules outside the core that the core may import.
ALLOWED_PROJECT = frozenset({"exchange_server.common.decimals", "exchange_server.common.errors"})
#: Names of :mod:`decimal` that reach the thread's ambient context.
AMBIENT_DECIMAL = frozenset({"getcontext", "setcontext", "localcontext", "DefaultContext"})
#: Helpers of ``common.decimals`` that install a context in the thread.
AMBIENT_HELPERS = frozenset({"use_engine_context"})


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


def ambient_decimal_uses(tree: ast.AST) -> list[tuple[str, int]]:
    """``decimal.getcontext()``-style attribute uses and ``from decimal import getcontext``."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
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
    bad = [f"{path.name}:{line}: decimal.{name}" for name, line in ambient_decimal_uses(tree)]
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


def test_the_check_allows_the_core_and_its_pure_dependencies() -> None:
    source = ("from . import model\nfrom .balance import Balances\nimport decimal\n"
              "from sortedcontainers import SortedDict\n"
              "from exchange_server.common.decimals import ZERO\n")
    assert not [m for m, _ in imported(ast.parse(source), CORE_PACKAGE) if refused(m)]


def _session() -> tuple[list[Any], list[Any], Any]:
    """A few trades whose products need more than 28 digits, then the engine's output."""
    assets = [AssetConfig("AAA", 24, 24), AssetConfig("BBB", 24, 24)]
    markets = [MarketConfig("AAABBB", "AAA", "BBB", 12, 12, 12, Decimal("0.000000000001"))]
    engine = Engine(assets, markets)
    market = engine.markets["AAABBB"]
    for user in (1, 2):
        engine.update_balance(0.0, user, "AAA", "deposit", user, Decimal("98765432.1"), {})
        engine.update_balance(0.0, user, "BBB", "deposit", user, Decimal("987654321987.5"), {})
    fee = Decimal("0.000123456789")
    for i in range(1, 6):
        price = Decimal(f"1234.56789012345{i}")
        amount = Decimal(f"77.12345678901{i}")
        engine.put_limit(float(i), market, 1, ASK, amount, price, fee, fee, "t")
        engine.put_limit(float(i), market, 2, BID, CONTEXT.multiply(amount, 2), price, fee, fee,
                         "t")
    engine.put_market(9.0, market, 1, ASK, Decimal("3.333333333333"), fee, "t")
    state = engine.dump_state()
    return engine.take_events(), state.balances, (market.ask_amount, market.bid_amount,
                                                  market.depth(BID, 10, Decimal("0.7")))


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
