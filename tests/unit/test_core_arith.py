"""core.arith.engine_context: the wrapper it generates with the function's own parameters
behaves as the function (positional and keyword calls, defaults, errors), runs it in the
engine's context and gives the caller's context back."""

from __future__ import annotations

import decimal
import inspect
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from exchange_server.common.decimals import CONTEXT
from exchange_server.matchengine.core.arith import WRAPPED_MARK, engine_context
from exchange_server.matchengine.core.engine import Engine

SEEN: list[Any] = []


def _place(a: int, b: Decimal, c: str = "x", d: list[int] | None = None) -> tuple[Any, ...]:
    """The wrapped function: what it was given, and the context it ran in."""
    SEEN.append(decimal.getcontext())
    return a, b, c, d


def _variadic(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
    SEEN.append(decimal.getcontext())
    return args, kwargs


def _in_hostile_context(call: Callable[[], Any]) -> tuple[Any, bool]:
    """``call()`` with a foreign context installed: its result, and whether that context is
    installed again afterwards."""
    saved = decimal.getcontext()
    hostile = decimal.Context(prec=5)
    decimal.setcontext(hostile)
    try:
        try:
            result = call()
        except Exception as e:  # noqa: BLE001 - the test compares the error
            result = e
        return result, decimal.getcontext() is hostile
    finally:
        decimal.setcontext(saved)


@pytest.mark.parametrize("function", [_place, _variadic], ids=["generated", "generic"])
def test_the_function_runs_in_the_engines_context_and_the_callers_comes_back(
        function: Callable[..., Any]) -> None:
    wrapped = engine_context(function)
    SEEN.clear()
    result, restored = _in_hostile_context(lambda: wrapped(1, Decimal("2")))
    assert result == function(1, Decimal("2"))
    assert SEEN[0] is CONTEXT and restored
    assert getattr(wrapped, WRAPPED_MARK) is True and wrapped.__wrapped__ is function  # type: ignore[attr-defined]


def test_the_generated_wrapper_takes_the_functions_keywords_and_defaults() -> None:
    wrapped = engine_context(_place)
    default = [7]
    assert wrapped(1, Decimal(2)) == (1, Decimal(2), "x", None)
    assert wrapped(1, b=Decimal(2), d=default) == (1, Decimal(2), "x", default)
    assert wrapped(c="y", b=Decimal(3), a=4)[2] == "y"
    assert inspect.signature(wrapped) == inspect.signature(_place)
    assert wrapped.__name__ == "_place" and wrapped.__doc__ == _place.__doc__
    with pytest.raises(TypeError):
        wrapped(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        wrapped(1, Decimal(2), e=3)  # type: ignore[call-arg]


def test_an_error_inside_restores_the_callers_context() -> None:
    def fails(a: int) -> None:
        raise ValueError(a)

    error, restored = _in_hostile_context(lambda: engine_context(fails)(5))
    assert isinstance(error, ValueError) and error.args == (5,)
    assert restored


def test_inside_the_engines_context_nothing_is_swapped() -> None:
    SEEN.clear()
    saved = decimal.getcontext()
    decimal.setcontext(CONTEXT)
    try:
        engine_context(_place)(1, Decimal(1))
        assert decimal.getcontext() is CONTEXT and SEEN == [CONTEXT]
    finally:
        decimal.setcontext(saved)


def test_the_engines_entry_points_got_generated_wrappers() -> None:
    """Every entry point of the core has plain parameters, hence the cheaper wrapper (its code
    is generated, not the generic ``*args, **kwargs`` one)."""
    for name in ("put_limit", "put_market", "cancel", "update_balance", "__init__"):
        code = getattr(Engine, name).__code__
        assert code.co_filename.startswith("<engine_context"), name
        assert not code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS), name
