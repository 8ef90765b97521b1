"""Restart: newest slice + replay of the log after it gives back exactly the state before.

Run in-process on both stores: a trading session, a slice taken by a forked child in the middle,
more operations, then a second service restores from the same store and must hold the same
orders (every field, source and times included), balances, counters and dedup window.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable
from typing import Any

import pytest

from exchange_server.common.errors import RpcError
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import EngineStore
from tests.integration.test_methods import config, engine_store  # noqa: F401 - fixture

Fingerprint = dict[str, Any]


def fingerprint(engine: Engine) -> Fingerprint:
    state = engine.dump_state()
    return {
        "order_id": state.order_id,
        "deal_id": state.deal_id,
        "orders": [
            tuple(str(getattr(o, f)) for f in o.__slots__) for o in state.orders
        ],
        "balances": sorted((u, a, k, str(v)) for u, a, k, v in state.balances),
        "updates": sorted(state.updates),
    }


async def trade(service: MatchEngineService, rng: random.Random, n: int, start_bid: int) -> None:
    users = [1, 2, 3, 4]
    bid = start_bid
    for user in users:
        for asset, amount in (("BTC", "100"), ("BCH", "100000"), ("USDT", "100000")):
            bid += 1
            service.execute("balance.update", [user, asset, "deposit", bid, amount, {"n": bid}])
    for _ in range(n):
        user = rng.choice(users)
        market = rng.choice(["BTCBCH", "BTCUSDT"])
        side = rng.choice([1, 2])
        r = rng.random()
        try:
            if r < 0.6:
                price = f"{rng.randint(9500, 10500) / 100:.2f}"
                amount = f"{rng.randint(1, 300) / 100:.2f}"
                service.execute("order.put_limit", [user, market, side, amount, price, "0.002",
                                                    "0.001", f"src{user}"])
            elif r < 0.7:
                service.execute("order.put_market", [user, market, side, "0.5", "0.002", "mkt"])
            elif r < 0.9:
                service.execute("order.cancel", [user, market, rng.randint(1, service.engine.order_id + 1)])
            else:
                bid += 1
                service.execute("balance.update", [user, "BTC", "withdraw", bid, "-0.01", {}])
        except RpcError:
            pass
    await service.flush()


async def test_slice_and_replay_restore_exact_state(
        engine_store: Callable[[], EngineStore]) -> None:  # noqa: F811
    rng = random.Random(7)
    clock = iter(1_790_000_000 + i * 0.001 for i in range(10**9))
    store = engine_store()
    store.open()
    service = MatchEngineService(config(), store, clock=lambda: next(clock))
    service.restore()
    await service.start()
    await trade(service, rng, 400, 0)
    await service.make_slice_now()
    first = store.latest_slice()
    assert first is not None and first.end_oper_id == service.oper_id
    await trade(service, rng, 400, 10_000)
    expected = fingerprint(service.engine)
    assert expected["orders"], "the session should leave open orders"
    await service.stop(final_slice=False)
    store.close()

    store2 = engine_store()
    store2.open()
    restored = MatchEngineService(config(), store2, clock=lambda: next(clock))
    restored.restore()
    assert restored.restored_from == first
    assert restored.replayed > 0
    assert fingerprint(restored.engine) == expected
    assert restored.oper_id == service.oper_id
    # the dedup window survived: an old business id is still refused
    with pytest.raises(RpcError) as e:
        restored.execute("balance.update", [1, "BTC", "deposit", 1, "100", {"n": 1}])
    assert e.value.code == 10
    store2.close()


async def test_a_startup_restore_freezes_the_slice_before_the_replay(
        engine_store: Callable[[], EngineStore]) -> None:  # noqa: F811
    """``freeze_loaded``: the orders a slice brought are out of every collector generation
    before the log is replayed (the replay's first young collection walked all of them), and
    the state is the same; without it (a promotion inside a running process) nothing is
    frozen."""
    rng = random.Random(5)
    store = engine_store()
    store.open()
    service = MatchEngineService(config(), store)
    service.restore()
    await service.start()
    await trade(service, rng, 300, 0)
    await service.make_slice_now()
    await trade(service, rng, 100, 10_000)
    expected = fingerprint(service.engine)
    await service.stop(final_slice=False)
    store.close()

    store2 = engine_store()
    store2.open()
    plain = MatchEngineService(config(), store2)
    frozen_before = gc.get_freeze_count()
    plain.restore()
    assert gc.get_freeze_count() == frozen_before
    assert fingerprint(plain.engine) == expected
    store2.close()

    store3 = engine_store()
    store3.open()
    restored = MatchEngineService(config(), store3)
    try:
        restored.restore(freeze_loaded=True)
        assert restored.restored_from is not None and restored.replayed > 0
        assert fingerprint(restored.engine) == expected
        sliced = {id(order) for market in restored.engine.markets.values()
                  for order in market.orders.values()
                  if order.id <= restored.restored_from.end_order_id}
        assert sliced, "the slice should hold open orders still open after the replay"
        tracked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
        assert not sliced & tracked
    finally:
        gc.unfreeze()
        store3.close()


async def test_replay_without_slice_and_clean_stop_slice(
        engine_store: Callable[[], EngineStore]) -> None:  # noqa: F811
    rng = random.Random(11)
    store = engine_store()
    store.open()
    service = MatchEngineService(config(), store)
    service.restore()
    await service.start()
    await trade(service, rng, 300, 0)
    expected = fingerprint(service.engine)
    await service.stop(final_slice=False)
    store.close()

    # no slice at all: the whole log is replayed
    store2 = engine_store()
    store2.open()
    replayed = MatchEngineService(config(), store2)
    replayed.restore()
    assert replayed.restored_from is None
    assert fingerprint(replayed.engine) == expected
    await replayed.start()
    await replayed.stop()  # clean stop writes a slice covering everything
    store2.close()

    store3 = engine_store()
    store3.open()
    third = MatchEngineService(config(), store3)
    third.restore()
    assert third.replayed == 0
    assert fingerprint(third.engine) == expected
    store3.close()


async def test_replies_wait_for_the_log(engine_store: Callable[[], EngineStore]) -> None:  # noqa: F811
    """A reply is only released once its operation is durable; reads computed after an
    undurable write wait too."""
    store = engine_store()
    store.open()
    service = MatchEngineService(config(), store)
    service.restore()
    await service.start()
    body = await service.call("balance.update", [1, "BTC", "deposit", 1, "1", {}], 1)
    assert b'"success"' in body
    assert store.last_oper_id() == 1  # durable before the reply came back
    await service.stop(final_slice=False)
    store.close()
