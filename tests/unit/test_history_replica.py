"""The history follower's replica in history-only mode writes exactly the history of the full mode.

``MatchEngineService.set_history_only`` (the follower's replica) makes the engine build only the
events the history writer turns into rows and replays their records on a fast path that skips
the deliveries of operations without history.  For random operation sequences (deposits,
withdrawals, limit and market orders with options, stops, cancels of every kind, suspensions,
market changes): the same log replayed by a full replica and by a history-only one, each with
the real ``HistoryWriter`` on a SQLite history file, leaves the same rows in every table, the
same history mark and the same engine state; and per operation, the history-only engine's
events are exactly the full engine's events that make history rows.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange_server.common.config import MatchEngineConfig, load_matchengine
from exchange_server.common.errors import RpcError
from exchange_server.history.rows import ALL_KINDS
from exchange_server.history.store_sqlite import FILENAME, SqliteHistoryStore
from exchange_server.history.writer import HistoryWriter
from exchange_server.matchengine.core.model import (
    STOP_EVENT_PUT,
    BalanceChanged,
    Deal,
    Event,
    OrderFinished,
    StopChanged,
)
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import OperRecord
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from tests.support.ext_support import Ex, fingerprint
from tests.unit.test_conservation import ASSETS, CONFIG, MARKETS, USERS
from tests.unit.test_ext_property import operation, run

#: every user starts with some of every asset, so most orders are accepted and deal
FUNDING = [(user, asset) for user in USERS for asset in ASSETS]
#: the e2e load's orders (no options, one market): the follower's common case
plain_limit = st.tuples(st.just("limit"), st.sampled_from(USERS), st.just("BTCBCH"),
                        st.sampled_from([1, 2]), st.sampled_from(["0.01", "0.5", "2"]),
                        st.sampled_from(["99", "100", "101"]), st.just("0.002"), st.just("0.001"),
                        st.just(0))
operations = st.lists(st.one_of(operation, plain_limit, plain_limit), min_size=1, max_size=60)


def _history_event(e: Event) -> bool:
    """Whether the history writer turns ``e`` into rows (rows.rows_of)."""
    kind = type(e)
    if kind is StopChanged:
        return e.event != STOP_EVENT_PUT  # type: ignore[union-attr]
    return kind is BalanceChanged or kind is Deal or kind is OrderFinished


def config() -> MatchEngineConfig:
    return load_matchengine(CONFIG, embedded=True)


def _log(ops: list[tuple[Any, ...]]) -> Ex:
    ex = Ex(config())
    for user, asset in FUNDING:
        ex.deposit(user, asset, "1000")
    for name in MARKETS:  # a last price in every market (stops need one)
        ex.trade_at("100", market=name)
    for op in ops:
        try:
            run(ex, op)
        except RpcError:
            pass
    return ex


def _history(log_dir: Path, history_dir: Path, history_only: bool,
             flush_every: int) -> tuple[dict[str, list[tuple[Any, ...]]], int, dict[str, Any]]:
    """Replay the log in ``log_dir`` with a history writer on a new SQLite file, flushed every
    ``flush_every`` operations: every table's rows in id order, the stored mark and the
    engine's state."""
    store = SqliteEngineStore(log_dir)
    store.open()
    writer = HistoryWriter(SqliteHistoryStore(history_dir))
    service = MatchEngineService(config(), store)

    class Flushing:
        """The writer, flushed every ``flush_every`` operations (a flush between any two)."""

        def durable_mark(self) -> int:
            return writer.durable_mark()

        def start_after(self, oper_id: int) -> None:
            writer.start_after(oper_id)

        def on_events(self, oper_id: int, events: list[Event]) -> None:
            writer.on_events(oper_id, events)
            if oper_id % flush_every == 0:
                writer.flush_now()

        def overloaded(self) -> bool:
            return False

    service.add_sink(Flushing())  # type: ignore[arg-type]
    service.set_history_only(history_only)
    try:
        service.restore()
        writer.flush_now()
        state = fingerprint(service.engine)
        mark = writer.store.read_mark()
    finally:
        writer.stop()
        store.close()
    with sqlite3.connect(history_dir / FILENAME) as conn:
        tables = {kind: conn.execute(f'SELECT * FROM "{kind}" ORDER BY rowid').fetchall()
                  for kind in ALL_KINDS}
    return tables, mark, state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, st.sampled_from([1, 3, 1000]))
def test_history_only_replica_writes_the_full_replicas_history(ops: list[tuple[Any, ...]],
                                                               flush_every: int) -> None:
    ex = _log(ops)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "log").mkdir()
        store = SqliteEngineStore(root / "log")
        store.open()
        store.append([OperRecord(i, when, name, params)
                      for i, (when, name, params) in enumerate(ex.log, 1)])
        store.close()
        results = []
        for history_only in (False, True):
            history_dir = root / f"history-{history_only}"
            history_dir.mkdir()
            results.append(_history(root / "log", history_dir, history_only, flush_every))
    (full_tables, full_mark, full_state), (tables, mark, state) = results
    assert tables == full_tables
    assert full_mark == mark == len(ex.log)
    assert state == full_state == fingerprint(ex.engine)
    # the full replica stored what the live engine's events make (every deal and finish)
    assert len(full_tables["deal_history"]) == 2 * sum(
        type(e) is Deal for _, events in ex.ops for e in events)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_history_only_engine_makes_exactly_the_history_events(ops: list[tuple[Any, ...]]) -> None:
    """Per operation, the history-only engine's events are the full engine's history events
    (same values, same order), and its state is the same."""
    full = _log(ops)
    replica = Ex(config())
    replica.engine.set_history_only(True)
    for (when, name, params), (_, events) in zip(full.log, full.ops, strict=True):
        replica.methods.by_log_name[name].run(when, params)
        assert replica.engine.take_events() == [e for e in events if _history_event(e)]
    assert fingerprint(replica.engine) == fingerprint(full.engine)
