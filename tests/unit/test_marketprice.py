"""marketprice answers against values computed independently from the session's deals.

The reference below works from the raw deal list only (engine.md 16, rpc.md 6): bucket starts
from the local calendar (Asia/Shanghai), open = the market's last price before the bucket's
first deal (the HEAD behaviour; 0 for a listed market that never traded, the first price for
a market first seen in a deal), flat bars for empty buckets once a previous bar exists.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from exchange_server.bus.base import Message
from exchange_server.bus.memory import InProcessBus
from exchange_server.bus.messages import deal_message
from exchange_server.common import jsonfmt
from exchange_server.common.decimals import ZERO, fmt, fmt_raw
from exchange_server.common.limits import KLINE_MAX_ROWS
from exchange_server.marketprice.service import MarketPriceService
from exchange_server.marketprice.state import Retention
from exchange_server.marketprice.store_sqlite import SqliteStore
from exchange_server.matchengine.core.model import Deal
from tests.unit.test_bus_session import TZ, local, session

LISTED = ["BTCBCH", "BTCUSDT"]  # ETHBCH is not in the list: created by its first deal
MARKETS = ["BTCBCH", "ETHBCH", "BTCUSDT"]
RETENTION = Retention(sec_max=4 * 3600)

VALID_INTERVALS = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 300, 360, 600, 720,
                   900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 28800, 43200, 86400,
                   172800, 259200, 345600, 432000, 518400, 604800, 2592000]
INVALID_INTERVALS = [0, -1, -60, 7, 8, 9, 11, 45, 59, 61, 90, 420, 3000, 3540, 3601, 5400, 18000,
                     25200, 36000, 86399, 86401, 90000, 691200, 1209600, 2592001, 2678400,
                     31536000]


# -- reference ------------------------------------------------------------------------------------


@dataclass
class D:
    t: float
    price: Decimal
    amount: Decimal
    before: Decimal  # the market's last price before this deal


def market_deals(market: str) -> list[D]:
    deals = [d for d in session().deals if d.market == market]
    out: list[D] = []
    last = ZERO if market in LISTED else (deals[0].price if deals else ZERO)
    for d in deals:
        out.append(D(d.time, d.price, d.amount, last))
        last = d.price
    return out


def day_start(t: float) -> int:
    dt = datetime.fromtimestamp(int(t), TZ)
    return int(datetime(dt.year, dt.month, dt.day, tzinfo=TZ).timestamp())


def midnight(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp())


def local_date(t: int) -> date:
    return datetime.fromtimestamp(t, TZ).date()


def bar(ds: list[D]) -> list[str]:
    open_ = ds[0].before
    prices = [d.price for d in ds]
    return [fmt(open_), fmt(ds[-1].price), fmt(max([open_, *prices])), fmt(min([open_, *prices])),
            fmt(sum((d.amount for d in ds), ZERO)), fmt(sum((d.price * d.amount for d in ds), ZERO))]


def ref_kline(market: str, start: int, end: int, interval: int, now: int,
              retention: Retention = RETENTION) -> list[list[Any]]:
    end = min(end, now)
    deals = market_deals(market)
    sec_limit = now - retention.sec_max
    min_limit = now // 60 * 60 - retention.min_max * 60
    hour_limit = now // 3600 * 3600 - retention.hour_max * 3600
    months = interval == 2592000
    if interval < 86400:
        if interval < 60:
            start = max(start, sec_limit)
            first, floor = start - start % interval, sec_limit

            def key(t: float) -> int:
                return int(t)
        elif interval < 3600:
            start = max(start, min_limit)
            first, floor = start - start % interval, min_limit

            def key(t: float) -> int:
                return int(t) // 60 * 60
        else:
            start = max(start, hour_limit)
            m = day_start(start)
            first, floor = m + (start - m) // interval * interval, hour_limit

            def key(t: float) -> int:
                return int(t) // 3600 * 3600

        def following(b: int) -> int:
            return b + interval
    else:
        d0 = local_date(start)
        if months:
            first_date = d0.replace(day=1)
        elif interval == 604800:
            first_date = d0 - timedelta(days=d0.weekday())
        else:
            k = interval // 86400
            index = (d0 - date(1970, 1, 1)).days
            first_date = date(1970, 1, 1) + timedelta(days=index - index % k)
        first, floor = midnight(first_date), midnight(first_date - timedelta(days=30))
        key = day_start

        def following(b: int) -> int:
            d = local_date(b)
            if months:
                return midnight(date(d.year + d.month // 12, d.month % 12 + 1, 1))
            return midnight(d + timedelta(days=interval // 86400))

    rows: list[list[Any]] = []
    keys = [key(d.t) for d in deals]  # non-decreasing: deals come in time order
    assert keys == sorted(keys)
    earlier = deals[bisect_left(keys, floor):bisect_left(keys, first)]
    previous = fmt(earlier[-1].price) if earlier else None
    b = first
    while b <= end:
        nb = following(b)
        stop = min(nb, end + 1) if months else nb
        inside = deals[bisect_left(keys, b):bisect_left(keys, stop)]
        if inside:
            row = bar(inside)
            rows.append([b, *row, market])
            previous = row[1]
        elif previous is not None:
            rows.append([b, previous, previous, previous, previous, "0", "0", market])
        b = nb
    return rows


def window(deals: list[D], start: int, now: int, sec_limit: int) -> list[D]:
    start_min = start // 60 * 60 + 60
    return [d for d in deals
            if (start <= int(d.t) < start_min and int(d.t) >= sec_limit)
            or start_min <= int(d.t) // 60 * 60 < now]


def ref_status(market: str, period: int, now: int) -> dict[str, Any]:
    deals = market_deals(market)
    inside = window(deals, now - period, now, now - RETENTION.sec_max)
    values = bar(inside) if inside else ["0"] * 6
    last = deals[-1].price if deals else ZERO
    return {"period": period, "last": fmt(last), "open": values[0], "close": values[1],
            "high": values[2], "low": values[3], "volume": values[4], "deal": values[5]}


def ref_status_today(market: str, now: int) -> dict[str, Any]:
    deals = market_deals(market)
    today = day_start(now)
    todays = [d for d in deals if day_start(d.t) == today]
    if todays:
        o, c, h, lo = bar(todays)[:4]
    else:
        floor = midnight(local_date(today) - timedelta(days=30))
        before = [d for d in deals if floor <= day_start(d.t) < today]
        o = c = h = lo = fmt(before[-1].price) if before else "0"
    inside = window(deals, now - 86400, now, now - RETENTION.sec_max)
    volume = fmt(sum((d.amount for d in inside), ZERO)) if inside else "0"
    deal = fmt(sum((d.price * d.amount for d in inside), ZERO)) if inside else "0"
    return {"open": o, "last": c, "high": h, "low": lo, "volume": volume, "deal": deal}


# -- the service under test -----------------------------------------------------------------------


def feed(service: MarketPriceService, deals: list[Deal]) -> None:
    for offset, d in enumerate(deals):
        service.data.apply(Message(offset, deal_message(d), None))


@pytest.fixture(scope="module")
def mp() -> MarketPriceService:
    """A service that consumed every deal of the session (not started: queries only)."""
    s = session()
    service = MarketPriceService(InProcessBus(), SqliteStore("unused.db"), lambda: LISTED,
                                 retention=RETENTION, cache_timeout=0, tz=TZ, clock=lambda: s.now)
    for name in LISTED:
        service.data.add_market(name)
    feed(service, s.deals)
    service.data.cleanup(int(s.now))
    return service


def call(service: MarketPriceService, method: str, params: list[Any]) -> Any:
    return service.execute(method, params)


NOW = int(session().now)
RANGES = {
    "all": (1, NOW),
    "dense": (int(local(2024, 3, 4, 8, 15, 7)), int(local(2024, 3, 4, 9))),
    "gap": (int(local(2024, 3, 4, 8, 31)), int(local(2024, 3, 4, 8, 50, 30))),
    "future": (int(local(2024, 3, 4, 9, 58)), NOW + 10**6),
    "nothing": (int(local(2024, 1, 1)), int(local(2024, 1, 20))),
    "month-cross": (int(local(2024, 2, 10, 13)), int(local(2024, 3, 1, 5))),
    "last-day": (int(local(2024, 3, 3, 22, 10)), int(local(2024, 3, 4, 0, 0))),
}


@pytest.mark.parametrize("interval", VALID_INTERVALS)
@pytest.mark.parametrize("span", list(RANGES))
def test_kline_matches_reference(mp: MarketPriceService, interval: int, span: str) -> None:
    start, end = RANGES[span]
    for market in MARKETS:
        got = call(mp, "market.kline", [market, start, end, interval])
        # at most the newest KLINE_MAX_ROWS rows of the whole answer (docs/compatibility.md)
        want = ref_kline(market, start, end, interval, NOW)[-KLINE_MAX_ROWS:]
        assert got == want, (market, interval, span)


@pytest.mark.parametrize("interval", [1, 60, 3600, 86400, 604800, 2592000])
async def test_kline_reply_built_in_chunks_is_the_reply_body(mp: MarketPriceService,
                                                             interval: int) -> None:
    """call() builds and encodes market.kline a chunk at a time: the same bytes as encoding the
    rows at once, truncated to the newest KLINE_MAX_ROWS, for every kind of bucket."""
    for market in MARKETS:
        params = [market, 1, NOW, interval]
        body = await mp.call("market.kline", params, 7)
        want = ref_kline(market, 1, NOW, interval, NOW)[-KLINE_MAX_ROWS:]
        assert body == jsonfmt.reply_body(want, 7), (market, interval)
    bad = await mp.call("market.kline", ["BTCBCH", 1, NOW, 7], 8)
    assert json.loads(bad)["error"]["code"] == 1
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    bad = await mp.call("market.kline", ["BTCBCH", 1, NOW, deep], 9)
    assert json.loads(bad)["error"]["code"] == 1  # nesting checked before the cache key


def test_kline_default_retention_clamps_seconds() -> None:
    """With the default 7-day sec_max, a 1s-bucket query from the epoch starts 7 days ago."""
    s = session()
    service = MarketPriceService(InProcessBus(), SqliteStore("unused.db"), lambda: LISTED,
                                 cache_timeout=0, tz=TZ, clock=lambda: s.now)
    for name in LISTED:
        service.data.add_market(name)
    feed(service, s.deals)
    for interval in (30, 60):
        got = call(service, "market.kline", ["BTCBCH", 1, NOW, interval])
        want = ref_kline("BTCBCH", 1, NOW, interval, NOW, Retention())
        assert got == want[-KLINE_MAX_ROWS:], interval
        if interval < 60:
            assert want[0][0] >= NOW - 7 * 86400 - interval
        else:
            assert want[0][0] < NOW - 30 * 86400


def test_kline_rows_show_head_behaviour_and_local_days(mp: MarketPriceService) -> None:
    days = call(mp, "market.kline", ["BTCBCH", 1, NOW, 86400])
    # first bucket of a listed market that never traded before: open = low = 0 (rpc.md 0.19)
    assert days[0][1] == "0" and days[0][4] == "0"
    # buckets start at local (UTC+8) midnight, i.e. 16:00 UTC
    assert all(datetime.fromtimestamp(r[0], TZ).hour == 0 for r in days)
    assert all(r[0] % 86400 == 16 * 3600 for r in days)
    assert all(isinstance(r[0], int) for r in days)
    # a market first seen in a deal starts from that deal's price
    eth = call(mp, "market.kline", ["ETHBCH", 1, NOW, 86400])
    assert eth[0][1] == eth[0][2] == eth[0][3] == eth[0][4] != "0"
    weeks = call(mp, "market.kline", ["BTCBCH", 1, NOW, 604800])
    assert all(datetime.fromtimestamp(r[0], TZ).weekday() == 0 for r in weeks)
    months = call(mp, "market.kline", ["BTCBCH", 1, NOW, 2592000])
    assert [datetime.fromtimestamp(r[0], TZ).strftime("%Y-%m-%d") for r in months] == [
        "2024-01-01", "2024-02-01", "2024-03-01"]
    # gap filling: the empty quarter hour gives flat bars at the previous close
    quarter = call(mp, "market.kline", ["BTCBCH", *RANGES["gap"], 60])
    flat = [r for r in quarter if r[5] == "0"]
    assert len(flat) >= 14 and all(r[1] == r[2] == r[3] == r[4] for r in flat)
    # more than 30 days without a deal: the day before the range is not found
    eth_late = call(mp, "market.kline", ["ETHBCH", int(local(2024, 2, 26)), NOW, 86400])
    assert datetime.fromtimestamp(eth_late[0][0], TZ).date() == date(2024, 3, 3)
    # a listed market without deals: no rows at all
    assert call(mp, "market.kline", ["BTCUSDT", 1, NOW, 60]) == []


@pytest.mark.parametrize("interval", INVALID_INTERVALS)
def test_kline_invalid_intervals(mp: MarketPriceService, interval: int) -> None:
    body = json.loads(_call_bytes(mp, "market.kline", ["BTCBCH", 1, NOW, interval]))
    assert body == {"error": {"code": 1, "message": "invalid argument"}, "result": None, "id": 5}


def _call_bytes(service: MarketPriceService, method: str, params: list[Any]) -> bytes:
    import asyncio

    return asyncio.run(service.call(method, params, 5))


@pytest.mark.parametrize(("method", "params"), [
    ("market.kline", []),
    ("market.kline", ["BTCBCH", 1, NOW]),
    ("market.kline", ["BTCBCH", 1, NOW, 60, 1]),
    ("market.kline", ["NOPE", 1, NOW, 60]),
    ("market.kline", [1, 1, NOW, 60]),
    ("market.kline", ["BTCBCH", 0, NOW, 60]),
    ("market.kline", ["BTCBCH", -5, NOW, 60]),
    ("market.kline", ["BTCBCH", "1", NOW, 60]),
    ("market.kline", ["BTCBCH", 1.0, NOW, 60]),
    ("market.kline", ["BTCBCH", 1, 0, 60]),
    ("market.kline", ["BTCBCH", NOW, NOW - 1, 60]),
    ("market.kline", ["BTCBCH", NOW + 100, NOW + 200, 60]),  # end clamped to now < start
    ("market.kline", ["BTCBCH", 1, NOW, "60"]),
    ("market.kline", ["BTCBCH", 1, NOW, True]),
    ("market.status", ["BTCBCH"]),
    ("market.status", ["BTCBCH", 0]),
    ("market.status", ["BTCBCH", RETENTION.sec_max + 1]),
    ("market.status", ["BTCBCH", "60"]),
    ("market.status", ["NOPE", 60]),
    ("market.status_today", []),
    ("market.status_today", ["BTCBCH", 1]),
    ("market.status_today", ["NOPE"]),
    ("market.status_today", [None]),
    ("market.last", []),
    ("market.last", ["NOPE"]),
    ("market.last", ["BTCBCH", "x"]),
    ("market.deals", ["BTCBCH", 10]),
    ("market.deals", ["BTCBCH", 0, 0]),
    ("market.deals", ["BTCBCH", 10001, 0]),
    ("market.deals", ["BTCBCH", "10", 0]),
    ("market.deals", ["BTCBCH", 10, "0"]),
    ("market.deals", ["BTCBCH", 10, 1.5]),
    ("market.deals", ["NOPE", 10, 0]),
])
def test_invalid_params(mp: MarketPriceService, method: str, params: list[Any]) -> None:
    assert _call_bytes(mp, method, params) == (
        b'{"error": {"code": 1, "message": "invalid argument"}, "result": null, "id": 5}')


def test_unknown_method(mp: MarketPriceService) -> None:
    assert _call_bytes(mp, "market.summary", []) == (
        b'{"error": {"code": 4, "message": "method not found"}, "result": null, "id": 5}')


@pytest.mark.parametrize("market", MARKETS)
def test_last_is_not_zero_stripped(mp: MarketPriceService, market: str) -> None:
    deals = [d for d in session().deals if d.market == market]
    expected = fmt_raw(deals[-1].price) if deals else "0"
    assert call(mp, "market.last", [market]) == expected
    if deals:
        assert expected.endswith("0")  # e.g. "9.33000000": trailing zeros kept
    body = _call_bytes(mp, "market.last", [market])
    assert body == b'{"error": null, "result": "%s", "id": 5}' % expected.encode()


@pytest.mark.parametrize("market", MARKETS)
def test_deals_newest_first_with_limit_and_last_id(mp: MarketPriceService, market: str) -> None:
    deals = [d for d in session().deals if d.market == market]
    items = [{"id": d.deal_id, "time": d.time, "price": fmt(d.price), "amount": fmt(d.amount),
              "type": "sell" if d.taker_side == 1 else "buy"} for d in reversed(deals)]
    assert call(mp, "market.deals", [market, 10000, 0]) == items
    assert call(mp, "market.deals", [market, 3, 0]) == items[:3]
    if len(items) > 5:
        last_id = items[5]["id"]
        assert call(mp, "market.deals", [market, 100, last_id]) == items[:5]
        assert call(mp, "market.deals", [market, 2, last_id]) == items[:2]
    assert call(mp, "market.deals", [market, 10, 10**9]) == []
    assert call(mp, "market.deals", [market, 10, -1]) == []  # read as uint64 by the original
    if deals:
        body = _call_bytes(mp, "market.deals", [market, 1, 0])
        d = deals[-1]
        assert body == (
            f'{{"error": null, "result": [{{"id": {d.deal_id}, "time": {d.time!r}, '
            f'"price": "{fmt(d.price)}", "amount": "{fmt(d.amount)}", '
            f'"type": "{"sell" if d.taker_side == 1 else "buy"}"}}], "id": 5}}').encode()


@pytest.mark.parametrize("market", MARKETS)
@pytest.mark.parametrize("period", [1, 59, 60, 61, 3600, 3 * 3600 + 17, RETENTION.sec_max])
def test_status_matches_reference(mp: MarketPriceService, market: str, period: int) -> None:
    assert call(mp, "market.status", [market, period]) == ref_status(market, period, NOW)


@pytest.mark.parametrize("market", MARKETS)
def test_status_today_matches_reference(mp: MarketPriceService, market: str) -> None:
    got = call(mp, "market.status_today", [market])
    assert got == ref_status_today(market, NOW)
    assert list(got) == ["open", "last", "high", "low", "volume", "deal"]


def test_status_today_without_a_deal_today_uses_the_previous_day() -> None:
    s = session()
    later = local(2024, 3, 5, 12)  # no deal on Mar 5: previous day bucket's close
    service = MarketPriceService(InProcessBus(), SqliteStore("unused.db"), lambda: LISTED,
                                 retention=RETENTION, cache_timeout=0, tz=TZ, clock=lambda: later)
    feed(service, s.deals)
    last = fmt([d for d in s.deals if d.market == "BTCBCH"][-1].price)
    got = call(service, "market.status_today", ["BTCBCH"])
    assert got["open"] == got["last"] == got["high"] == got["low"] == last
    assert got["volume"] == got["deal"] == "0"  # nothing in the last 24 h
    status = call(service, "market.status", ["BTCBCH", 3600])
    assert status == {"period": 3600, "last": last, "open": "0", "close": "0", "high": "0",
                      "low": "0", "volume": "0", "deal": "0"}


def test_reply_cache_keeps_answers_for_cache_timeout() -> None:
    s = session()
    clock = [s.now]
    service = MarketPriceService(InProcessBus(), SqliteStore("unused.db"), lambda: LISTED,
                                 retention=RETENTION, cache_timeout=60, tz=TZ,
                                 clock=lambda: clock[0])
    deals = s.deals
    feed(service, deals[:-5])
    first = call(service, "market.status", ["BTCBCH", 3600])
    for offset, d in enumerate(deals[-5:], start=len(deals) - 5):
        service.data.apply(Message(offset, deal_message(d), None))
    assert call(service, "market.status", ["BTCBCH", 3600]) == first  # cached
    assert call(service, "market.last", ["BTCBCH"]) == fmt_raw(deals[-1].price)  # not cached
    assert call(service, "market.status", ["BTCBCH", 3601]) != first  # other params


def test_invalid_and_duplicate_messages_are_skipped() -> None:
    s = session()
    service = MarketPriceService(InProcessBus(), SqliteStore("unused.db"), lambda: LISTED,
                                 retention=RETENTION, cache_timeout=0, tz=TZ, clock=lambda: s.now)
    deals = s.deals
    data = service.data
    bad = [b"not json", b"{}", b"[1, 2]",
           b'[1709517659, "BTCBCH", 1, 2, 1, 2, "1", "1", "0", "0", 1, 99999, "BTC", "BCH"]',
           b'[1709517659.5, "BTCBCH", 1, 2, 1, 2, "x", "1", "0", "0", 1, 99999, "BTC", "BCH"]',
           b'[1709517659.5, "BTCBCH", 1, 2, 1, 2, "1", "1", "0", "0", 3, 99999, "BTC", "BCH"]',
           b'[1709517659.5, "BTCBCH", 1, 2, 1, 2, "1", "1", "0", "0", 1, 0, "BTC", "BCH"]']
    for i, value in enumerate(bad):
        assert not data.apply(Message(i, value, None))
    assert data.invalid == len(bad)
    feed(service, deals)
    for offset, d in enumerate(deals[:10]):  # at-least-once: published again after a restart
        assert not data.apply(Message(1000 + offset, deal_message(d), None))
    assert data.duplicates == 10
    assert data.offset == 1009
    assert len(call(service, "market.deals", ["BTCBCH", 10000, 0])) == sum(
        d.market == "BTCBCH" for d in deals)


def _state(data: Any) -> Any:
    """Everything a MarketData holds per market, as comparable values."""
    return {name: (m.last, str(m.last), [{ts: k.values() for ts, k in kind.items()} for kind in m.klines],
                   list(m.deals), m.new_deals, sorted(m.dirty))
            for name, m in data.markets.items()}


def test_a_deal_read_from_its_event_is_the_deal_read_from_its_text() -> None:
    """In-process messages carry the engine's Deal (``Message.event``): marketprice reads it
    instead of parsing the text, with the same outcome (prices, klines, deal texts, last and
    its exponent, duplicates), for the session's deals and for a deal delivered twice."""
    from exchange_server.marketprice.localtime import LocalTime
    from exchange_server.marketprice.state import MarketData

    deals = session().deals
    by_text, by_event = (MarketData(LocalTime(TZ), RETENTION) for _ in range(2))
    for data in (by_text, by_event):
        data.add_market("BTCBCH")
    messages = [(n, deal_message(d), d) for n, d in enumerate(deals + deals[:3])]
    for n, value, d in messages:
        assert by_text.apply(Message(n, value, n)) == by_event.apply(Message(n, value, n, d))
    assert by_event.applied == by_text.applied == len(deals)
    assert by_event.duplicates == by_text.duplicates == 3
    assert (by_event.last_deal_id, by_event.last_deal_time, by_event.offset) == (
        by_text.last_deal_id, by_text.last_deal_time, by_text.offset)
    assert _state(by_event) == _state(by_text) and len(_state(by_text)) == 2
