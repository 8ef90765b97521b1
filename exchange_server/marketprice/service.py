"""The marketprice service: k-lines, last price, status and recent deals from ``deals``.

Life cycle (``start``): open the store, take the market list (a callable: accesshttp
``market.list`` in production, the matchengine's markets in embedded mode) plus the markets
the store has seen in deals, load their state, then consume ``deals`` from the stored offset
+ 1.  ``start`` is ``subscribe`` (store, market list, durable subscription) then ``load``
(the state); ``exchange-server run`` subscribes before the matchengine's restore and loads
after its listeners (``load_soon``: requests wait for the state meanwhile).  Every
``flush_interval`` (1 s; the original: 10 s) the changes and the offset of the last consumed
message are committed in one store transaction, then the offset is committed to
the bus (which, in embedded mode, lets the publisher's durable mark advance).  After a crash
the state therefore matches the stored offset exactly; deals that the publisher sent twice
(at-least-once after its own restart) carry a deal id not above the last one applied and are
skipped.

Markets added to the matchengine at run time (config.update_market) are picked up from the
market list, asked again every ``market_refresh_interval`` seconds (60), or with their first
deal, whichever comes first.

Retention (sec_max / min_max / hour_max): buckets past it are dropped from memory every
hour (and at load) and deleted from the store in the next flush, in the same transaction;
day buckets are kept forever.

``call(method, params, req_id)`` answers the five methods of rpc.md 6 with the reply body, as
MatchEngineService.call does.  kline / status / status_today answers are cached for
``cache_timeout`` seconds (0.45) per (method, params), like the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import tzinfo
from typing import Any

import orjson

from exchange_server.bus.base import DEALS, BusReader, Subscription
from exchange_server.common import jsonfmt
from exchange_server.common.decimals import fmt_raw, use_engine_context
from exchange_server.common.errors import RpcError, internal_error, invalid_argument, method_not_found
from exchange_server.common.jsondepth import check_params_depth
from exchange_server.marketprice import query
from exchange_server.marketprice.localtime import LocalTime
from exchange_server.marketprice.markets import MarketSource, get_markets
from exchange_server.marketprice.state import DEALS_MAX, MarketData, MarketState, Retention
from exchange_server.marketprice.store import MarketStore

log = logging.getLogger("exchange_server.marketprice")

U64 = 2**64
#: Whole reply cache dropped this often (seconds), as the original.
CACHE_CLEAR_INTERVAL = 60.0
#: Most bytes of cached market.kline replies (a reply has up to 20,160 rows, ~1.6 MB); past it
#: the kline cache is emptied.
KLINE_CACHE_BYTES = 64 * 1024 * 1024

Params = list[Any]


def _int(value: Any) -> int:
    if type(value) is not int:
        raise invalid_argument()
    return value


class MarketPriceService:
    def __init__(self, reader: BusReader, store: MarketStore, markets: MarketSource, *,
                 retention: Retention | None = None, cache_timeout: float = 0.45,
                 debug: bool = False, flush_interval: float = 1.0,
                 cleanup_interval: float = 3600.0, tz: tzinfo | None = None,
                 clock: Callable[[], float] = time.time, topic: str = DEALS,
                 durable_name: str = "marketprice",
                 market_refresh_interval: float = 60.0) -> None:
        use_engine_context()
        self.reader = reader
        self.store = store
        self.market_source = markets
        self.retention = retention or Retention()
        self.cache_timeout = cache_timeout
        self.debug = debug
        self.flush_interval = flush_interval
        self.cleanup_interval = cleanup_interval
        self.local = LocalTime(tz)
        self.clock = clock
        self.topic = topic
        self.durable_name = durable_name
        self.market_refresh_interval = market_refresh_interval
        self.data = MarketData(self.local, self.retention)
        self._subscription: Subscription | None = None
        #: the market list taken by subscribe(); loaded by load()
        self._names: list[str] = []
        self._loading: asyncio.Task[None] | None = None
        #: made by subscribe(), settled by load(): what every request waits on until then
        #: (one made only by load_soon() would let a request in between answer from nothing)
        self._ready: asyncio.Future[None] | None = None
        self._loaded = False
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}
        self._cache_cleared = time.monotonic()
        self._progress = asyncio.Event()
        self.flushes = 0
        self.methods: dict[str, Callable[[Params], Any]] = {
            "market.status": self.market_status,
            "market.kline": self.market_kline,
            "market.deals": self.market_deals,
            "market.last": self.market_last,
            "market.status_today": self.market_status_today,
        }
        self._cached = {"market.status", "market.kline", "market.status_today"}
        #: market.kline replies (the encoded rows) by params: (time, text)
        self._kline_cache: dict[str, tuple[float, bytes]] = {}
        self._kline_cache_bytes = 0

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, then load the state and consume (standalone: both before it serves)."""
        await self.subscribe()
        await self.load()

    async def subscribe(self) -> None:
        """Open the store, take the market list and register the durable subscription from
        the stored offset + 1, without loading the markets' state.  Why apart from
        :meth:`load`: in embedded mode the subscription must exist before the matchengine's
        restore (the publisher keeps the deals a durable consumer has not stored), but the
        state (k-lines, deals) is needed only by marketprice's own answers, so it is loaded
        after the listeners are up (:meth:`load_soon`), off the first order's path."""
        self._ready = asyncio.get_running_loop().create_future()
        await self.store.open()
        self._names = await get_markets(self.market_source)
        self.data.offset = await self.store.load_offset()
        self._subscription = self.reader.subscribe(self.topic, self.data.offset + 1,
                                                   durable=self.durable_name)

    async def load(self) -> None:
        """Load the state of the listed and the stored markets, then consume and flush;
        requests waiting for the state (:meth:`loaded`) get its outcome."""
        assert self._subscription is not None and self._ready is not None, "subscribe() first"
        try:
            await self._load_markets()
        except asyncio.CancelledError:
            self._ready.cancel()
            raise
        except Exception as e:
            self._ready.set_exception(e)
            self._ready.exception()  # retrieved: the caller of load() has it too
            raise
        self._tasks = [
            asyncio.create_task(self._consume()),
            asyncio.create_task(self._flush_loop()),
            asyncio.create_task(self._cleanup_loop()),
            asyncio.create_task(self._refresh_markets_loop()),
        ]
        self._loaded = True
        self._ready.set_result(None)

    async def _load_markets(self) -> None:
        seen = await self.store.load_market_names()
        now = int(self.clock())
        for name in dict.fromkeys(self._names + seen):
            self.data.load_market(name, await self.store.load_market(name), now)
        log.info("marketprice: %d markets loaded, consuming %s from offset %d",
                 len(self.data.markets), self.topic, self.data.offset + 1)

    def load_soon(self) -> None:
        """Start :meth:`load` as a task; every request waits for it (:meth:`loaded`)."""
        self._loading = asyncio.create_task(self.load())

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    async def loaded(self) -> None:
        """Return once the state is loaded; raise what the load raised.  Why: a request
        answered from a half-loaded state would be wrong (a market unknown, k-lines empty)."""
        if self._ready is not None:
            await asyncio.shield(self._ready)

    async def stop(self, flush: bool = True) -> None:
        """Stop consuming; ``flush=False`` leaves unflushed changes unstored (a crash).  A
        load still running is cancelled, and a state never loaded is not flushed (nothing was
        consumed; what the load dropped past retention is dropped again next time)."""
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loading
            self._loading = None
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()  # never loaded: nothing waits for a state that cannot come
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if flush and self._loaded:
            await self.flush()
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None
        await self.store.close()

    async def flush(self) -> bool:
        """Commit what changed since the last flush; False if the store failed (retried)."""
        async with self._flush_lock:
            changes = self.data.take_changes()
            if changes is None:
                return True
            try:
                await self.store.write(changes)
            except Exception as e:
                log.error("marketprice flush failed (retried in %.1f s): %s", self.flush_interval, e)
                self.data.put_back(changes)
                return False
            self.flushes += 1
            if changes.offset >= 0 and self._subscription is not None:
                self._subscription.commit(changes.offset)
            return True

    async def wait_offset(self, offset: int, timeout: float = 10.0) -> None:
        """Wait until the message at ``offset`` has been consumed (tests, tools)."""
        deadline = time.monotonic() + timeout
        while self.data.offset < offset:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"marketprice at offset {self.data.offset}, waiting for {offset}")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def _consume(self) -> None:
        assert self._subscription is not None
        subscription = self._subscription
        apply = self.data.apply
        while True:
            batch = await subscription.next_batch(1000)
            if not batch:
                return
            for msg in batch:
                try:
                    apply(msg)
                except Exception:
                    # fatal level (alerted), once per message: never a silent skip
                    log.critical("deals message at offset %d cannot be applied, skipped",
                                 msg.offset, exc_info=True)
            self._progress.set()
            await asyncio.sleep(0)

    async def _flush_loop(self) -> None:
        """Flushes until stopped: one failing flush (a store error is retried by ``flush``
        itself; anything else is a bug) is alerted and never ends the loop, which would stop
        marketprice from storing and committing for good."""
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:
                log.critical("marketprice flush failed", exc_info=True)

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            dropped = self.data.cleanup(int(self.clock()))
            if dropped:
                log.info("marketprice: %d buckets past retention dropped", dropped)

    async def _refresh_markets_loop(self) -> None:
        """Markets added at run time: known before their first deal."""
        while True:
            await asyncio.sleep(self.market_refresh_interval)
            await self.refresh_markets()

    async def refresh_markets(self) -> int:
        """Ask the market list again; new markets are added (empty).  Returns how many."""
        try:
            names = await get_markets(self.market_source)
        except Exception as e:
            log.warning("marketprice: market list refresh failed: %s", e)
            return 0
        added = [n for n in names if n not in self.data.markets]
        for name in added:
            self.data.add_market(name, record=True)
        if added:
            log.info("marketprice: new markets %s", ", ".join(added))
        return len(added)

    # -- requests ---------------------------------------------------------------------------------

    async def call(self, method: str, params: Params, req_id: int | None) -> bytes:
        try:
            if not self._loaded:
                await self._until_loaded()
            if method == "market.kline" and not self.debug:
                return await self._kline_reply(params, req_id)
            if method == "market.deals" and not self.debug:
                # the deals are kept as their JSON texts: joined, not parsed and re-encoded
                check_params_depth(params)
                texts = self._run(self._deal_texts, params)
                return jsonfmt.reply_text("[" + ", ".join(texts) + "]", req_id)
            result = self.execute(method, params)
            return jsonfmt.reply_body(result, req_id, self.debug)
        except RpcError as e:
            return jsonfmt.error_body(e.code, e.message, req_id, self.debug)

    async def _until_loaded(self) -> None:
        """Wait for the state (:meth:`loaded`); a load that failed is an internal error."""
        try:
            await self.loaded()
        except Exception:
            raise internal_error() from None

    def execute(self, method: str, params: Params) -> Any:
        handler = self.methods.get(method)
        if handler is None:
            raise method_not_found()
        check_params_depth(params)
        if method not in self._cached or self.cache_timeout <= 0:
            return self._run(handler, params)
        now = time.monotonic()
        self._clear_cache_when_due(now)
        key = method + "\0" + jsonfmt.dumps(params)
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] <= self.cache_timeout:
            return hit[1]
        result = self._run(handler, params)
        self._cache[key] = (now, result)
        return result

    def _clear_cache_when_due(self, now: float) -> None:
        if now - self._cache_cleared >= CACHE_CLEAR_INTERVAL:
            self._cache.clear()
            self._kline_cache.clear()
            self._kline_cache_bytes = 0
            self._cache_cleared = now

    async def _kline_reply(self, params: Params, req_id: int | None) -> bytes:
        """market.kline's reply, its rows built and encoded a chunk at a time with the event
        loop running in between (the same text as ``reply_body``); the encoded rows are cached
        ``cache_timeout`` seconds, at most KLINE_CACHE_BYTES of them."""
        check_params_depth(params)  # before anything walks them (the cache key)
        now = time.monotonic()
        self._clear_cache_when_due(now)
        key = jsonfmt.dumps(params)
        hit = self._kline_cache.get(key)
        if hit is not None and now - hit[0] <= self.cache_timeout:
            text = hit[1]
        else:
            text = await self._kline_text(params)
            if self.cache_timeout > 0:
                if self._kline_cache_bytes + len(text) > KLINE_CACHE_BYTES:
                    self._kline_cache.clear()
                    self._kline_cache_bytes = 0
                self._kline_cache[key] = (now, text)
                self._kline_cache_bytes += len(text)
        return b'{"error": null, "result": %s, "id": %s}' % (text, jsonfmt.dumps(req_id).encode())

    async def _kline_text(self, params: Params) -> bytes:
        chunks = self._run(self._kline_chunks, params)
        parts: list[str] = []
        try:
            for rows in chunks:
                if rows:
                    parts.append(jsonfmt.dumps(rows)[1:-1])
                await asyncio.sleep(0)  # the engine and the other clients between chunks
        except Exception:
            log.exception("marketprice request failed: params %r", params)
            raise internal_error() from None
        return ("[" + ", ".join(parts) + "]").encode()

    @staticmethod
    def _run(handler: Callable[[Params], Any], params: Params) -> Any:
        try:
            return handler(params)
        except RpcError:
            raise
        except Exception:
            log.exception("marketprice request failed: params %r", params)
            raise internal_error() from None

    def _market(self, value: Any) -> MarketState:
        if type(value) is not str:
            raise invalid_argument()
        state = self.data.markets.get(value)
        if state is None:
            raise invalid_argument()
        return state

    def _now(self) -> int:
        return int(self.clock())

    def market_last(self, params: Params) -> Any:
        if len(params) != 1:
            raise invalid_argument()
        return fmt_raw(self._market(params[0]).last)

    def market_deals(self, params: Params) -> Any:
        return [orjson.loads(text) for text in self._deal_texts(params)]

    def _deal_texts(self, params: Params) -> list[str]:
        if len(params) != 3:
            raise invalid_argument()
        state = self._market(params[0])
        limit = _int(params[1])
        if limit <= 0 or limit > DEALS_MAX:
            raise invalid_argument()
        last_id = _int(params[2])
        if last_id < 0:
            last_id += U64  # the original reads it as uint64
        return query.deal_texts(state, limit, last_id)

    def market_kline(self, params: Params) -> Any:
        rows: list[Any] = []
        for chunk in self._kline_chunks(params):
            rows += chunk
        return rows

    def _kline_chunks(self, params: Params) -> Iterator[list[list[Any]]]:
        if len(params) != 4:
            raise invalid_argument()
        state = self._market(params[0])
        start = _int(params[1])
        if start <= 0:
            raise invalid_argument()
        end = _int(params[2])
        now = self._now()
        if end > now:
            end = now
        if end <= 0 or start > end:
            raise invalid_argument()
        interval = _int(params[3])
        if not query.valid_interval(interval):
            raise invalid_argument()
        return query.kline_chunks(state, start, end, interval, now, self.retention, self.local)

    def market_status(self, params: Params) -> Any:
        if len(params) != 2:
            raise invalid_argument()
        state = self._market(params[0])
        period = _int(params[1])
        if period <= 0 or period > self.retention.sec_max:
            raise invalid_argument()
        return query.status(state, period, self._now())

    def market_status_today(self, params: Params) -> Any:
        if len(params) != 1:
            raise invalid_argument()
        state = self._market(params[0])
        return query.status_today(state, self._now(), self.local)
