"""marketprice's state loads after its subscription (embedded mode: after the listeners).

Why: the k-lines and deals are needed only by marketprice's own answers, so ``exchange-server
run`` subscribes before the matchengine's restore (a durable consumer) and loads the state once
the listeners take orders.  A request that comes meanwhile must wait for the state, never be
answered from a half-loaded one (an unknown market, an empty k-line, a zero last price).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from exchange_server.bus import InProcessBus
from exchange_server.common.errors import INTERNAL_ERROR
from exchange_server.marketprice.service import MarketPriceService
from exchange_server.marketprice.state import Changes, StoredMarket
from exchange_server.marketprice.store_sqlite import SqliteStore
from tests.support.waiting import wait_until_async

MARKET = "BTCUSDT"


class GatedStore(SqliteStore):
    """A SQLite store whose market loads wait for ``gate`` (``entered`` is set on the first)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.fail = False

    async def load_market(self, name: str) -> StoredMarket:
        self.entered.set()
        await self.gate.wait()
        if self.fail:
            raise OSError("disk gone")
        return await super().load_market(name)


def service_on(store: SqliteStore) -> MarketPriceService:
    return MarketPriceService(InProcessBus(), store, lambda: [MARKET], cache_timeout=0,
                              flush_interval=3600)


async def stored_last(path: Path, last: str) -> None:
    """A marketprice.db whose market has ``last`` as its last price."""
    store = SqliteStore(path)
    await store.open()
    await store.write(Changes(offset=-1, lasts=[(MARKET, last)], markets=[MARKET]))
    await store.close()


async def loading(path: Path, last: str | None) -> tuple[GatedStore, MarketPriceService]:
    """A service whose state load has begun and is held in the store (``last``: a stored last
    price first)."""
    if last is not None:
        await stored_last(path, last)
    store = GatedStore(path)
    service = service_on(store)
    await service.subscribe()
    service.load_soon()
    await store.entered.wait()
    return store, service


async def test_a_request_during_the_load_waits_for_the_loaded_state(tmp_path: Path) -> None:
    store, service = await loading(tmp_path, "101.5")
    reply = asyncio.create_task(service.call("market.last", [MARKET], 1))
    await wait_until_async(lambda: not service.is_loaded and store.entered.is_set())
    for _ in range(20):  # the request is served only once the state is there
        await asyncio.sleep(0)
    assert not reply.done()
    store.gate.set()
    assert orjson.loads(await reply) == {"error": None, "result": "101.5", "id": 1}
    assert service.is_loaded
    await service.stop()


async def test_a_request_before_the_load_has_begun_waits_for_it(tmp_path: Path) -> None:
    """Between the subscription and ``load_soon`` (``exchange-server run`` starts its other
    listeners in between) a request waits too, instead of answering from an empty state."""
    await stored_last(tmp_path, "42")
    store = GatedStore(tmp_path)
    store.gate.set()
    service = service_on(store)
    await service.subscribe()
    reply = asyncio.create_task(service.call("market.last", [MARKET], 4))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not reply.done()
    service.load_soon()
    assert orjson.loads(await reply) == {"error": None, "result": "42", "id": 4}
    await service.stop()


async def test_a_failed_load_answers_internal_errors_and_fails_loaded(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    store.fail = True
    store.gate.set()
    service = service_on(store)
    await service.subscribe()
    service.load_soon()
    reply = orjson.loads(await service.call("market.last", [MARKET], 2))
    assert reply["result"] is None and reply["error"]["code"] == INTERNAL_ERROR
    try:
        await service.loaded()
    except OSError as e:
        assert "disk gone" in str(e)
    else:
        raise AssertionError("loaded() returned after a failed load")
    await service.stop()


async def test_stop_during_the_load_cancels_it_and_stores_nothing(tmp_path: Path) -> None:
    _, service = await loading(tmp_path, "7")
    await service.stop()
    assert not service.is_loaded
    again = service_on(SqliteStore(tmp_path))
    await again.start()
    assert orjson.loads(await again.call("market.last", [MARKET], 3))["result"] == "7"
    await again.stop()
