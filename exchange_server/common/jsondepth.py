"""How deeply a JSON value nests, measured without recursion.

Why: a value nested a thousand levels deep is cheap to send and expensive to accept.  Python's
encoders recurse, so such a value makes the operation-log encoder, the history writer or a
replay fail with RecursionError long after the request was answered.  Every service therefore
refuses params nested deeper than ``MAX_JSON_DEPTH`` with code 1 before touching any state.

Depth counts containers on the deepest path of one param: a scalar is 0, ``[]`` and ``{}``
are 1, ``{"a": [1]}`` is 2.  The params array itself does not count.
"""

from __future__ import annotations

from typing import Any

from exchange_server.common.errors import invalid_argument_because

#: Default limit for one param's nesting (docs/compatibility.md, "Parameters and validation").
MAX_JSON_DEPTH = 32


def json_depth(value: Any, stop_after: int | None = None) -> int:
    """Containers on the deepest path of ``value``; stops counting past ``stop_after``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if stop_after is not None and deepest > stop_after:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def too_deep(params: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when any element of ``params`` nests deeper than ``limit``."""
    if isinstance(params, list | tuple):
        return any(json_depth(p, limit) > limit for p in params)
    return json_depth(params, limit) > limit


def check_params_depth(params: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse with code 1 params that nest deeper than ``limit``."""
    if too_deep(params, limit):
        raise invalid_argument_because(f"params nested deeper than {limit}")
