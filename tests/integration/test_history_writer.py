"""HistoryWriter + stores, on SQLite and on the real MariaDB: stored rows, exactly-once across a
crash, a lost COMMIT answer, retries on database errors, the overload bound."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import MysqlConfig
from exchange_server.history.rows import (
    BALANCE,
    DEAL,
    DETAIL,
    KINDS,
    ORDER,
    USER_DEAL,
    decimal_text,
    rows_of,
)
from exchange_server.history.store import HistoryStoreError
from exchange_server.history.store_mysql import MysqlHistoryStore, init_schema
from exchange_server.history.writer import HistoryWriter, _operations
from tests.support.history_support import (
    T0,
    FlakyStore,
    HistoryBackend,
    LostCommitStore,
    Ops,
    mysql_drop,
    run_session,
    scripted_ops,
    small_methods,
)
from tests.support.waiting import wait_until_async

#: Generous deadline for the writer and the database (MariaDB is shared and may be loaded).
DEADLINE = 60.0


def feed(writer: HistoryWriter, ops: Ops) -> None:
    for oper_id, events in ops:
        writer.on_events(oper_id, events)


def total_rows(ops: Ops) -> int:
    return sum(len(rows_of(events)) for _, events in ops)


def write_all(backend: HistoryBackend, location: Any, ops: Ops) -> HistoryWriter:
    """A new writer on ``location`` (nothing stored yet) given ``ops``, flushed."""
    writer = HistoryWriter(backend.store(location))
    assert writer.durable_mark() == 0
    feed(writer, ops)
    writer.flush_now()
    return writer


def reference_dump(backend: HistoryBackend, ops: Ops) -> dict[str, list[tuple[Any, ...]]]:
    location = backend.new_location()
    write_all(backend, location, ops)
    return backend.dump(location)


def many_ops(n_users: int = 30, rounds: int = 4) -> Ops:
    """A busier session: deposits then crossing orders between many users."""
    requests: list[tuple[float, str, list[Any]]] = []
    t = T0
    for u in range(1, n_users + 1):
        t += 1
        requests.append((t, "balance.update", [u, "BTC", "deposit", u, "100", {"u": u}]))
        t += 1
        requests.append((t, "balance.update", [u, "BCH", "deposit", 1000 + u, "100000", {}]))
    for r in range(rounds):
        for u in range(1, n_users + 1):
            t += 1
            side = 1 if (u + r) % 2 else 2
            price = str(100 + (u % 5))
            requests.append((t, "order.put_limit",
                             [u, "BTCBCH", side, "0.5", price, "0.002", "0.001", f"r{r}"]))
    return run_session(small_methods(), requests)


# -- stored rows ----------------------------------------------------------------------------------


def test_stored_rows(history_backend: HistoryBackend) -> None:
    ops = scripted_ops()
    location = history_backend.new_location()
    writer = HistoryWriter(history_backend.store(location))
    assert writer.durable_mark() == 0
    feed(writer, ops)
    assert writer.pending_rows == total_rows(ops) == 30
    writer.flush_now()
    assert writer.pending_rows == 0 and writer.durable_id == 11
    assert history_backend.mark(location) == 11
    dump = history_backend.dump(location)
    assert {k: len(v) for k, v in dump.items()} == {
        BALANCE: 16, ORDER: 3, DETAIL: 3, DEAL: 4, USER_DEAL: 4}
    user1 = [r for r in dump[BALANCE] if r[1] == 1]
    assert user1[0] == (T0 + 1, 1, "BTC", "deposit", "10.00000000", "10.0000000000000000",
                        '{"k": "v", "id": 1}')
    assert user1[-1] == (T0 + 10, 1, "BCH", "trade", "-0.07200000", "185.7780000000000000",
                         '{"a": "0.4", "f": "0.002", "i": 5, "m": "BTCBCH", "p": "90"}')
    order5 = [r for r in dump[DETAIL] if r[0] == 5][0]
    assert order5 == (5, T0 + 10, T0 + 10, 1, "BTCBCH", "m1", 2, 1, "0.00000000", "0.40000000",
                      "0.0020", "0.0000", "0.40000000", "36.0000000000000000",
                      "0.0720000000000000")
    assert dump[ORDER] == sorted(dump[DETAIL], key=lambda r: (r[3] % 100, r[0])) \
        if history_backend.kind == "mysql" else dump[ORDER] == dump[DETAIL]
    deal_rows = sorted(dump[DEAL], key=lambda r: (r[2], r[3]))
    assert deal_rows[0] == (T0 + 5, 1, 1, 1, 2, 1, "100.00000000", "1.50000000",
                            "150.0000000000000000", "0.1500000000000000", "0.0030000000000000")
    # a second writer on the same database starts after the mark and adds nothing
    again = HistoryWriter(history_backend.store(location))
    assert again.durable_mark() == 11
    feed(again, ops)
    assert again.pending_rows == 0
    again.flush_now()
    assert history_backend.dump(location) == dump


def test_ids_follow_event_order(history_backend: HistoryBackend) -> None:
    """Rows of one table get increasing ids in event order (readhistory orders by id DESC)."""
    ops = scripted_ops()
    location = history_backend.new_location()
    writer = HistoryWriter(history_backend.store(location), batch_rows=5)
    writer.durable_mark()
    feed(writer, ops)
    writer.flush_now()
    assert writer.flushes > 1
    if history_backend.kind == "sqlite":
        rows = history_backend.query(location, "SELECT `change`, `time` FROM `balance_history` "
                                               "WHERE `user_id` = 1 ORDER BY `id`")
    else:
        rows = history_backend.query(location, "SELECT `change`, `time` FROM `balance_history_1` "
                                               "WHERE `user_id` = 1 ORDER BY `id`")
    assert [decimal_text(r[0], 8) for r in rows] == ["10", "-1.5", "150", "-0.15", "-0.4", "36",
                                                     "-0.072"]


# -- exactly once ---------------------------------------------------------------------------------


def test_crash_and_replay_exactly_once(history_backend: HistoryBackend) -> None:
    ops = many_ops()
    reference = reference_dump(history_backend, ops)
    location = history_backend.new_location()
    first = HistoryWriter(history_backend.store(location), batch_rows=50)
    first.durable_mark()
    cut = len(ops) * 2 // 3
    feed(first, ops[:cut // 2])
    first.flush_now()
    feed(first, ops[cut // 2:cut])
    batch = first._take()  # half of what is queued goes in flight...
    # ...committed, then the process dies
    first.store.write(_operations(batch, first.store.rows_of))
    mark = history_backend.mark(location)
    assert ops[cut // 2][0] <= mark < ops[cut - 1][0]
    del first  # crash: queued rows are gone

    second = HistoryWriter(history_backend.store(location), batch_rows=50)
    assert second.durable_mark() == mark
    feed(second, ops)  # the matchengine replays its log from before the mark
    assert second.pending_rows == sum(len(rows_of(e)) for i, e in ops if i > mark)
    second.flush_now()
    assert history_backend.dump(location) == reference
    assert history_backend.mark(location) == ops[-1][0]


async def test_lost_commit_answer_is_not_doubled(history_backend: HistoryBackend) -> None:
    ops = scripted_ops()
    reference = reference_dump(history_backend, ops)
    location = history_backend.new_location()
    store = LostCommitStore(history_backend.store(location), failures=2)
    writer = HistoryWriter(store, retry_delay=0.05)
    writer.durable_mark()
    writer.start()
    try:
        feed(writer, ops[:6])
        await writer.drain(timeout=DEADLINE)
        feed(writer, ops[6:])
        await writer.drain(timeout=DEADLINE)
    finally:
        assert writer.stop()
    assert store.attempts >= 3 and writer.errors == 2
    assert history_backend.dump(location) == reference


def test_duplicate_delivery_is_dropped(history_backend: HistoryBackend) -> None:
    ops = scripted_ops()
    location = history_backend.new_location()
    writer = HistoryWriter(history_backend.store(location))
    writer.durable_mark()
    feed(writer, ops)
    feed(writer, ops[3:7])  # delivered twice
    writer.flush_now()
    assert writer.rows_written == total_rows(ops)


# -- database errors ------------------------------------------------------------------------------


async def test_failing_store_keeps_rows_and_retries(history_backend: HistoryBackend) -> None:
    ops = many_ops(10, 2)
    reference = reference_dump(history_backend, ops)
    location = history_backend.new_location()
    store = FlakyStore(history_backend.store(location), failures=3)
    writer = HistoryWriter(store, retry_delay=0.05, flush_interval=0.01, batch_rows=40)
    writer.durable_mark()
    writer.start()
    try:
        for op in ops:
            feed(writer, [op])
            await asyncio.sleep(0)
        await writer.drain(timeout=DEADLINE)
    finally:
        assert writer.stop()
    assert writer.errors == 3 and not writer.failing
    assert history_backend.dump(location) == reference


@pytest.mark.mysql
async def test_mysql_database_dropped_and_recreated(mysql_config: Any) -> None:
    cfg: MysqlConfig = mysql_config("test_history")
    ops = scripted_ops()
    writer = HistoryWriter(MysqlHistoryStore(cfg), retry_delay=0.05, flush_interval=0.01)
    writer.durable_mark()
    writer.start()
    try:
        feed(writer, ops[:5])
        await writer.drain(timeout=DEADLINE)
        mysql_drop(cfg)  # the database disappears under the writer
        feed(writer, ops[5:])
        await wait_until_async(lambda: writer.failing, DEADLINE, message="the writer failing")
        assert writer.failing and writer.pending_rows == total_rows(ops[5:])
        init_schema(cfg)  # back, empty: the writer stores what it still holds, once
        await writer.drain(timeout=DEADLINE)
        assert not writer.failing
    finally:
        assert writer.stop()
    backend = HistoryBackend("mysql", Path("."))
    dump = backend.dump(cfg)
    assert sum(len(v) for v in dump.values()) == total_rows(ops[5:])
    assert backend.mark(cfg) == 11


@pytest.mark.mysql
async def test_mysql_wrong_port_then_fixed(mysql_config: Any) -> None:
    good: MysqlConfig = mysql_config("test_history")
    bad = MysqlConfig(host=good.host, port=1, user=good.user, password=good.password,
                      name=good.name)
    with pytest.raises(HistoryStoreError):
        HistoryWriter(MysqlHistoryStore(bad)).durable_mark()
    init_schema(good)
    store = MysqlHistoryStore(bad)
    writer = HistoryWriter(store, retry_delay=0.05, flush_interval=0.01)
    writer._last_id = 0  # as if the mark had been read (0)
    ops = scripted_ops()
    writer.start()
    try:
        feed(writer, ops)
        await wait_until_async(lambda: writer.failing, DEADLINE, message="the writer failing")
        assert writer.failing and writer.pending_rows == total_rows(ops)
        store.cfg = good  # the operator fixes the network
        await writer.drain(timeout=DEADLINE)
    finally:
        assert writer.stop()
    assert HistoryBackend("mysql", Path(".")).mark(good) == 11


# -- overload -------------------------------------------------------------------------------------


async def test_overloaded_while_backlog_over_bound(history_backend: HistoryBackend) -> None:
    ops = many_ops(10, 3)
    location = history_backend.new_location()
    store = FlakyStore(history_backend.store(location), failures=10**9)
    writer = HistoryWriter(store, max_pending_rows=40, retry_delay=0.02, flush_interval=0.01)
    writer.durable_mark()
    writer.start()
    try:
        seen_ok = False
        for op in ops:
            if writer.overloaded():
                break
            seen_ok = True
            feed(writer, [op])
        assert seen_ok and writer.overloaded() and writer.pending_rows >= 40
        await wait_until_async(lambda: writer.failing, DEADLINE, message="the writer failing")
        assert writer.overloaded() and writer.failing  # the database still refuses
        store.failures = 0
        await writer.drain(timeout=DEADLINE)
        assert not writer.overloaded() and writer.pending_rows == 0
    finally:
        assert writer.stop()


def test_overloaded_without_thread(history_backend: HistoryBackend) -> None:
    ops = many_ops(5, 1)
    location = history_backend.new_location()
    writer = HistoryWriter(history_backend.store(location), max_pending_rows=10)
    writer.durable_mark()
    feed(writer, ops[:2])
    assert writer.pending_rows == 2 and not writer.overloaded()
    feed(writer, ops[2:])
    assert writer.overloaded()
    writer.flush_now()
    assert not writer.overloaded()


# -- life cycle -----------------------------------------------------------------------------------


async def test_background_flush_interval(history_backend: HistoryBackend) -> None:
    ops = scripted_ops()
    location = history_backend.new_location()
    writer = HistoryWriter(history_backend.store(location), flush_interval=0.05)
    writer.durable_mark()
    writer.start()
    try:
        feed(writer, ops)
        # written without being asked
        await wait_until_async(lambda: history_backend.mark(location) >= 11, DEADLINE,
                               message="the background flush")
    finally:
        assert writer.stop()


def test_stop_gives_up_after_timeout(history_backend: HistoryBackend) -> None:
    ops = scripted_ops()
    location = history_backend.new_location()
    store = FlakyStore(history_backend.store(location), failures=10**9)
    writer = HistoryWriter(store, retry_delay=0.05)
    writer.durable_mark()
    writer.start()
    feed(writer, ops)
    started = time.monotonic()
    assert writer.stop(timeout=0.3) is False
    # it retried until its deadline, then gave up instead of waiting for the database (the
    # upper bound only catches a hang: a loaded machine may take far longer than 0.3 s)
    assert 0.25 < time.monotonic() - started < DEADLINE
    assert writer.pending_rows == total_rows(ops)
    assert history_backend.mark(location) == 0  # replayed from the operation log next start


def test_stop_writes_everything(history_backend: HistoryBackend) -> None:
    ops = scripted_ops()
    location = history_backend.new_location()
    writer = HistoryWriter(history_backend.store(location), flush_interval=60)
    writer.durable_mark()
    writer.start()
    feed(writer, ops)
    assert writer.stop() is True
    assert history_backend.mark(location) == 11


def test_on_events_never_touches_the_database(history_backend: HistoryBackend) -> None:
    """on_events with a database that blocks: returns at once."""
    location = history_backend.new_location()
    inner = history_backend.store(location)
    gate = threading.Event()
    written: list[int] = []  # writes that got past the gate

    class Blocking(FlakyStore):
        def write(self, batch: Any) -> int:
            gate.wait(DEADLINE)
            written.append(len(batch))
            return self.inner.write(batch)

    writer = HistoryWriter(Blocking(inner, 0), flush_interval=0.001)
    writer.durable_mark()
    writer.start()
    try:
        ops = many_ops(10, 2)
        feed(writer, ops)
        # every event was accepted while the database still blocked (no timing: had on_events
        # waited for the database, a write would have got past the gate first)
        assert not written and writer.pending_rows == total_rows(ops)
    finally:
        gate.set()
        assert writer.stop()
    assert sum(len(v) for v in history_backend.dump(location).values()) == total_rows(ops)


def test_kinds_cover_all_tables() -> None:
    assert set(KINDS) == {BALANCE, ORDER, DETAIL, DEAL, USER_DEAL}


NASTY = ["it's", 'say "hi"', "back\\slash", "nul\x00byte", "line\nbreak\r\x1a", "😀 emoji",
         "'); DROP TABLE balance_history_1; --", "100%s %(x)s ?", "\\'"]


async def test_strings_round_trip(history_backend: HistoryBackend) -> None:
    """Client strings (business names, detail JSON) are stored and read back exactly."""
    from exchange_server.readhistory.service import ReadHistoryService

    requests: list[tuple[float, str, list[Any]]] = []
    for i, text in enumerate(NASTY, start=1):
        requests.append((T0 + i, "balance.update",
                         [1, "BTC", text[:30], i, "1", {"note": text, text: [text]}]))
    ops = run_session(small_methods(), requests)
    assert len(ops) == len(NASTY)
    location = history_backend.new_location()
    writer = HistoryWriter(history_backend.store(location))
    writer.durable_mark()
    feed(writer, ops)
    writer.flush_now()
    service = ReadHistoryService(history_backend.reader(location), worker_num=1)
    try:
        import json

        reply = json.loads(await service.call("balance.history", [1, "", "", 0, 0, 0, 100], 1))
        records = reply["result"]["records"]
        assert [r["business"] for r in records] == [t[:30] for t in reversed(NASTY)]
        assert [r["detail"] for r in records] == [
            {"note": t, t: [t], "id": i} for i, t in reversed(list(enumerate(NASTY, start=1)))]
        for text in NASTY:
            one = json.loads(await service.call("balance.history", [1, "", text[:30], 0, 0, 0, 100], 2))
            assert [r["business"] for r in one["result"]["records"]] == [text[:30]]
    finally:
        service.close()


@pytest.mark.mysql
def test_mysql_flush_in_pipelined_steps(tmp_path: Path, mysql_config: Any) -> None:
    """One flush touching more (table, shard) groups than a pipelined step holds (its INSERT
    texts built by the builder thread while MariaDB runs the previous step's) stores exactly the
    rows the SQLite store stores for the same operations."""
    from exchange_server.history.rows import SHARD_FIELD
    from exchange_server.history.store_mysql import PIPELINE_GROUPS

    ops = many_ops(n_users=150, rounds=2)
    sqlite = HistoryBackend("sqlite", tmp_path)
    mysql = HistoryBackend("mysql", tmp_path, mysql_config)
    try:
        expected = reference_dump(sqlite, ops)
        location = mysql.new_location()
        writer = HistoryWriter(mysql.store(location), batch_rows=10**6)
        writer.durable_mark()
        feed(writer, ops)
        writer.flush_now()
        assert writer.flushes == 1  # the whole session in one flush
        got = mysql.dump(location)
        groups = {(kind, int(row[SHARD_FIELD[kind]]) % 100) for kind, rows in got.items()
                  for row in rows}
        assert len(groups) > 2 * PIPELINE_GROUPS  # so it ran in three steps or more
        assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v)
                                                          for k, v in expected.items()}
        assert mysql.mark(location) == ops[-1][0]
    finally:
        mysql.close()
        sqlite.close()


# -- SQLite: order_detail as a view of order_history ----------------------------------------------


def _old_detail_table() -> str:
    """order_detail's table as a file made before the view has it."""
    from exchange_server.history.rows import TABLES
    from exchange_server.history.store_sqlite import _sqlite_type

    cols = ['"id" INTEGER PRIMARY KEY'] + [f'"{name}" {_sqlite_type(sql_type)} NOT NULL'
                                          for name, sql_type in TABLES[DETAIL][1:]]
    return f'CREATE TABLE IF NOT EXISTS "order_detail" ({", ".join(cols)})'


def _detail_type(backend: HistoryBackend, location: Any) -> str:
    rows = backend.query(location, "SELECT `type` FROM sqlite_master WHERE `name` = 'order_detail'")
    return str(rows[0][0])


def test_sqlite_order_detail_is_a_view_of_order_history(tmp_path: Path) -> None:
    """A new SQLite file has order_detail as a view: every finished order once, answered the same
    as the table did (rows, and readhistory's order detail by id)."""
    backend = HistoryBackend("sqlite", tmp_path)
    try:
        ops = scripted_ops()
        location = backend.new_location()
        writer = write_all(backend, location, ops)
        assert writer.rows_written == total_rows(ops)
        assert _detail_type(backend, location) == "view"
        dump = backend.dump(location)
        assert len(dump[ORDER]) == 3 and dump[DETAIL] == dump[ORDER]
        assert dump == reference_dump(backend, ops)  # a second new file: the same
        reader = backend.reader(location)
        detail = reader.order_detail(5)
        assert detail is not None and detail[0] == 5 and reader.order_detail(99) is None
        plan = backend.query(location, "EXPLAIN QUERY PLAN SELECT * FROM `order_detail` "
                                       "WHERE `id` = 5")
        assert "INTEGER PRIMARY KEY" in plan[0][-1]  # a rowid lookup in order_history
    finally:
        backend.close()


def test_sqlite_file_with_an_order_detail_table_keeps_it(tmp_path: Path) -> None:
    """A file made before the view keeps its order_detail table (no migration), still written."""
    import sqlite3

    from exchange_server.history.store_sqlite import FILENAME

    backend = HistoryBackend("sqlite", tmp_path)
    try:
        ops = scripted_ops()
        location = backend.new_location()
        with sqlite3.connect(Path(location) / FILENAME) as conn:
            conn.execute(_old_detail_table())
        write_all(backend, location, ops)
        assert _detail_type(backend, location) == "table"
        assert backend.query(location, "SELECT count(*) FROM `order_detail`")[0][0] == 3
        assert backend.dump(location) == reference_dump(backend, ops)
    finally:
        backend.close()


def test_sqlite_older_version_writing_a_file_with_the_view(tmp_path: Path) -> None:
    """An older version on a file with the view: its schema statement and its order_detail
    inserts do nothing (the trigger ignores them) and its history goes on, the same rows."""
    import sqlite3

    from exchange_server.history.rows import ROW_CONVERTERS
    from exchange_server.history.store_sqlite import FILENAME, insert_sql

    backend = HistoryBackend("sqlite", tmp_path)
    try:
        ops = scripted_ops()
        location = backend.new_location()
        write_all(backend, location, ops)
        before = backend.dump(location)
        details = [ROW_CONVERTERS[DETAIL](row) for _, events in ops
                   for kind, row in rows_of(events) if kind == DETAIL]
        assert len(details) == 3
        with sqlite3.connect(Path(location) / FILENAME) as conn:
            conn.execute(_old_detail_table())
            conn.executemany(insert_sql(DETAIL), details)
            conn.execute(insert_sql(DETAIL, 3), [v for row in details for v in row])
        assert _detail_type(backend, location) == "view"
        assert backend.dump(location) == before
    finally:
        backend.close()
