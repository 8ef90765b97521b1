"""order.put_limit calls the core's put_limit without its context wrapper when the engine's
context is the thread's already (methods.MatchEngineMethods.order_put_limit): the same replies,
events and balances as through the wrapper, whose path a thread with another context takes,
and that thread's context stays its own."""

from __future__ import annotations

import decimal
import random
from typing import Any

from exchange_server.common.config import default_matchengine_data, load_matchengine
from exchange_server.common.decimals import CONTEXT
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import Deal
from exchange_server.matchengine.methods import MatchEngineMethods, present


def _orders(n: int) -> list[list[Any]]:
    rng = random.Random(7)
    return [[rng.randint(1, 5), "BTCBCH", rng.choice([1, 2]), f"{rng.randint(1, 300) / 100:.2f}",
             f"{100 + rng.randint(-20, 20) / 10:.1f}", "0.002", "0.001", "t"] for _ in range(n)]


def _run(context: decimal.Context) -> list[Any]:
    """Every reply (or error), the events and the balances of orders placed with ``context``
    as the thread's (checked to be the thread's again after each order)."""
    engine = Engine.from_config(load_matchengine(default_matchengine_data(), embedded=True))
    methods = MatchEngineMethods(engine)
    for u in range(1, 6):
        methods.balance_update(0.0, [u, "BTC", "deposit", u, "10", {}])
        methods.balance_update(0.0, [u, "BCH", "deposit", u, "1000", {}])
    saved = decimal.getcontext()
    decimal.setcontext(context)
    seen: list[Any] = []
    try:
        for params in _orders(300):
            try:
                seen.append(present(methods.order_put_limit(1_800_000_000.0, params)))
            except RpcError as e:
                seen.append(e.code)
            assert decimal.getcontext() is context
            seen.append(engine.take_events())
    finally:
        decimal.setcontext(saved)
    seen.append(sorted(engine.balances.items()))
    return seen


def test_put_limit_without_the_wrapper_is_put_limit_through_it() -> None:
    direct = _run(CONTEXT)
    assert direct == _run(decimal.Context(prec=5, rounding=decimal.ROUND_UP))
    assert sum(type(e) is Deal for events in direct[1::2] for e in events) > 50  # they traded
