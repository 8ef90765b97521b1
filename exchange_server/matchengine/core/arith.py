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
from functools import wraps
from typing import ParamSpec, TypeVar

from exchange_server.common.decimals import CONTEXT

__all__ = ["CONTEXT", "engine_context"]

P = ParamSpec("P")
R = TypeVar("R")


def engine_context(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with ``CONTEXT`` as the thread's decimal context, then restore it.

    Nested entry points (one wrapped method calling another) see ``CONTEXT`` already installed
    and skip the swap.  ``getcontext``/``setcontext`` are faster than ``decimal.localcontext``,
    which copies the context on every entry.
    """
    from decimal import getcontext, setcontext

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

    return wrapper
