"""Restart with the fork's extensions: pending stops (frozen funds, trigger lists), orders'
options and client ids, markets' last prices and suspension, and assets and markets added at
run time come back exactly, from a slice (round trip on both stores), from the log alone
(crash), and from a slice plus the log after it; and the restored engine fires exactly the
stops the original would have."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from exchange_server.common.errors import RpcError
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import EngineStore, SliceInfo
from tests.integration.test_methods import engine_store  # noqa: F401 - fixture
from tests.support.ext_support import Ex, config, fingerprint

DOGE = {"name": "DOGE", "prec_save": 12, "prec_show": 8}
DOGEBCH = {"name": "DOGEBCH", "stock": {"name": "DOGE", "prec": 4},
           "money": {"name": "BCH", "prec": 8}, "fee_prec": 3, "min_amount": "1"}


def random_requests(rng: random.Random, n: int, start_bid: int) -> list[tuple[str, list[Any]]]:
    """Deposits, then a mix of every write: orders with options, stops, cancels of all kinds,
    runtime config."""
    users = [1, 2, 3, 4]
    out: list[tuple[str, list[Any]]] = []
    bid = start_bid
    for user in users:
        for asset, amount in (("BTC", "100"), ("BCH", "100000"), ("USDT", "100000")):
            bid += 1
            out.append(("balance.update", [user, asset, "deposit", bid, amount, {"n": bid}]))
    for i in range(n):
        user = rng.choice(users)
        market = rng.choice(["BTCBCH", "BTCUSDT"])
        side = rng.choice([1, 2])
        price = f"{rng.randint(9500, 10500) / 100:.2f}"
        amount = f"{rng.randint(1, 300) / 100:.2f}"
        r = rng.random()
        option = rng.choice([0, 0, 0x08, 0x10, 0x80, 0x200, 0x300, 0x100])
        if r < 0.35:
            out.append(("order.put_limit", [user, market, side, amount, price, "0.002", "0.001",
                                            f"src{user}", None, None, option, f"c{i}"]))
        elif r < 0.45:
            out.append(("order.put_limit", [user, market, side, amount, price, "0.002", "0.001",
                                            "plain"]))
        elif r < 0.5:
            out.append(("order.put_market", [user, market, side, "0.5" if side == 1 else "50",
                                             "0.002", "mkt", None, None, option & 0x310]))
        elif r < 0.62:
            stop = f"{rng.randint(9500, 10500) / 100:.2f}"
            out.append(("order.put_stop_limit", [user, market, side, amount, stop, price,
                                                 "0.002", "0.001", "stop", None, None,
                                                 option & 0x308, f"s{i}"]))
        elif r < 0.7:
            stop = f"{rng.randint(9500, 10500) / 100:.2f}"
            out.append(("order.put_stop_market", [user, market, side,
                                                  amount if side == 1 else "30", stop, "0.002",
                                                  "stopm", None, None]))
        elif r < 0.78:
            out.append(("order.cancel", [user, market, rng.randint(1, 10 + i)]))
        elif r < 0.82:
            out.append(("order.cancel_stop", [user, market, rng.randint(1, 10 + i)]))
        elif r < 0.84:
            out.append(("order.cancel_all", [user, market, rng.choice([0, 1, 2])]))
        elif r < 0.86:
            out.append(("order.cancel_stop_all", [user, market]))
        elif r < 0.88:
            out.append(("order.cancel_batch", [user, market,
                                               [rng.randint(1, 10 + i) for _ in range(3)]]))
        elif r < 0.9:
            out.append((rng.choice(["config.suspend_market", "config.resume_market",
                                    "config.resume_market"]), [market]))
        elif r < 0.92:
            mc = {"name": market, "stock": {"name": "BTC", "prec": 8},
                  "money": {"name": market[3:], "prec": 8 if market == "BTCBCH" else 2},
                  "fee_prec": rng.choice([3, 4]), "min_amount": rng.choice(["0.001", "0.01"])}
            out.append(("config.update_market", [mc]))
        else:
            bid += 1
            out.append(("balance.update", [user, "BTC", "withdraw", bid, "-0.01", {}]))
    return out


def run(service: MatchEngineService, requests: list[tuple[str, list[Any]]]) -> int:
    accepted = 0
    for method, params in requests:
        try:
            service.execute(method, params)
            accepted += 1
        except RpcError:
            pass
    return accepted


def opening(service: MatchEngineService) -> None:
    """Runtime config and a first deal in both markets (stops need a last price)."""
    service.execute("config.update_asset", [DOGE])
    service.execute("config.update_market", [DOGEBCH])
    for user, asset, amount in ((90, "BTC", "1"), (91, "BCH", "1000"), (91, "USDT", "1000"),
                                (90, "DOGE", "100")):
        service.execute("balance.update", [user, asset, "deposit", 10**9 + user + len(asset),
                                           amount, {}])
    for market in ("BTCBCH", "BTCUSDT"):
        service.execute("order.put_limit", [90, market, 1, "0.01", "100", "0", "0", "o"])
        service.execute("order.put_limit", [91, market, 2, "0.01", "100", "0", "0", "o"])
    service.execute("order.put_limit", [90, "DOGEBCH", 1, "10", "0.5", "0", "0", "o"])


def pending_stops(engine: Engine) -> int:
    return sum(len(m.stops) for m in engine.markets.values())


def new_service(store: EngineStore) -> MatchEngineService:
    clock = iter(1_790_000_000 + i * 0.001 for i in range(10**9))
    return MatchEngineService(config(), store, clock=lambda: next(clock))


async def test_slice_round_trip_with_stops_and_runtime_config(
        engine_store: Callable[[], EngineStore]) -> None:  # noqa: F811
    store = engine_store()
    store.open()
    service = new_service(store)
    service.restore()
    opening(service)
    run(service, random_requests(random.Random(5), 400, 0))
    service.execute("config.suspend_market", ["DOGEBCH"])
    engine = service.engine
    assert pending_stops(engine) >= 5
    assert any(o.client_id for m in engine.markets.values() for o in m.orders.values())
    assert any(o.client_id is None for m in engine.markets.values() for o in m.orders.values())
    state = engine.dump_state()
    info = SliceInfo(1_790_000_123, service.oper_id, engine.order_id, engine.deal_id)
    store.write_slice_data(info, state)
    store.publish_slice(info)
    loaded = Engine.from_config(config())
    assert loaded.load_state(store.read_slice(info)) == []
    assert fingerprint(loaded) == fingerprint(engine)
    store.delete_slice(info)
    store.close()


async def test_crash_and_replay_with_pending_stops(
        engine_store: Callable[[], EngineStore]) -> None:  # noqa: F811
    """A slice in the middle, more operations, a crash (no final slice): slice + log rebuild
    the same state, and the same next command fires the same stops."""
    rng = random.Random(17)
    store = engine_store()
    store.open()
    service = new_service(store)
    service.restore()
    await service.start()
    opening(service)
    run(service, random_requests(rng, 300, 0))
    await service.flush()
    await service.make_slice_now()
    run(service, random_requests(rng, 300, 10_000))
    await service.flush()
    expected = fingerprint(service.engine)
    assert expected["stops"], "the session should leave pending stops"
    await service.stop(final_slice=False)
    store.close()

    store2 = engine_store()
    store2.open()
    restored = new_service(store2)
    restored.restore()
    assert restored.restored_from is not None and restored.replayed > 0
    assert fingerprint(restored.engine) == expected

    # the same sweep of the book in both engines fires the same stops the same way
    def sweep(service: MatchEngineService) -> list[Any]:
        events: list[Any] = []
        for method, params in [
            ("balance.update", [7, "BTC", "deposit", 77, "1000", {}]),
            ("balance.update", [7, "BCH", "deposit", 78, "10000000", {}]),
            ("order.put_limit", [7, "BTCBCH", 1, "300", "90", "0", "0", "sweep"]),
            ("order.put_limit", [7, "BTCBCH", 2, "600", "110", "0", "0", "sweep"]),
        ]:
            try:
                service.execute(method, params)
            except RpcError:
                pass
            events.append(service._pending_events[-1][1] if service._pending_events else None)
        return events

    service2 = new_service(engine_store())
    service2.engine = Engine.from_config(config())  # a replica of the pre-crash engine:
    service2.engine.load_state(service.engine.dump_state())
    from exchange_server.matchengine.methods import MatchEngineMethods

    service2.methods = MatchEngineMethods(service2.engine)
    assert fingerprint(service2.engine) == expected
    a, b = sweep(restored), sweep(service2)
    assert a == b
    from exchange_server.matchengine.core.model import StopChanged

    assert sum(isinstance(e, StopChanged) and e.event == 2 for ev in a if ev for e in ev) >= 3
    assert fingerprint(restored.engine) == fingerprint(service2.engine)
    store2.close()


async def test_replay_of_the_whole_log_matches_the_live_engine(
        engine_store: Callable[[], EngineStore]) -> None:  # noqa: F811
    store = engine_store()
    store.open()
    service = new_service(store)
    service.restore()
    await service.start()
    opening(service)
    run(service, random_requests(random.Random(23), 500, 0))
    expected = fingerprint(service.engine)
    await service.stop(final_slice=False)
    store.close()
    store2 = engine_store()
    store2.open()
    replayed = new_service(store2)
    replayed.restore()
    assert replayed.restored_from is None
    assert fingerprint(replayed.engine) == expected
    store2.close()


def test_slice_without_the_new_tables_still_loads(tmp_path: Any) -> None:
    """A slice written before the extensions (no slice_stop / slice_config tables, no option
    and client_id columns) loads: orders come back as orders of the original's layout."""
    import sqlite3

    from exchange_server.matchengine.store_sqlite import SqliteEngineStore

    ex = Ex()
    ex.deposit(1, "BTC", "10")
    ex.limit(1, 1, "1", "100")
    store = SqliteEngineStore(tmp_path)
    store.open()
    info = SliceInfo(100, 3, ex.engine.order_id, ex.engine.deal_id)
    store.write_slice_data(info, ex.engine.dump_state())
    store.publish_slice(info)
    db = sqlite3.connect(tmp_path / "slices.sqlite")
    db.execute("DROP TABLE slice_stop_100")
    db.execute("DROP TABLE slice_config_100")
    db.execute("ALTER TABLE slice_order_100 DROP COLUMN option")
    db.execute("ALTER TABLE slice_order_100 DROP COLUMN client_id")
    db.commit()
    db.close()
    loaded = Engine.from_config(config())
    assert loaded.load_state(store.read_slice(info)) == []
    assert fingerprint(loaded) == fingerprint(ex.engine)
    store.delete_slice(info)
    store.close()


def test_restore_warns_about_runtime_config_the_config_file_contradicts() -> None:
    """A market added at run time whose asset the config file no longer has: skipped with a
    warning (like orders of unknown markets), the rest loads."""
    ex = Ex()
    ex.call("config.update_asset", DOGE)
    ex.call("config.update_market", DOGEBCH)
    state = ex.engine.dump_state()
    state.config = [c for c in state.config if c[0] != "asset"]
    loaded = Engine.from_config(config())
    warnings = loaded.load_state(state)
    assert len(warnings) == 1 and "DOGEBCH" in warnings[0]
    assert "DOGEBCH" not in loaded.markets
