"""marketprice's in-memory state: per market the last price, k-line buckets and recent deals.

``MarketData.apply`` consumes one ``deals`` message (engine.md 16); the deal waits in its
market's ``pending`` list until something reads the market (``MarketState.fold``).  Everything
it changes is remembered as dirty until ``take_changes`` hands it to the store together with
the offset of the last consumed message, so a store commits data and offset in one transaction.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from sortedcontainers import SortedDict

from exchange_server.bus.base import Message
from exchange_server.common.decimals import ZERO, fmt, fmt_raw, parse, use_engine_context
from exchange_server.common.jsonfmt import dumps
from exchange_server.marketprice.kline import Kline
from exchange_server.marketprice.localtime import LocalTime

log = logging.getLogger("exchange_server.marketprice")

#: Recent deals kept per market (memory and store).
DEALS_MAX = 10000

SEC, MIN, HOUR, DAY = 0, 1, 2, 3
#: Store names of the four granularities (Redis ``k:<market>:<kind>``).
KINDS = ("1s", "1m", "1h", "1d")

ASK = 1
BID = 2


@dataclass(frozen=True)
class Retention:
    """How long buckets are kept (config.md marketprice): seconds, minutes, hours."""

    sec_max: int = 86400 * 7
    min_max: int = 60 * 24 * 365
    hour_max: int = 24 * 365 * 10

    def limits(self, now: int) -> tuple[int, int, int]:
        """Oldest bucket start kept for 1s, 1m and 1h buckets at time ``now``."""
        return (now - self.sec_max, now // 60 * 60 - self.min_max * 60,
                now // 3600 * 3600 - self.hour_max * 3600)


#: a deal's time must be before this (year 3000): a calendar (``LocalTime``) cannot place a time
#: past the year 9999, and a deal time's bucket is only computed when its second is folded
MAX_DEAL_TIME = 32_503_680_000.0

#: a deal not yet folded into a market's state: (time, price, amount, taker side, deal id)
PendingDeal = tuple[float, Decimal, Decimal, int, int]


class MarketState:
    """One market: last price, k-line buckets, recent deals, and what the next flush writes.

    Deals are folded lazily.  Why: ``MarketData.apply`` runs for every deal in the matching
    process's loop (embedded mode), and updating four buckets, a deal object and its stored
    text per deal was most of marketprice's cost; nothing reads them between two flushes (1 s)
    unless a query comes.  So a deal only joins ``pending``; reading ``last``, ``klines``,
    ``deals``, ``dirty`` or ``new_deals`` first folds what is pending, a second's deals at a
    time: one update of each of the four buckets per run of deals in the same second, with the
    run's close, high, low and sums.  The result is exactly deal-by-deal application's: the sums
    are exact (60-digit context, never rounded, so their order does not change them) and high
    and low keep the first price of their value as ``Kline.update`` does
    (tests/unit/test_marketprice_fold.py)."""

    __slots__ = ("name", "local", "pending", "_last", "_klines", "_deals", "_dirty", "deleted",
                 "_new_deals", "_last_dirty")

    def __init__(self, name: str, last: Decimal = ZERO, local: LocalTime | None = None) -> None:
        self.name = name
        self.local = local if local is not None else LocalTime()
        #: deals applied but not yet folded, oldest first
        self.pending: list[PendingDeal] = []
        self._last = last
        #: SEC, MIN, HOUR, DAY: bucket start -> Kline
        self._klines: tuple[SortedDict, SortedDict, SortedDict, SortedDict] = (
            SortedDict(), SortedDict(), SortedDict(), SortedDict())
        #: newest first: (deal id, its JSON text {"id", "time", "price", "amount", "type"})
        self._deals: deque[tuple[int, str]] = deque(maxlen=DEALS_MAX)
        self._dirty: set[tuple[int, int]] = set()
        self.deleted: set[tuple[int, int]] = set()
        #: (id, stored JSON) of deals not yet written, oldest first
        self._new_deals: list[tuple[int, str]] = []
        self._last_dirty = False

    # -- the folded state (each read folds the pending deals first) -------------------------------

    @property
    def last(self) -> Decimal:
        if self.pending:
            self.fold()
        return self._last

    @last.setter
    def last(self, value: Decimal) -> None:
        if self.pending:
            self.fold()
        self._last = value

    @property
    def klines(self) -> tuple[SortedDict, SortedDict, SortedDict, SortedDict]:
        if self.pending:
            self.fold()
        return self._klines

    @property
    def deals(self) -> deque[tuple[int, str]]:
        if self.pending:
            self.fold()
        return self._deals

    @property
    def dirty(self) -> set[tuple[int, int]]:
        if self.pending:
            self.fold()
        return self._dirty

    @dirty.setter
    def dirty(self, value: set[tuple[int, int]]) -> None:
        if self.pending:
            self.fold()
        self._dirty = value

    @property
    def new_deals(self) -> list[tuple[int, str]]:
        if self.pending:
            self.fold()
        return self._new_deals

    @new_deals.setter
    def new_deals(self, value: list[tuple[int, str]]) -> None:
        if self.pending:
            self.fold()
        self._new_deals = value

    @property
    def last_dirty(self) -> bool:
        if self.pending:
            self.fold()
        return self._last_dirty

    @last_dirty.setter
    def last_dirty(self, value: bool) -> None:
        if self.pending:
            self.fold()
        self._last_dirty = value

    # -- folding ------------------------------------------------------------------------------------

    def fold(self) -> None:
        """Fold every pending deal into the state, a run of same-second deals at a time."""
        pending = self.pending
        self.pending = []
        count = len(pending)
        i = 0
        bad: set[int] = set()  # ids of deals that could not be folded
        while i < count:
            sec = int(pending[i][0])
            j = i + 1
            while j < count and int(pending[j][0]) == sec:
                j += 1
            try:
                self._fold_run(pending, i, j, sec)
            except (ArithmeticError, ValueError, OSError):
                # ``apply`` checks every deal, so only a bug gets here; the run's buckets are
                # untouched (its keys are computed first) and the rest still folds
                log.critical("market %s: deals %s cannot be folded, skipped", self.name,
                             [d[4] for d in pending[i:j]], exc_info=True)
                bad.update(d[4] for d in pending[i:j])
            i = j
        self._last_dirty = True
        self._record_deals([d for d in pending if d[4] not in bad] if bad else pending)

    def _fold_run(self, pending: list[PendingDeal], i: int, j: int, sec: int) -> None:
        """Deals ``pending[i:j]``, all in second ``sec``, into its four buckets."""
        price = pending[i][1]
        high = low = price
        volume = pending[i][2]
        deal = price * volume
        for k in range(i + 1, j):
            _, price, amount, _, _ = pending[k]
            volume += amount
            deal += price * amount
            if price > high:
                high = price
            if price < low:
                low = price
        last = self._last
        keys = (sec, sec - sec % 60, sec - sec % 3600, self.local.day_start(sec))
        dirty = self._dirty
        for kind in (SEC, MIN, HOUR, DAY):
            buckets = self._klines[kind]
            ts = keys[kind]
            kline = buckets.get(ts)
            if kline is None:
                kline = buckets[ts] = Kline.seed(last)
            kline.fold(price, high, low, volume, deal)
            dirty.add((kind, ts))
        self._last = price

    def _record_deals(self, pending: list[PendingDeal]) -> None:
        """The deals' texts, newest first in ``deals`` and oldest first in ``new_deals``."""
        deals = self._deals
        new_deals = self._new_deals
        for t, price, amount, side, deal_id in pending:
            text = deal_text(deal_id, t, fmt(price), fmt(amount), "sell" if side == ASK else "buy")
            deals.appendleft((deal_id, text))
            new_deals.append((deal_id, text))


@dataclass
class Changes:
    """What a flush writes, in one transaction."""

    offset: int
    #: (market, kind, bucket start, JSON value)
    buckets: list[tuple[str, int, int, str]] = field(default_factory=list)
    #: (market, kind, bucket start)
    deleted: list[tuple[str, int, int]] = field(default_factory=list)
    #: (market, last price text)
    lasts: list[tuple[str, str]] = field(default_factory=list)
    #: market -> (deal id, stored JSON) of new deals, oldest first
    deals: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    #: markets first seen since the last flush
    markets: list[str] = field(default_factory=list)
    #: the state behind the texts, to put back if the write fails
    dirty_keys: list[tuple[str, int, int]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.buckets or self.deleted or self.lasts or self.deals or self.markets)


@dataclass
class StoredMarket:
    """One market as read back from a store."""

    last: str | None = None
    #: per kind: bucket start -> stored JSON value
    klines: tuple[dict[int, str], ...] = ({}, {}, {}, {})
    #: stored deal JSON texts, newest first
    deals: list[str] = field(default_factory=list)


def deal_text(deal_id: int, t: float, price: str, amount: str, side: str) -> str:
    """``dumps`` of the deal item ``{"id", "time", "price", "amount", "type"}`` of these values
    (its stored and replied text), from a template, without building the item (once per deal,
    in the matching process's loop in embedded mode): an int id, a finite float time (a
    message's time is checked to be one), decimal texts from ``fmt`` and "sell"/"buy" need no
    escaping.  Anything else goes through the encoder."""
    if type(deal_id) is not int or type(t) is not float or t - t != 0.0:
        return dumps({"id": deal_id, "time": t, "price": price, "amount": amount, "type": side})
    return (f'{{"id": {deal_id:d}, "time": {float.__repr__(t)}, "price": "{price}", '
            f'"amount": "{amount}", "type": "{side}"}}')


class MarketData:
    def __init__(self, local: LocalTime, retention: Retention) -> None:
        use_engine_context()  # 60-digit decimal context: sums are never rounded
        self.local = local
        self.retention = retention
        self.markets: dict[str, MarketState] = {}
        #: offset of the last consumed message (-1: none yet)
        self.offset = -1
        #: highest deal id applied: a message with a lower or equal id is a duplicate
        #: (at-least-once delivery after a publisher restart) and is skipped.
        self.last_deal_id = 0
        #: time of that deal (metrics: how far behind the newest deal this is)
        self.last_deal_time = 0.0
        self.duplicates = 0
        self.invalid = 0
        self.applied = 0
        self._offset_dirty = False
        self._new_markets: list[str] = []

    # -- loading ----------------------------------------------------------------------------------

    def add_market(self, name: str, last: Decimal = ZERO, record: bool = False) -> MarketState:
        state = self.markets.get(name)
        if state is None:
            state = self.markets[name] = MarketState(name, last, self.local)
            if record:
                self._new_markets.append(name)
        return state

    def load_market(self, name: str, stored: StoredMarket, now: int) -> None:
        """Install a market read from the store; buckets past retention are dropped (and
        deleted from the store with the next flush)."""
        last = ZERO
        if stored.last is not None:
            parsed = parse(stored.last)
            if parsed is None:
                log.error("market %s: bad stored last price %r", name, stored.last)
            else:
                last = parsed
        state = self.add_market(name, last)
        state.last = last
        limits = self.retention.limits(now)
        for kind in (SEC, MIN, HOUR, DAY):
            target = state.klines[kind]
            limit = limits[kind] if kind != DAY else None
            for ts, text in stored.klines[kind].items():
                if limit is not None and ts < limit:
                    state.deleted.add((kind, ts))
                    continue
                kline = Kline.from_json(text)
                if kline is None:
                    log.error("market %s: bad stored %s bucket %d: %r", name, KINDS[kind], ts, text)
                    continue
                target[ts] = kline
        for text in stored.deals[:DEALS_MAX]:
            try:
                deal = orjson.loads(text)
                deal_id = deal["id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.error("market %s: bad stored deal %r", name, text)
                continue
            state.deals.append((deal_id, dumps(deal)))
            if type(deal_id) is int and deal_id > self.last_deal_id:
                self.last_deal_id = deal_id

    # -- consuming --------------------------------------------------------------------------------

    def apply(self, msg: Message) -> bool:
        """Consume one ``deals`` message.  False if it was invalid or a duplicate."""
        self.offset = msg.offset
        self._offset_dirty = True
        if msg.event is not None:
            return self._apply_deal(msg.event)
        try:
            data = orjson.loads(msg.value)
        except orjson.JSONDecodeError:
            return self._invalid(msg)
        if type(data) is not list or len(data) < 12:
            return self._invalid(msg)
        t = data[0]
        market = data[1]
        side = data[10]
        deal_id = data[11]
        if type(t) is not float or not 0 < t < MAX_DEAL_TIME or type(market) is not str:
            return self._invalid(msg)
        price = parse(data[6])
        amount = parse(data[7])
        if price is None or amount is None:
            return self._invalid(msg)
        if type(side) is not int or side not in (ASK, BID):
            return self._invalid(msg)
        if type(deal_id) is not int or deal_id == 0:
            return self._invalid(msg)
        if deal_id <= self.last_deal_id:
            self.duplicates += 1
            return False
        self.last_deal_id = deal_id
        self.last_deal_time = t
        self._update(market, t, price, amount, side, deal_id)
        self.applied += 1
        return True

    def _apply_deal(self, d: Any) -> bool:
        """``apply`` of a message from the in-process bus, whose engine ``Deal`` (the event
        its text was written from, ``Message.event``) is at hand: its fields are what parsing
        the text gives (the price and amount texts are the decimals' own, so ``parse`` gives
        them back, exponent and all), without the parsing (a JSON list and two decimals per
        deal, in the matching process's loop).  The engine's deals are valid by construction."""
        deal_id = d.deal_id
        if deal_id <= self.last_deal_id:
            self.duplicates += 1
            return False
        t = d.time
        self.last_deal_id = deal_id
        self.last_deal_time = t
        self._update(d.market, t, d.price, d.amount, d.taker_side, deal_id)
        self.applied += 1
        return True

    def _invalid(self, msg: Message) -> bool:
        self.invalid += 1
        # fatal level (alerted): our publisher never writes one, so someone else wrote to the
        # topic or data was lost; the deal is not in the klines
        log.critical("invalid deals message at offset %d skipped: %r", msg.offset,
                     msg.value[:200])
        return False

    def _update(self, market: str, t: float, price: Decimal, amount: Decimal, side: int,
                deal_id: int) -> None:
        state = self.markets.get(market)
        if state is None:
            # a market not in the list: created on the fly, its last price = this deal's
            state = self.add_market(market, price, record=True)
        state.pending.append((t, price, amount, side, deal_id))

    # -- retention --------------------------------------------------------------------------------

    def cleanup(self, now: int) -> int:
        """Drop 1s / 1m / 1h buckets past retention (1d are kept forever).  Returns how many
        were dropped; they are deleted from the store with the next flush."""
        limits = self.retention.limits(now)
        dropped = 0
        for state in self.markets.values():
            for kind in (SEC, MIN, HOUR):
                buckets = state.klines[kind]
                old = list(buckets.irange(maximum=limits[kind], inclusive=(True, False)))
                for ts in old:
                    del buckets[ts]
                    state.dirty.discard((kind, ts))
                    state.deleted.add((kind, ts))
                dropped += len(old)
        return dropped

    # -- flushing ---------------------------------------------------------------------------------

    def take_changes(self) -> Changes | None:
        """Everything changed since the last call, with the current offset; None if nothing."""
        if not self._offset_dirty and not self._new_markets and not any(
                s.dirty or s.deleted or s.last_dirty or s.new_deals for s in self.markets.values()):
            return None
        changes = Changes(self.offset)
        for name, state in self.markets.items():
            if state.dirty:
                for kind, ts in state.dirty:
                    kline = state.klines[kind].get(ts)
                    if kline is not None:
                        changes.buckets.append((name, kind, ts, kline.to_json()))
                        changes.dirty_keys.append((name, kind, ts))
                state.dirty = set()
            if state.deleted:
                changes.deleted.extend((name, kind, ts) for kind, ts in state.deleted)
                state.deleted = set()
            if state.last_dirty:
                changes.lasts.append((name, fmt_raw(state.last)))
                state.last_dirty = False
            if state.new_deals:
                changes.deals[name] = state.new_deals[-DEALS_MAX:]
                state.new_deals = []
        changes.markets = self._new_markets
        self._new_markets = []
        self._offset_dirty = False
        return changes

    def put_back(self, changes: Changes) -> None:
        """A write failed: mark its content dirty again so the next flush retries it."""
        self._offset_dirty = True
        for name, kind, ts in changes.dirty_keys:
            state = self.markets.get(name)
            if state is not None and ts in state.klines[kind]:
                state.dirty.add((kind, ts))
        for name, kind, ts in changes.deleted:
            state = self.markets.get(name)
            if state is not None and ts not in state.klines[kind]:
                state.deleted.add((kind, ts))
        for name, _ in changes.lasts:
            state = self.markets.get(name)
            if state is not None:
                state.last_dirty = True
        for name, texts in changes.deals.items():
            state = self.markets.get(name)
            if state is not None:
                state.new_deals = (texts + state.new_deals)[-DEALS_MAX:]
        self._new_markets = changes.markets + self._new_markets
