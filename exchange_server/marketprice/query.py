"""Answers of market.kline, market.status, market.status_today and market.deals (engine.md 16).

K-line output buckets are built from the stored buckets (1s for intervals under a minute, 1m
under an hour, 1h under a day, 1d otherwise).  Inside an output bucket the stored buckets are
merged (first open, last close, max high, min low, summed volume and deal).  A bucket without
data is emitted as a flat bar at the previous bar's close once a previous bar exists; the
previous bar may be the nearest stored bucket before the range (searched back to the
retention limit, or 30 days for day/week/month).  Buckets before any data are omitted.
Rows: ``[time, open, close, high, low, volume, deal, market]``.

Extension (docs/compatibility.md): at most ``KLINE_MAX_ROWS`` rows, the newest buckets of the
range, so that a cheap request (interval 1 over a week: 604,800 buckets) cannot cost the process
seconds and tens of megabytes; rows are built in chunks (``kline_chunks``) so that the event loop,
which also matches orders in embedded mode, runs in between.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any, Protocol

from sortedcontainers import SortedDict

from exchange_server.common.decimals import fmt
from exchange_server.common.limits import KLINE_MAX_ROWS
from exchange_server.marketprice.kline import Kline
from exchange_server.marketprice.localtime import LocalTime
from exchange_server.marketprice.state import DAY, HOUR, MIN, SEC, MarketState, Retention

WEEK = 86400 * 7
MONTH = 86400 * 30
#: How far back the bar before a day / week / month range is searched.
DAYS_BACK = 30
#: Output buckets built at a time (the event loop runs between chunks).
KLINE_CHUNK = 512
#: day_index of a Monday (1970-01-05) modulo 7
_MONDAY_PHASE = 4


def valid_interval(interval: int) -> bool:
    """The intervals market.kline accepts (rpc.md 6)."""
    if interval <= 0:
        return False
    if interval < 60:
        return 60 % interval == 0
    if interval < 3600:
        return interval % 60 == 0 and 3600 % interval == 0
    if interval < 86400:
        return interval % 3600 == 0 and 86400 % interval == 0
    if interval < WEEK:
        return interval % 86400 == 0
    return interval in (WEEK, MONTH)


class _Sequence(Protocol):
    def next(self, b: int) -> int: ...

    def containing(self, ts: int) -> int: ...


class _Fixed:
    """Buckets of a fixed length from an aligned origin."""

    def __init__(self, origin: int, step: int) -> None:
        self.origin = origin
        self.step = step

    def next(self, b: int) -> int:
        return b + self.step

    def containing(self, ts: int) -> int:
        return self.origin + (ts - self.origin) // self.step * self.step


class _Days:
    """Buckets of ``days`` local days, starting on days whose index is ``phase`` mod ``days``."""

    def __init__(self, local: LocalTime, days: int, phase: int = 0) -> None:
        self.local = local
        self.days = days
        self.phase = phase

    def _start_date(self, ts: int) -> date:
        d = self.local.date_of(ts)
        index = self.local.day_index(d)
        return d - timedelta(days=(index - self.phase) % self.days)

    def containing(self, ts: int) -> int:
        return self.local.midnight(self._start_date(ts))

    def next(self, b: int) -> int:
        return self.local.midnight(self._start_date(b) + timedelta(days=self.days))


class _Months:
    def __init__(self, local: LocalTime) -> None:
        self.local = local

    def containing(self, ts: int) -> int:
        d = self.local.date_of(ts)
        return self.local.midnight(date(d.year, d.month, 1))

    def next(self, b: int) -> int:
        d = self.local.date_of(b)
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return self.local.midnight(date(year, month, 1))


def _latest(buckets: SortedDict, low: int, high: int) -> Kline | None:
    """The stored bucket with the greatest start in [low, high], if any."""
    for ts in buckets.irange(low, high, reverse=True):
        kline: Kline = buckets[ts]
        return kline
    return None


def _row_chunks(buckets: SortedDict, seq: _Sequence, first: int, end: int, before: Kline | None,
                market: str, clip_end: bool = False) -> Iterator[list[list[Any]]]:
    """The rows of [first, end], ``KLINE_CHUNK`` output buckets at a time (a caller may let the
    event loop run between chunks: each chunk reads the stored buckets it covers afresh)."""
    if first > end:
        return
    upper = seq.next(seq.containing(end))
    if clip_end:
        upper = min(upper, end + 1)
    last = before
    flat = fmt(last.close) if last is not None else ""
    b = first
    while b <= end:
        starts = [b]
        nb = seq.next(b)
        while len(starts) < KLINE_CHUNK and nb <= end:
            starts.append(nb)
            nb = seq.next(nb)
        keys = list(buckets.irange(b, min(nb, upper), inclusive=(True, False)))
        if not keys and last is None:
            # skip the empty buckets before the first data
            following = next(iter(buckets.irange(nb, upper, inclusive=(True, False))), None)
            if following is None:
                return
            b = seq.containing(following)
            continue
        starts.append(nb)
        rows: list[list[Any]] = []
        j = 0
        count = len(keys)
        for i in range(len(starts) - 1):
            stop = min(starts[i + 1], end + 1) if clip_end else starts[i + 1]
            merged: Kline | None = None
            while j < count and keys[j] < stop:
                value: Kline = buckets.get(keys[j])
                j += 1
                if value is None:
                    continue
                if merged is None:
                    merged = value.copy()
                else:
                    merged.merge(value)
            if merged is not None:
                rows.append([starts[i], *merged.values(), market])
                last = merged
                flat = fmt(merged.close)
            elif last is not None:
                rows.append([starts[i], flat, flat, flat, flat, "0", "0", market])
        yield rows
        b = nb


def kline_chunks(state: MarketState, start: int, end: int, interval: int, now: int,
                 retention: Retention, local: LocalTime) -> Iterator[list[list[Any]]]:
    """market.kline rows (params already validated; ``end`` already clamped to now), in
    chunks; at most the newest ``KLINE_MAX_ROWS`` buckets of the range."""
    sec_limit, min_limit, hour_limit = retention.limits(now)
    name = state.name
    if interval < 86400:
        if interval < 60:
            buckets, limit = state.klines[SEC], sec_limit
            start = max(start, limit) // interval * interval
        elif interval < 3600:
            buckets, limit = state.klines[MIN], min_limit
            start = max(start, limit) // interval * interval
        else:
            buckets, limit = state.klines[HOUR], hour_limit
            start = max(start, limit)
            base = local.day_start(start)
            start = base + (start - base) // interval * interval
        # the newest KLINE_MAX_ROWS buckets: the tail of the whole answer
        start = max(start, end - (end - start) % interval - (KLINE_MAX_ROWS - 1) * interval)
        before = _latest(buckets, limit, start - 1)
        return _row_chunks(buckets, _Fixed(start, interval), start, end, before, name)
    buckets = state.klines[DAY]
    seq: _Days | _Months
    if interval == MONTH:
        seq = _Months(local)
    elif interval == WEEK:
        seq = _Days(local, 7, _MONDAY_PHASE)
    else:
        seq = _Days(local, interval // 86400)
    first = seq.containing(start)
    floor = local.midnight(local.date_of(first) - timedelta(days=DAYS_BACK))
    before = _latest(buckets, floor, first - 1)
    return _tail(_row_chunks(buckets, seq, first, end, before, name, clip_end=interval == MONTH))


def _tail(chunks: Iterator[list[list[Any]]]) -> Iterator[list[list[Any]]]:
    """Day, week and month buckets (not of a fixed length): the newest ``KLINE_MAX_ROWS``
    rows, kept while the chunks go by (at most 20,160 days = 55 years: never in practice)."""
    kept: deque[list[Any]] = deque(maxlen=KLINE_MAX_ROWS)
    for chunk in chunks:
        kept.extend(chunk)
        yield []
    rows = list(kept)
    for i in range(0, len(rows), KLINE_CHUNK):
        yield rows[i:i + KLINE_CHUNK]


def kline(state: MarketState, start: int, end: int, interval: int, now: int,
          retention: Retention, local: LocalTime) -> list[list[Any]]:
    """market.kline rows at once (see ``kline_chunks``)."""
    rows: list[list[Any]] = []
    for chunk in kline_chunks(state, start, end, interval, now, retention, local):
        rows += chunk
    return rows


def _merge_window(state: MarketState, start: int, now: int) -> Kline | None:
    """1s buckets for the partial first minute of [start, now), 1m buckets after it."""
    start_min = start // 60 * 60 + 60
    merged: Kline | None = None
    for source, low, high in ((state.klines[SEC], start, start_min),
                              (state.klines[MIN], start_min, now)):
        for ts in source.irange(low, high, inclusive=(True, False)):
            kline: Kline = source[ts]
            if merged is None:
                merged = kline.copy()
            else:
                merged.merge(kline)
    return merged


def status(state: MarketState, period: int, now: int) -> dict[str, Any]:
    merged = _merge_window(state, now - period, now)
    if merged is None:
        values = ["0"] * 6
    else:
        values = merged.values()
    return {"period": period, "last": fmt(state.last), "open": values[0], "close": values[1],
            "high": values[2], "low": values[3], "volume": values[4], "deal": values[5]}


def status_today(state: MarketState, now: int, local: LocalTime) -> dict[str, Any]:
    days = state.klines[DAY]
    start = local.day_start(now)
    today: Kline | None = days.get(start)
    if today is not None:
        open_, last, high, low = fmt(today.open), fmt(today.close), fmt(today.high), fmt(today.low)
    else:
        floor = local.midnight(local.date_of(start) - timedelta(days=DAYS_BACK))
        before = _latest(days, floor, start - 1)
        price = fmt(before.close) if before is not None else "0"
        open_ = last = high = low = price
    merged = _merge_window(state, now - 86400, now)
    volume = merged.volume if merged is not None else None
    deal = merged.deal if merged is not None else None
    return {"open": open_, "last": last, "high": high, "low": low,
            "volume": fmt(volume) if volume is not None else "0",
            "deal": fmt(deal) if deal is not None else "0"}


def deal_texts(state: MarketState, limit: int, last_id: int) -> list[str]:
    """The deals' JSON texts, newest first, stopping at the first id <= last_id, at most
    ``limit``."""
    result: list[str] = []
    for deal_id, text in state.deals:
        if deal_id <= last_id:
            break
        result.append(text)
        if len(result) >= limit:
            break
    return result

