"""Replay is the service's one public operation (``replay_from``): restore, the rebuild after a
storage failure and the history follower all go through it, so a gap in the operation log is
the same error (:class:`OperLogGap`) for each of them."""

from __future__ import annotations

import decimal
import sqlite3
from collections import defaultdict
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from exchange_server.common.config import default_matchengine_data
from exchange_server.common.decimals import CONTEXT
from exchange_server.matchengine import methods as methods_module
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import (
    ASK,
    BID,
    OPTION_IOC,
    STP_CANCEL_MAKER,
    Deal,
    Event,
    OrderSnapshot,
)
from exchange_server.matchengine.service import PROGRESS_EVERY, MatchEngineService
from exchange_server.matchengine.store import OperLogGap, StoreError
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.matchprocess.follower import FATAL_EXIT, FollowerProcess, FollowerSpec
from tests.integration.test_methods import config
from tests.support.ext_support import fingerprint
from tests.support.waiting import wait_until


async def _write_log(data: Path, deposits: int) -> None:
    """A log of ``deposits`` balance updates (ids 1..deposits), no slice."""
    store = SqliteEngineStore(data)
    store.open()
    service = MatchEngineService(config(), store)
    await service.start()
    for n in range(1, deposits + 1):
        service.execute("balance.update", [1, "BTC", "deposit", n, "1", {}])
    await service.stop(final_slice=False)
    store.close()


def _drop_record(data: Path, oper_id: int) -> None:
    with sqlite3.connect(data / "trade_log.sqlite") as conn:
        conn.execute("DELETE FROM operlog WHERE id = ?", (oper_id,))


def _fresh(data: Path) -> MatchEngineService:
    store = SqliteEngineStore(data)
    store.open()
    return MatchEngineService(config(), store)


async def test_replay_from_applies_up_to_the_limit_and_reports_progress(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _write_log(data, PROGRESS_EVERY + 5)
    service = _fresh(data)
    seen: list[int] = []
    assert service.replay_from(service.store, 3) == 3
    assert service.oper_id == 3
    count = service.replay_from(service.store, progress=lambda: seen.append(service.oper_id))
    assert (count, service.oper_id, seen) == (PROGRESS_EVERY + 2, PROGRESS_EVERY + 5,
                                             [PROGRESS_EVERY + 3])
    assert service.execute("balance.query", [1, "BTC"])["BTC"]["available"] == (
        str(PROGRESS_EVERY + 5))
    service.store.close()


async def test_a_gap_is_one_error_for_restore_and_for_the_rebuild(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _write_log(data, 6)
    _drop_record(data, 4)
    service = _fresh(data)
    with pytest.raises(OperLogGap, match="operation log gap: expected id 4, found 5") as gap:
        service.restore()
    assert (gap.value.expected, gap.value.found) == (4, 5)
    assert isinstance(gap.value, StoreError)  # the command's "cannot start" line
    with pytest.raises(OperLogGap, match="expected id 4, found 5"):
        service._load_durable(6)
    service.store.close()


async def test_the_follower_stops_for_good_on_a_gap(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _write_log(data, 6)
    _drop_record(data, 4)
    follower = FollowerProcess(FollowerSpec(default_matchengine_data(), True, str(data), "sqlite"))
    follower.set_durable(6)
    follower.start()
    try:
        wait_until(lambda: not follower._process.is_alive(), 60,
                   message="the follower stopping at the gap")
        assert follower._process.exitcode == FATAL_EXIT
        follower.check()
        assert follower.failed and follower.restarts == 0
    finally:
        follower.stop(timeout=10)


class _Recorder:
    """A sink that has processed the operations up to ``mark`` and records what it is given."""

    def __init__(self, mark: int) -> None:
        self.mark = mark
        self.got: dict[int, list[Event]] = {}

    def durable_mark(self) -> int:
        return self.mark

    def start_after(self, oper_id: int) -> None:
        self.mark = max(self.mark, oper_id)

    def on_events(self, oper_id: int, events: list[Event]) -> None:
        self.got[oper_id] = events

    def overloaded(self) -> bool:
        return False


async def test_a_replay_builds_events_only_for_what_a_sink_has_not_processed(
        tmp_path: Path) -> None:
    """Up to the lowest sink mark (or all of it without sinks) the engine replays quietly; after
    it every operation's events are the ones a full replay gives, and the state is the same."""
    data = tmp_path / "data"
    store = SqliteEngineStore(data)
    store.open()
    service = MatchEngineService(config(), store)
    await service.start()
    for user in (1, 2):
        service.execute("balance.update", [user, "BTC", "deposit", user, "100", {}])
        service.execute("balance.update", [user, "BCH", "deposit", user, "100000", {}])
    for n in range(40):  # alternating sides around 100: about half of them trade
        side = 1 + n % 2
        price = f"{100 + (n % 5 - 2) * (1 if side == 2 else -1)}"
        service.execute("order.put_limit", [1 + n % 2, "BTCBCH", side, f"0.{n % 9 + 1}", price,
                                            "0.002", "0.001", "t"])
    last = service.oper_id
    await service.stop(final_slice=False)
    store.close()

    def restored(*sinks: _Recorder) -> MatchEngineService:
        replica = _fresh(data)
        for sink in sinks:
            replica.add_sink(sink)
        replica.restore()
        replica.store.close()
        assert not replica.engine.quiet and replica.oper_id == last
        return replica

    full, behind, ahead = _Recorder(0), _Recorder(20), _Recorder(30)
    everything = restored(full)
    assert sorted(full.got) == list(range(1, last + 1))
    assert any(type(e) is Deal for events in full.got.values() for e in events)
    partial = restored(behind, ahead)
    assert sorted(behind.got) == sorted(ahead.got) == list(range(21, last + 1))
    assert {i: full.got[i] for i in range(21, last + 1)} == behind.got
    silent = restored()
    assert fingerprint(partial.engine) == fingerprint(everything.engine)
    assert fingerprint(silent.engine) == fingerprint(everything.engine)


async def _write_orders(data: Path) -> MatchEngineService:
    """A log of deposits then put_limit orders whose amounts times prices need more than 9
    digits, about half of them crossing, in the original's 8 params and the fork's layout;
    the live service (stopped, no slice) is returned."""
    store = SqliteEngineStore(data)
    store.open()
    service = MatchEngineService(config(), store)
    await service.start()
    for user in (1, 2, 3):
        service.execute("balance.update", [user, "BTC", "deposit", user, "1000", {}])
        service.execute("balance.update", [user, "BCH", "deposit", user, "1000000", {}])
    for n in range(60):
        side = 1 + n % 2
        price = f"{123 + (n % 5 - 2) * (1 if side == 2 else -1)}.4567{n % 7}891"
        params: list[object] = [1 + n % 3, "BTCBCH", side, f"0.1234567{n % 9}", price,
                                "0.0021", "0.0013", "t"]
        if n % 4 == 3:
            params += [None, None, 0, f"c{n}"]  # the fork's layout: not the quiet 8 params
        service.execute("order.put_limit", params)
    await service.stop(final_slice=False)
    store.close()
    return service


async def test_a_quiet_replay_gives_the_live_state_whatever_the_threads_context(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quiet replay runs the engine's put_limit without its context wrapper, under one
    context installed for the whole replay: the state is exactly the live one even when the
    restoring thread holds a context that would round the amounts, whose decimals are new to
    the process (read in full) or accepted before, and the thread's context comes back."""
    data = tmp_path / "data"
    live = await _write_orders(data)
    hostile = decimal.Context(prec=9, rounding=decimal.ROUND_UP, traps=[])
    for cold in (True, False):
        if cold:  # every decimal text new: _read_limit's full reading of each
            monkeypatch.setattr(methods_module, "_ACCEPTED_POSITIVE", defaultdict(dict))
            monkeypatch.setattr(methods_module, "_ACCEPTED_FEE", defaultdict(dict))
        replica = _fresh(data)
        decimal.setcontext(hostile)
        try:
            replica.restore()
            assert decimal.getcontext() is hostile
        finally:
            decimal.setcontext(CONTEXT)
        replica.store.close()
        assert replica.replayed == live.oper_id
        assert fingerprint(replica.engine) == fingerprint(live.engine)


async def test_a_quiet_replay_reads_what_a_full_replay_reads_under_a_changed_config(
        tmp_path: Path) -> None:
    """With the market's precisions lowered since the log was written, a quiet replay (no
    sink) truncates the logged amounts as a full one (a sink that wants every event, which
    reads each order through ``_read_limit``) does: the quiet path's shortcut for decimals
    accepted before is taken only at the precision they were accepted at."""
    data = tmp_path / "data"
    live = await _write_orders(data)
    lower = config()
    market = next(m for m in lower.markets if m.name == "BTCBCH")
    lower.markets[lower.markets.index(market)] = replace(market, stock_prec=5, money_prec=3)

    def restored(*sinks: _Recorder) -> MatchEngineService:
        store = SqliteEngineStore(data)
        store.open()
        replica = MatchEngineService(lower, store)
        for sink in sinks:
            replica.add_sink(sink)
        replica.restore()
        store.close()
        return replica

    quiet, full = restored(), restored(_Recorder(0))
    assert fingerprint(quiet.engine) == fingerprint(full.engine)
    assert fingerprint(quiet.engine) != fingerprint(live.engine)  # the precisions do bite


def test_a_quiet_put_limit_gives_no_reply_and_the_same_state() -> None:
    """While quiet (a replay) the core's put_limit makes no reply (None: building the order's
    snapshot was 4% of a replayed order); the state it leaves is the one of a put_limit that
    replies, for resting, filled, self-trade-prevented and immediate-or-cancel orders."""
    fee = Decimal("0.001")
    orders = [  # user, side, amount, price, option
        (1, ASK, "2", "100", 0), (2, BID, "1", "101", 0), (1, ASK, "1", "99", 0),
        (1, BID, "0.5", "100", STP_CANCEL_MAKER), (2, ASK, "3", "102", 0),
        (3, BID, "5", "102", OPTION_IOC), (3, BID, "1", "98", 0)]

    def run(quiet: bool) -> tuple[Engine, list[OrderSnapshot | None]]:
        engine = Engine.from_config(config())
        for user in (1, 2, 3):
            engine.update_balance(0.0, user, "BTC", "deposit", user, Decimal("10"), {})
            engine.update_balance(0.0, user, "BCH", "deposit", user, Decimal("10000"), {})
        engine.take_events()
        engine.set_quiet(quiet)
        market = engine.markets["BTCBCH"]
        replies = [engine.put_limit(float(n), market, user, side, Decimal(amount),
                                    Decimal(price), fee, fee, "t", option)
                   for n, (user, side, amount, price, option) in enumerate(orders)]
        engine.set_quiet(False)
        return engine, replies

    (loud, replies), (quiet, none) = run(False), run(True)
    assert none == [None] * len(orders)
    assert all(type(reply) is OrderSnapshot for reply in replies)
    assert any(reply is not None and reply.stp_cancelled_orders for reply in replies)
    assert loud.deal_id > 0 and loud.events and not quiet.events
    assert fingerprint(quiet) == fingerprint(loud)
