"""The core computes on the engine's own decimal context, never the calling thread's.

Why: Decimal operators round with the calling thread's context, so an engine driven from a
thread that never installed the 60-digit ROUND_DOWN context (``common.decimals.CONTEXT``) would
round sums and products differently.  Calling ``CONTEXT.add`` & co. for every operation cost the
matching loop about 6% of its orders/s, so instead every public entry point of the core is
wrapped in :func:`engine_context`, which installs ``CONTEXT`` for the duration of one command and
restores the caller's context afterwards; inside, the core uses plain ``+ - * /`` and unary
``-``.  ``quantize`` and ``to_integral_value`` still get ``CONTEXT`` explicitly.

This is the only place in the core allowed to touch the thread's context
(tests/unit/test_core_purity.py checks that).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper, wraps
from typing import Any, ParamSpec, TypeVar, cast

from exchange_server.common.decimals import CONTEXT

__all__ = ["CONTEXT", "WRAPPED_MARK", "engine_context"]

P = ParamSpec("P")
R = TypeVar("R")

#: the attribute (True) that says a function is an ``engine_context`` wrapper (checked by
#: tests/unit/test_core_purity.py: every entry point of the core has one)
WRAPPED_MARK = "engine_context_wrapper"
#: code flags of a function taking ``*args`` / ``**kwargs`` (inspect.CO_VARARGS, CO_VARKEYWORDS)
_VARIADIC = 0x04 | 0x08
#: the names a generated wrapper's body uses besides its parameters
_WRAPPER_NAMES = frozenset({"_getcontext", "_setcontext", "_CONTEXT", "_function", "_defaults",
                            "_saved"})


def engine_context(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with ``CONTEXT`` as the thread's decimal context, then restore it.

    Nested entry points (one wrapped method calling another) see ``CONTEXT`` already installed
    and skip the swap.  ``getcontext``/``setcontext`` are faster than ``decimal.localcontext``,
    which copies the context on every entry.

    Why the wrapper is generated with the function's own parameters (when it has only plain
    ones, as every entry point of the core): a ``*args, **kwargs`` wrapper packs a tuple and a
    dict on every call and unpacks them again, about 1,800 instructions, against about 1,000
    for this one; every command (and every replayed operation) goes through one."""
    from decimal import getcontext, setcontext

    code = getattr(function, "__code__", None)
    names = code.co_varnames[:code.co_argcount] if code is not None else ()
    if (code is None or code.co_flags & _VARIADIC or code.co_kwonlyargcount
            or _WRAPPER_NAMES & set(names)):
        @wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            saved = getcontext()
            if saved is CONTEXT:
                return function(*args, **kwargs)
            setcontext(CONTEXT)
            try:
                return function(*args, **kwargs)
            finally:
                setcontext(saved)

        setattr(wrapper, WRAPPED_MARK, True)
        return wrapper
    namespace: dict[str, Any] = {
        "_getcontext": getcontext, "_setcontext": setcontext, "_CONTEXT": CONTEXT,
        "_function": function, "_defaults": function.__defaults__ or ()}
    exec(compile(_wrapper_source(names, len(namespace["_defaults"])),  # noqa: S102
                 f"<engine_context {function.__qualname__}>", "exec"), namespace)
    wrapper = update_wrapper(namespace["wrapper"], function)
    setattr(wrapper, WRAPPED_MARK, True)
    return cast(Callable[P, R], wrapper)


def _wrapper_source(names: tuple[str, ...], defaults: int) -> str:
    """The source of ``engine_context``'s wrapper for a function of plain parameters ``names``,
    the last ``defaults`` of them with defaults (the function's own default objects)."""
    first_default = len(names) - defaults
    params = ", ".join(name if i < first_default else f"{name}=_defaults[{i - first_default}]"
                       for i, name in enumerate(names))
    args = ", ".join(names)
    return (f"def wrapper({params}):\n"
            f"    _saved = _getcontext()\n"
            f"    if _saved is _CONTEXT:\n"
            f"        return _function({args})\n"
            f"    _setcontext(_CONTEXT)\n"
            f"    try:\n"
            f"        return _function({args})\n"
            f"    finally:\n"
            f"        _setcontext(_saved)\n")
