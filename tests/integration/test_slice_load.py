"""The fast slice load is the slow one, exactly: same book, same checks.

Why: a restart loads the newest slice in bulk (``orders_from_rows``: each distinct decimal text
parsed once, the checksum taken from the stored texts; ``Market.load_book``: each side's sorted
map built in one sort).  Those shortcuts must neither change what is loaded (level order, time
priority, user order, totals, decimal exponents) nor let a changed order row through.
"""

from __future__ import annotations

import copy
import random
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from exchange_server.common.config import default_matchengine_data, load_matchengine
from exchange_server.matchengine import slicedoc
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.engine import EngineState
from exchange_server.matchengine.core.market import Market
from exchange_server.matchengine.core.model import ASK, BID, LIMIT, Order
from exchange_server.matchengine.store import EngineStore, SliceInfo, StoreError
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from tests.integration.test_store import assert_same_state, make_state
from tests.support.sql import execute as sql_execute
from tests.unit.test_slicedoc import document_of, format_2

T = 1_700_000_123


def engine() -> Engine:
    return Engine.from_config(load_matchengine(default_matchengine_data(), embedded=True))


def book_orders(n: int, seed: int) -> list[Order]:
    """Resting orders in id order; equal prices written differently ("100.1", "100.10") share
    a level, as they do when placed one by one."""
    rng = random.Random(seed)
    orders = []
    for oid in range(1, n + 1):
        side = rng.choice([ASK, BID])
        cents = rng.randint(1, 300)
        price = Decimal(f"{100 + cents / 100 if side == ASK else 100 - cents / 100:.2f}")
        if rng.random() < 0.3:
            price = Decimal(f"{price}0")
        amount = Decimal(rng.randint(1, 10_000)).scaleb(-3)
        orders.append(Order(id=oid, market="BTCBCH", source="t", type=LIMIT, side=side,
                            user=rng.randint(1, 50), ctime=1.5 * oid, mtime=2.5 * oid,
                            price=price, amount=amount, taker_fee=Decimal("0.002"),
                            maker_fee=Decimal("0.001"), left=amount))
    return orders


def book_shape(market: Market) -> dict[str, Any]:
    """Everything the book holds, with reprs (exponents) and insertion orders."""
    def side(book: Any) -> list[Any]:
        return [(repr(price), list(level)) for price, level in book.items()]
    return {
        "asks": side(market.asks), "bids": side(market.bids), "orders": list(market.orders),
        "users": [(user, list(orders)) for user, orders in market.users.items()],
        "counts": (market.ask_count, market.bid_count),
        "amounts": (repr(market.ask_amount), repr(market.bid_amount)),
        "best": (market.best_ask().id if market.best_ask() else None,  # type: ignore[union-attr]
                 market.best_bid().id if market.best_bid() else None),  # type: ignore[union-attr]
    }


def test_bulk_book_load_equals_one_by_one_insertion() -> None:
    orders = book_orders(3000, seed=7)
    one_by_one = engine()
    for user in range(1, 51):
        one_by_one.balances.add(user, "BTC", Decimal(10**6))
        one_by_one.balances.add(user, "BCH", Decimal(10**9))
    for order in orders:
        one_by_one.markets["BTCBCH"].put(order)  # freezes its funds, then inserts
    one_by_one.order_id = len(orders)
    bulk = engine()
    state = copy.deepcopy(one_by_one.dump_state())  # its own order objects
    assert bulk.load_state(state) == []
    assert book_shape(bulk.markets["BTCBCH"]) == book_shape(one_by_one.markets["BTCBCH"])
    # matching on the loaded book then goes as on the original one
    for e in (one_by_one, bulk):
        e.balances.add(99, "BTC", Decimal(10**6))
        e.balances.add(99, "BCH", Decimal(10**9))
        e.put_limit(10.0**6, e.markets["BTCBCH"], 99, BID, Decimal("500"), Decimal("101.5"),
                    Decimal("0.002"), Decimal("0.001"), "t")
    assert one_by_one.take_events() == bulk.take_events()
    assert book_shape(bulk.markets["BTCBCH"]) == book_shape(one_by_one.markets["BTCBCH"])


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def slice_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EngineStore]:
    store: EngineStore
    if request.param == "sqlite":
        store = SqliteEngineStore(tmp_path / "data")
    else:
        store = MysqlEngineStore(request.getfixturevalue("mysql_config")("test_slice_load"))
    store.open()
    yield store
    store.close()


def damage_first_order(store: EngineStore, order: Order) -> None:
    """Change one digit of the first order's price where the store keeps its exact text."""
    changed = str(order.price + 1)
    if isinstance(store, SqliteEngineStore):
        slice_sql(store, f"UPDATE slice_order_{T} SET price = %s WHERE id = %s",
                  (changed, order.id))
        return
    ((exact,),) = slice_sql(store, f"SELECT exact FROM slice_order_{T} WHERE id = %s",
                            (order.id,))
    parts = exact.split(" ")
    parts[0] = changed
    slice_sql(store, f"UPDATE slice_order_{T} SET exact = %s WHERE id = %s",
              (" ".join(parts), order.id))


def slice_sql(store: EngineStore, sql: str, args: Any = ()) -> list[Any]:
    """Run one statement on the store's slice database, committed; its rows."""
    if isinstance(store, SqliteEngineStore):
        return sql_execute(store.slice_path, sql, args)
    assert isinstance(store, MysqlEngineStore)
    return sql_execute(store.cfg, sql, args)


def damage_document(store: EngineStore) -> None:
    """Flip one bit of the slice document's first chunk (its stored checksum unchanged)."""
    ((data,),) = slice_sql(store, f"SELECT data FROM slice_state_{T} WHERE id = 1")
    data = bytes(data)
    slice_sql(store, f"UPDATE slice_state_{T} SET data = %s WHERE id = 1",
              (data[:20] + bytes([data[20] ^ 1]) + data[21:],))


def published_slice(store: EngineStore, state: EngineState) -> SliceInfo:
    info = SliceInfo(T, 10, state.order_id, state.deal_id)
    store.write_slice_data(info, state)
    store.publish_slice(info)
    published = store.latest_slice()
    assert published is not None
    return published


def test_a_changed_order_row_is_a_damaged_slice(slice_store: EngineStore) -> None:
    """The tables' own check (the path of a slice without its document: written before it,
    or with the document damaged)."""
    state = make_state(seed=3, orders=500, balances=10, updates=5)
    published = published_slice(slice_store, state)
    slice_sql(slice_store, f"DROP TABLE slice_state_{T}")
    slice_store.read_slice(published)  # intact: loads
    first = min(state.orders, key=lambda o: o.id)
    damage_first_order(slice_store, first)
    with pytest.raises(StoreError, match="damaged"):
        slice_store.read_slice(published)


def test_a_damaged_document_loads_the_tables_instead(
        slice_store: EngineStore, caplog: pytest.LogCaptureFixture) -> None:
    state = make_state(seed=5, orders=400, balances=30, updates=5)
    published = published_slice(slice_store, state)
    from_document = slice_store.read_slice(published)
    assert not caplog.records
    damage_document(slice_store)
    from_tables = slice_store.read_slice(published)
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert f"slice_state_{T}: chunk 1 is damaged" in record.getMessage()
    assert "loading the slice from its tables instead" in record.getMessage()
    assert_same_state(from_tables, from_document)
    assert_same_state(from_document, state)


def test_a_damaged_document_and_a_changed_row_is_a_damaged_slice(
        slice_store: EngineStore) -> None:
    state = make_state(seed=6, orders=300, balances=10, updates=5)
    published = published_slice(slice_store, state)
    damage_document(slice_store)
    damage_first_order(slice_store, min(state.orders, key=lambda o: o.id))
    with pytest.raises(StoreError, match=f"slice {T} .* is damaged"):
        slice_store.read_slice(published)


def test_editing_the_tables_does_not_change_a_slice_with_its_document(
        slice_store: EngineStore) -> None:
    """The document is what a restart reads (documented: operators' edits to the tables have
    no effect while it is there)."""
    state = make_state(seed=8, orders=200, balances=10, updates=5)
    published = published_slice(slice_store, state)
    damage_first_order(slice_store, min(state.orders, key=lambda o: o.id))
    assert_same_state(slice_store.read_slice(published), state)


def engine_shape(e: Engine) -> dict[str, Any]:
    """Every field of every resting order, each market's book (level keys with their
    exponents, time priority inside a level), its user index (each user's orders in time
    priority), counts, amounts, and every balance account (available and frozen, exponents)."""
    markets = {}
    for name, market in e.markets.items():
        markets[name] = {
            **book_shape(market),
            "users": {user: list(orders) for user, orders in market.users.items()},
            "fields": {oid: tuple(repr(getattr(o, f)) for f in Order.__slots__)
                       for oid, o in market.orders.items()},
            "last": repr(market.last),
        }
    return {"markets": markets, "order_id": e.order_id, "deal_id": e.deal_id,
            "accounts": {key: [repr(v) for v in account]
                         for key, account in e.balances.accounts.items()},
            "updates": dict(e.updates)}


async def test_a_bulk_restored_engine_is_the_one_built_by_replay(tmp_path: Path) -> None:
    """The slice load (document -> columns -> ``OrderColumns.orders`` -> ``load_book`` /
    ``Balances.load``) gives, field by field, the engine a replay of the whole log builds:
    a trading session with fills, cancels and withdrawals on two markets."""
    from exchange_server.matchengine.service import MatchEngineService
    from tests.integration.test_methods import config
    from tests.integration.test_restore import trade

    rng = random.Random(11)
    clock = iter(1_790_000_000 + i * 0.001 for i in range(10**9))
    store = SqliteEngineStore(tmp_path / "data")
    store.open()
    live = MatchEngineService(config(), store, clock=lambda: next(clock))
    live.restore()
    await live.start()
    await trade(live, rng, 3000, 0)
    await live.make_slice_now()
    await live.stop(final_slice=False)
    store.close()
    assert sum(len(m.orders) for m in live.engine.markets.values()) > 300

    def restored(from_slice: bool) -> MatchEngineService:
        again = SqliteEngineStore(tmp_path / "data")
        again.open()
        if not from_slice:  # no slice: every operation replayed
            again.latest_slice = lambda: None  # type: ignore[method-assign]
            again.list_slices = lambda: []  # type: ignore[method-assign]
        service = MatchEngineService(config(), again)
        service.restore()
        again.close()
        return service

    loaded, replayed = restored(True), restored(False)
    assert loaded.replayed == 0 and replayed.replayed == live.oper_id
    assert engine_shape(loaded.engine) == engine_shape(replayed.engine)
    assert engine_shape(loaded.engine) == engine_shape(live.engine)


MARKETS = ("BTCBCH", "LTCBCH", "ETHBCH", "ZECBCH")


def restored_shape(e: Engine) -> dict[str, Any]:
    """``engine_shape`` with each level's key compared by value: a level is keyed by the price
    object of the order that opened it, which may have left the book since (its text "97.010"
    while the orders still there say "97.01"); a slice holds orders, not level keys, so a
    restart keys the level by its first remaining order's price, as placing those orders one
    by one does (``test_bulk_book_load_equals_one_by_one_insertion``).  Prices are compared
    exactly as the orders' fields."""
    shape = engine_shape(e)
    for name, market in e.markets.items():
        shape["markets"][name]["asks"] = [(p, list(level)) for p, level in market.asks.items()]
        shape["markets"][name]["bids"] = [(p, list(level)) for p, level in market.bids.items()]
    return shape


def trading_engine(orders: int, seed: int) -> Engine:
    """An engine after ``orders`` limit orders on four markets from 40 users: prices that
    cross (partial fills, so amounts left, frozen and dealt differ from the placed ones),
    equal prices written with other exponents, both kinds of order object (with and without
    options and client ids), some orders cancelled."""
    rng = random.Random(seed)
    e = engine()
    for user in range(1, 41):
        for asset in ("BCH", "BTC", "LTC", "ETH", "ZEC"):
            e.balances.add(user, asset, Decimal(10**9))
    for i in range(orders):
        market = e.markets[rng.choice(MARKETS)]
        side = rng.choice([ASK, BID])
        cents = rng.randint(-150, 300)  # asks from 98.50, bids up to 101.50: they cross
        price = Decimal(f"{100 + cents / 100 if side == ASK else 100 - cents / 100:.2f}")
        if rng.random() < 0.3:
            price = Decimal(f"{price}0")
        extended = rng.random() < 0.5
        e.put_limit(1_790_000_000 + i * 0.001, market, rng.randint(1, 40), side,
                    Decimal(rng.randint(1, 10_000)).scaleb(-3), price, Decimal("0.002"),
                    Decimal("0.001"), rng.choice(["web", "app", ""]),
                    option=rng.choice([0, 0x400]) if extended else 0,
                    client_id=rng.choice(["", "c-1", "客户"]) if extended else None)
        if rng.random() < 0.1 and market.orders:
            victim = market.orders[rng.choice(list(market.orders))]
            e.cancel(1_790_000_000 + i * 0.001, market, victim.user, victim.id)
    e.take_events()
    return e


def test_many_orders_on_several_markets_load_exactly(slice_store: EngineStore) -> None:
    """A slice of thousands of open orders on four markets (written and read through the
    store: its document), loaded into a fresh engine, is the engine it was taken from: every
    field of every order, each book's levels and time priority, the user indexes, counts,
    amounts, balances, the next order and deal ids."""
    live = trading_engine(6000, seed=21)
    assert all(len(live.markets[name].orders) > 300 for name in MARKETS)
    state = live.dump_state()
    info = published_slice(slice_store, state)
    read = slice_store.read_slice(info)
    assert read.order_columns is not None  # the document's path, columns and all
    loaded = engine()
    assert loaded.load_state(read) == []
    assert restored_shape(loaded) == restored_shape(live)
    assert (loaded.order_id, loaded.deal_id) == (live.order_id, live.deal_id) != (0, 0)
    # the loaded books trade on as the original ones
    for e in (live, loaded):
        for name in MARKETS:
            e.put_limit(1_800_000_000.0, e.markets[name], 7, BID, Decimal("50"),
                        Decimal("101.5"), Decimal("0.002"), Decimal("0.001"), "t")
    assert live.take_events() == loaded.take_events()
    assert restored_shape(loaded) == restored_shape(live)


def test_an_old_document_on_several_markets_loads_exactly(slice_store: EngineStore) -> None:
    """The same through a format 2 document (as main wrote them before format 3, which a
    restart after the upgrade reads), stored in place of the new one."""
    live = trading_engine(3000, seed=22)
    state = live.dump_state()
    info = published_slice(slice_store, state)
    old = format_2(document_of(slicedoc.encode(state, info.checksum)))
    data = zlib.compress(orjson.dumps(old))
    slice_sql(slice_store, f"DELETE FROM slice_state_{T}")
    slice_sql(slice_store, f"INSERT INTO slice_state_{T} (id, checksum, data) VALUES (1, %s, %s)",
              (zlib.crc32(data), data))
    loaded = engine()
    assert loaded.load_state(slice_store.read_slice(info)) == []
    assert restored_shape(loaded) == restored_shape(live)
