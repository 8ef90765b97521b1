"""marketprice folds deals lazily (MarketState.fold): whatever the reads in between, its state
(k-lines with their decimals' exponents, last price, recent deals and their texts, what the next
flush writes) is exactly what applying every deal in turn gives (the per-deal update marketprice
made before, written out here as the reference)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_server.bus.base import Message
from exchange_server.common import jsonfmt
from exchange_server.common.decimals import ZERO, fmt, fmt_raw, parse
from exchange_server.marketprice.kline import Kline
from exchange_server.marketprice.localtime import LocalTime
from exchange_server.marketprice.state import DAY, HOUR, MIN, SEC, MarketData, Retention

BASE = 1_709_517_600  # a local midnight's neighbourhood (Asia/Shanghai by default)
#: prices and amounts with equal values in different exponents (high / low keep the first)
PRICES = ["100", "100.0", "100.00", "99.5", "101", "1E+2", "0.00000001", "12345.678"]
AMOUNTS = ["0.01", "0.010", "1", "2.5", "0.00000001", "1000"]

Deal = tuple[float, str, str, int]  # time, price text, amount text, taker side


class Reference:
    """Deal-by-deal application (marketprice's ``_update`` before the fold)."""

    def __init__(self, local: LocalTime) -> None:
        self.local = local
        self.last = ZERO
        self.klines: tuple[dict[int, Kline], ...] = ({}, {}, {}, {})
        self.deals: list[tuple[int, str]] = []
        self.new_deals: list[tuple[int, str]] = []
        self.dirty: set[tuple[int, int]] = set()

    def apply(self, t: float, price: Decimal, amount: Decimal, side: int, deal_id: int) -> None:
        deal = price * amount
        sec = int(t)
        keys = (sec, sec - sec % 60, sec - sec % 3600, self.local.day_start(sec))
        for kind in (SEC, MIN, HOUR, DAY):
            ts = keys[kind]
            kline = self.klines[kind].get(ts)
            if kline is None:
                kline = self.klines[kind][ts] = Kline.seed(self.last)
            kline.update(price, amount, deal)
            self.dirty.add((kind, ts))
        self.last = price
        text = jsonfmt.dumps({"id": deal_id, "time": t, "price": fmt(price),
                              "amount": fmt(amount), "type": "sell" if side == 1 else "buy"})
        self.deals.insert(0, (deal_id, text))
        self.new_deals.append((deal_id, text))


def exact(kline: Kline) -> tuple[str, ...]:
    """A bucket's six decimals as written (exponents included)."""
    return tuple(str(v) for v in (kline.open, kline.close, kline.high, kline.low, kline.volume,
                                  kline.deal))


def message(offset: int, deal: Deal, deal_id: int) -> Message:
    t, price, amount, side = deal
    body = orjson.dumps([t, "BTCBCH", 1, 2, 3, 4, price, amount, "0", "0", side, deal_id,
                         "BTC", "BCH"])
    return Message(offset, body, offset)


def run(deals: list[Deal], reads: set[int]) -> tuple[MarketData, Reference]:
    """Both ways; the lazy one has its k-lines read after the deals whose index is in
    ``reads`` (each read folds what is pending)."""
    data = MarketData(LocalTime(), Retention())
    data.add_market("BTCBCH")
    reference = Reference(data.local)
    state = data.markets["BTCBCH"]
    for i, deal in enumerate(deals):
        assert data.apply(message(i, deal, i + 1))
        price, amount = parse(deal[1]), parse(deal[2])
        assert price is not None and amount is not None
        reference.apply(deal[0], price, amount, deal[3], i + 1)
        if i in reads:
            assert state.klines is not None  # a read: folds
            assert not state.pending
    return data, reference


def assert_same(data: MarketData, reference: Reference) -> None:
    state = data.markets["BTCBCH"]
    assert str(state.last) == str(reference.last)
    for kind in (SEC, MIN, HOUR, DAY):
        got = {ts: exact(k) for ts, k in state.klines[kind].items()}
        assert got == {ts: exact(k) for ts, k in reference.klines[kind].items()}
    assert list(state.deals) == reference.deals
    assert state.new_deals == reference.new_deals
    assert state.dirty == reference.dirty
    assert state.last_dirty == bool(reference.deals)
    changes = data.take_changes()
    if not reference.deals:
        assert changes is None
        return
    assert changes is not None
    assert sorted(changes.buckets) == sorted(
        ("BTCBCH", kind, ts, reference.klines[kind][ts].to_json()) for kind, ts in reference.dirty)
    assert changes.lasts == [("BTCBCH", fmt_raw(reference.last))]
    assert changes.deals == {"BTCBCH": reference.new_deals}


deal_strategy = st.tuples(
    st.integers(0, 2 * 86400).map(lambda s: BASE + s) | st.sampled_from([BASE + 5, BASE + 59]),
    st.sampled_from([0.0, 0.25, 0.5, 0.999]),
    st.sampled_from(PRICES), st.sampled_from(AMOUNTS), st.sampled_from([1, 2]))


def as_deals(raw: list[tuple[int, float, str, str, int]], sorted_times: bool) -> list[Deal]:
    deals = [(float(sec) + frac, price, amount, side) for sec, frac, price, amount, side in raw]
    if sorted_times:
        deals.sort(key=lambda d: d[0])
    return deals


@settings(max_examples=300, deadline=None)
@given(st.lists(deal_strategy, max_size=60), st.booleans(), st.sets(st.integers(0, 60)))
def test_folded_state_is_deal_by_deal_state(raw: Any, sorted_times: bool, reads: set[int]) -> None:
    data, reference = run(as_deals(raw, sorted_times), reads)
    assert_same(data, reference)


def test_a_burst_waits_in_pending_and_folds_once_into_one_bucket_per_granularity() -> None:
    deals: list[Deal] = [(BASE + 7 + i / 1000, PRICES[i % 5], AMOUNTS[i % 6], 1 + i % 2)
                         for i in range(500)]
    data, reference = run(deals, set())
    state = data.markets["BTCBCH"]
    assert len(state.pending) == 500  # apply only appended
    assert_same(data, reference)
    assert not state.pending
    assert all(len(state.klines[kind]) == 1 for kind in (SEC, MIN, HOUR, DAY))


def test_a_query_between_deals_sees_every_deal_applied() -> None:
    """market.status / market.deals / market.last answer from the folded state."""
    from exchange_server.marketprice import query

    deals: list[Deal] = [(BASE + 7.5, "100", "1", 1), (BASE + 7.6, "101", "2", 2),
                         (BASE + 8.0, "99", "3", 1)]
    data, _ = run(deals[:2], set())
    state = data.markets["BTCBCH"]
    assert query.status(state, 86400, BASE + 9)["close"] == "101"
    assert [orjson.loads(t)["id"] for t in query.deal_texts(state, 10, 0)] == [2, 1]
    assert data.apply(message(2, deals[2], 3))
    assert str(state.last) == "99"
    assert query.status(state, 86400, BASE + 9) == {
        "period": 86400, "last": "99", "open": "0", "close": "99", "high": "101", "low": "0",
        "volume": "6", "deal": "599"}


def deals_message(offset: int, t: float, deal_id: int) -> Message:
    """A deals message as Kafka carries it (text only)."""
    return Message(offset, orjson.dumps([t, "BTCUSD", 1, 2, 3, 4, "100.5", "1", "0", "0", 1,
                                         deal_id, "BTC", "USD"]), deal_id)


def test_a_deal_time_no_calendar_holds_is_skipped_and_its_neighbours_kept() -> None:
    """A time past what ``LocalTime`` can place (1e20) used to pass ``apply`` and fail in the
    fold, which had already emptied ``pending``: the valid deals around it were lost and the
    flush raised.  Now ``apply`` refuses it (counted invalid) and both others are written."""
    data = MarketData(LocalTime(), Retention())
    data.add_market("BTCUSD")
    assert data.apply(deals_message(0, BASE + 0.5, 1))
    assert not data.apply(deals_message(1, 1e20, 2))
    assert not data.apply(deals_message(2, -5.0, 3))
    assert data.apply(deals_message(3, BASE + 1.5, 4))
    assert data.invalid == 2
    changes = data.take_changes()
    assert changes is not None and changes.offset == 3
    assert [deal_id for deal_id, _ in data.markets["BTCUSD"].deals] == [4, 1]


def test_a_run_that_cannot_be_folded_leaves_the_others_folded() -> None:
    """Defence behind ``apply``'s checks: a pending run whose bucket cannot be computed is
    skipped (alerted); the runs around it fold and their deals are written."""
    data = MarketData(LocalTime(), Retention())
    market = data.add_market("BTCUSD")
    price, amount = Decimal("100.5"), Decimal("1")
    market.pending.extend([(BASE + 0.5, price, amount, 1, 1), (1e20, price, amount, 1, 2),
                           (BASE + 1.5, price, amount, 2, 3)])
    assert [deal_id for deal_id, _ in market.deals] == [3, 1]
    assert market.last == price
    assert (SEC, BASE) in market.dirty and (SEC, BASE + 1) in market.dirty
