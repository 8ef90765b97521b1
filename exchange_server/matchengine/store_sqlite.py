"""The embedded backend of :class:`EngineStore`: SQLite files in the data directory.

``<dir>/trade_log.sqlite`` holds the operation log, table ``operlog(id, time, detail, checksum)``:
the original's columns (detail is the JSON text ``{"method": ..., "params": [...]}``, keys in the
client's order: see logcodec) and the record's CRC-32
(:func:`~exchange_server.matchengine.store.record_checksum`, added to older files on open; NULL =
not checksummed), and a one-row ``probe`` table written to test that the disk takes writes
again.  ``append`` is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` under
``synchronous=FULL``, so a batch is durable when it returns.

``<dir>/slices.sqlite`` holds the slices, in a separate file so that a forked child writing a
big slice never holds a lock the log writer needs: ``slice_history`` as in MySQL and, per slice
time T, ``slice_order_T``, ``slice_balance_T`` and ``slice_update_T`` (the balance.update dedup
window), and since the fork's extensions ``slice_stop_T`` (pending stop orders) and
``slice_config_T`` (runtime configuration: assets and markets as admin commands left them, and
each market's last price and suspension, as JSON).  ``slice_history.checksum`` holds the
slice's :func:`~exchange_server.matchengine.store.state_checksum` (NULL: not checksummed).
``slice_state_T`` holds the same state as one checksummed document
(:mod:`~exchange_server.matchengine.slicedoc`), which a restart reads instead of the tables,
about three times faster; the tables are read when it is absent (older slices) or damaged.
Slices written before these tables (and before ``slice_order_T`` had its ``option`` and
``client_id`` columns) still load.  Decimals
are stored as TEXT (``str(Decimal)``), which is exact and keeps the exponent, times as REAL
(IEEE doubles, exact), business ids as TEXT (they are unsigned 64-bit, beyond SQLite's signed
INTEGER).  Orders keep their ``source``.

Fork safety: the slice file is opened for each operation and closed after it, so a parent never
holds a connection to it when it forks, and a clone (see :meth:`SqliteEngineStore.clone`) only
opens the log file if the child really uses the log.  SQLite must not be in use by another
thread of the parent at the moment of ``fork()`` (its internal mutexes would be copied locked).

The operlog detail codec (:func:`encode_detail`, :func:`decode_detail`) lives in
:mod:`exchange_server.matchengine.logcodec`, shared with the MySQL backend.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from exchange_server.matchengine import slicedoc
from exchange_server.matchengine.core.engine import EngineState
from exchange_server.matchengine.logcodec import LogRow, decode_rows, encode_detail
from exchange_server.matchengine.slicerows import (
    ORDER_DECIMALS,
    SLICE_KINDS,
    STOP_DECIMALS,
    balances_from_rows,
    decode_config_detail,
    encode_config_detail,
    order_decimals,
    orders_from_rows,
    slice_time,
    stop_decimals,
    stop_from_row,
    unpublished_slice_times,
)
from exchange_server.matchengine.store import (
    EngineStore,
    OperRecord,
    SliceInfo,
    StoreError,
    check_slice,
    record_checksum,
    state_checksum,
)
from exchange_server.storage import sqlite as sqlite_db
from exchange_server.storage.forkguard import FORK_GUARD

T = TypeVar("T")

log = logging.getLogger("exchange_server.matchengine")

LOG_FILE = "trade_log.sqlite"
SLICE_FILE = "slices.sqlite"

#: Rows per query when reading the operation log.
PAGE = 5000
#: Rows per INSERT into the operation log (at most; 4 parameters a row, far below SQLite's
#: 32,766).  Each row count is its own statement text, and the sqlite3 module caches 128
#: statements per connection: 64 sizes stay compiled beside the log's other statements.
INSERT_ROWS = 64
#: a record's values as stored: id, time, detail, checksum
Value = int | float | str
Row = tuple[Value, Value, Value, Value]


@functools.cache
def insert_sql(rows: int) -> str:
    """The INSERT of ``rows`` operation-log records (id, time, detail, checksum each)."""
    return ("INSERT INTO operlog (id, time, detail, checksum) VALUES "
            + ", ".join(["(?, ?, ?, ?)"] * rows))


class SqliteEngineStore(EngineStore):
    def __init__(self, directory: str | Path, *, _clone: bool = False) -> None:
        self.directory = Path(directory)
        self.log_path = self.directory / LOG_FILE
        self.slice_path = self.directory / SLICE_FILE
        self._clone = _clone
        self._log: sqlite3.Connection | None = None
        #: checksums of slices written by write_slice_data, for publish_slice
        self._slice_sums: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"SqliteEngineStore({str(self.directory)!r})"

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create data directory {self.directory}: {e}") from e
        if not self._clone:
            self._log_conn()
        with self._slice_db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS slice_history ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " time INTEGER NOT NULL,"
                " end_oper_id INTEGER NOT NULL,"
                " end_order_id INTEGER NOT NULL,"
                " end_deals_id INTEGER NOT NULL,"
                " checksum INTEGER)"
            )
            _add_column(db, "slice_history", "checksum", "checksum INTEGER")

    def close(self) -> None:
        if self._log is not None:
            conn, self._log = self._log, None
            try:
                conn.close()
            except sqlite3.Error as e:
                raise StoreError(f"{self.log_path}: {e}") from e

    def clone(self) -> SqliteEngineStore:
        """A fresh store on the same directory.  It does not connect to the log file in
        ``open()`` (a forked child writing a slice must not touch it); it would on first use of
        the log."""
        return SqliteEngineStore(self.directory, _clone=True)

    def _log_conn(self) -> sqlite3.Connection:
        if self._log is None:
            try:
                conn = sqlite_db.connect(self.log_path)
                try:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS operlog ("
                        " id INTEGER PRIMARY KEY,"
                        " time REAL NOT NULL,"
                        " detail TEXT NOT NULL,"
                        " checksum INTEGER)"
                    )
                    _add_column(conn, "operlog", "checksum", "checksum INTEGER")
                except BaseException:
                    conn.close()
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"{self.log_path}: {e}") from e
            self._log = conn
        return self._log

    @contextmanager
    def _slice_db(self) -> Iterator[sqlite3.Connection]:
        """A connection to the slice file for one operation; errors become StoreError."""
        try:
            conn = sqlite_db.connect(self.slice_path)
        except sqlite3.Error as e:
            raise StoreError(f"{self.slice_path}: {e}") from e
        try:
            yield conn
        except sqlite3.Error as e:
            raise StoreError(f"{self.slice_path}: {e}") from e
        finally:
            conn.close()  # rolls back whatever is left open

    def _slice_read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read(connection)`` on the slice file.  When the normal connection fails (on a full
        disk SQLite cannot create the file's shared-memory index), read again through a
        connection in exclusive locking mode, which needs no shared memory: the engine can be
        rebuilt from a slice while the disk is still full."""
        try:
            with self._slice_db() as db:
                return read(db)
        except StoreError as error:
            if not isinstance(error.__cause__, sqlite3.Error):
                raise
            try:
                conn = sqlite3.connect(str(self.slice_path),
                                       timeout=sqlite_db.BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
            except sqlite3.Error as e:
                raise StoreError(f"{error}; read-only: {e}") from e
            try:
                conn.execute("PRAGMA locking_mode = EXCLUSIVE")
                return read(conn)
            except sqlite3.Error as e:
                raise StoreError(f"{error}; read-only: {e}") from e
            finally:
                conn.close()

    # -- operation log ---------------------------------------------------------------------------

    def append(self, records: Sequence[OperRecord]) -> None:
        if not records:
            return
        # The rows' values in one flat list (id, time, detail, checksum per record), as the
        # multi-row INSERTs bind them; the retry path alone (rare) makes tuples again.
        values: list[Value] = []
        add = values.extend
        for r in records:
            detail = encode_detail(r.method, r.params)
            add((r.id, r.time, detail, record_checksum(r.id, r.time, detail)))
        try:
            with FORK_GUARD.using():
                self._append(values)
        except sqlite3.Error as e:
            raise StoreError(f"{self.log_path}: append failed: {e}") from e

    def _append(self, values: list[Value]) -> None:
        try:
            self._insert(values)
        except sqlite3.IntegrityError:
            # A retried batch that did commit (partly, if the writer added records to it)
            # is fine; anything else logged under the same ids is not.
            each = iter(values)
            missing = self._unlogged(list(zip(each, each, each, each, strict=True)))
            if missing:
                self._insert([v for row in missing for v in row])

    def _insert(self, values: list[Value]) -> None:
        """One transaction of INSERTs of up to INSERT_ROWS rows each.  Why not
        ``executemany``: its per-row step, reset and binding cost the writer thread some 2.6k
        instructions per logged order more (bench.http_instructions).  Not for the GIL: the
        sqlite3 module lets go of it around each row's step, but a row's step is over before
        the event loop's thread wakes to take it; the hand-offs are per commit (the writer's
        wake-up, and its return from BEGIN's and COMMIT's steps), not per row."""
        conn = self._log_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            step = INSERT_ROWS * 4
            for start in range(0, len(values), step):
                chunk = values[start:start + step]
                conn.execute(insert_sql(len(chunk) // 4), chunk)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _unlogged(self, rows: list[Row]) -> list[Row]:
        """The rows (id, time, detail, checksum) not in the log yet; StoreError if an id holds
        a different record."""
        conn = self._log_conn()
        missing = []
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            marks = ",".join("?" * len(chunk))
            stored = {
                r[0]: r for r in conn.execute(
                    f"SELECT id, time, detail FROM operlog WHERE id IN ({marks})",
                    [r[0] for r in chunk])
            }
            for row in chunk:
                old = stored.get(row[0])
                if old is None:
                    missing.append(row)
                elif old != row[:3]:
                    raise StoreError(f"operlog id {row[0]} already holds a different record")
        return missing

    def last_oper_id(self) -> int:
        try:
            row = self._log_conn().execute("SELECT MAX(id) FROM operlog").fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"{self.log_path}: {e}") from e
        return int(row[0]) if row and row[0] is not None else 0

    def read_operlog(self, after_id: int) -> Iterator[OperRecord]:
        for page in self.read_operlog_rows(after_id):
            for row in page:
                yield OperRecord(*row)

    def read_operlog_rows(self, after_id: int) -> Iterator[list[LogRow]]:
        conn = self._log_conn()
        last = after_id
        while True:
            try:
                rows = conn.execute(
                    "SELECT id, time, detail, checksum FROM operlog WHERE id > ? ORDER BY id"
                    " LIMIT ?", (last, PAGE),
                ).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"{self.log_path}: {e}") from e
            if rows:
                yield decode_rows(rows)
            if len(rows) < PAGE:
                return
            last = rows[-1][0]

    def reset_to(self, oper_id: int) -> None:
        for info in self.list_slices():
            if info.end_oper_id > oper_id:
                self.delete_slice(info)
        try:
            with FORK_GUARD.using():
                conn = self._log_conn()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute("DELETE FROM operlog WHERE id > ?", (oper_id,))
                    conn.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY,"
                                 " time REAL NOT NULL, pad TEXT NOT NULL)")
                    # A page's worth of new bytes: a full disk cannot take it.
                    conn.execute("INSERT OR REPLACE INTO probe (id, time, pad) VALUES (1, ?, ?)",
                                 (time.time(), os.urandom(2048).hex()))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as e:
            raise StoreError(f"{self.log_path}: {e}") from e

    # -- slices ------------------------------------------------------------------------------------

    def latest_slice(self) -> SliceInfo | None:
        slices = self.list_slices()
        return slices[-1] if slices else None

    def list_slices(self) -> list[SliceInfo]:
        rows = self._slice_read(lambda db: db.execute(
            "SELECT time, end_oper_id, end_order_id, end_deals_id, checksum FROM slice_history"
            " ORDER BY id").fetchall())
        return [SliceInfo(*row) for row in rows]

    def read_slice(self, info: SliceInfo) -> EngineState:
        """The slice's document when it has one (the fast path, see slicedoc), else (or if the
        document is damaged, which is logged) its tables."""
        t = slice_time(info)
        chunks = self._slice_read(lambda db: _document_chunks(db, t))
        if chunks is not None:
            try:
                return slicedoc.decode(chunks, info, f"{self.slice_path}: slice_state_{t}")
            except StoreError as e:
                log.error("%s; loading the slice from its tables instead", e)
        state, orders_crc, balances_crc = self._slice_read(lambda db: self._read_slice(db, info))
        check_slice(info, state, orders_crc, balances_crc)
        return state

    def _read_slice(self, db: sqlite3.Connection,
                    info: SliceInfo) -> tuple[EngineState, int, int]:
        t = slice_time(info)
        names = (f"slice_order_{t}", f"slice_balance_{t}", f"slice_update_{t}")
        stop_table, config_table = f"slice_stop_{t}", f"slice_config_{t}"
        state = EngineState(order_id=info.end_order_id, deal_id=info.end_deals_id)
        db.execute("BEGIN")  # one consistent view of the tables
        found = {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?, ?, ?)",
            (*names, stop_table, config_table))}
        missing = [n for n in names if n not in found]
        if missing:
            raise StoreError(f"{self.slice_path}: slice {t} lacks table(s) {', '.join(missing)}")
        columns = {r[1] for r in db.execute(f"PRAGMA table_info(\"{names[0]}\")")}
        extra = ", option, client_id" if "client_id" in columns else ", 0, NULL"
        rows = db.execute(
            "SELECT id, t, side, create_time, update_time, user_id, market, source, price,"
            " amount, taker_fee, maker_fee, \"left\", freeze, deal_stock, deal_money, deal_fee"
            f"{extra} FROM \"{names[0]}\" ORDER BY id"
        ).fetchall()
        state.orders, orders_crc = orders_from_rows(rows, names[0])
        state.balances, balances_crc = balances_from_rows(db.execute(
            f"SELECT user_id, asset, t, balance FROM \"{names[1]}\" ORDER BY id").fetchall(),
            names[1])
        for user, asset, business, business_id, when in db.execute(
            "SELECT user_id, asset, business, business_id, time"
            f" FROM \"{names[2]}\" ORDER BY id"
        ):
            state.updates.append((user, asset, business, int(business_id), float(when)))
        if stop_table in found:
            decimals = ", ".join(f'"{d}"' for d in STOP_DECIMALS)
            for row in db.execute(
                "SELECT id, t, side, create_time, update_time, user_id, market, source,"
                f" option, client_id, state, {decimals} FROM \"{stop_table}\" ORDER BY id"
            ):
                state.stops.append(stop_from_row(row[:11], [Decimal(v) for v in row[11:]]))
        if config_table in found:
            for rid, kind, name, detail in db.execute(
                f"SELECT id, kind, name, detail FROM \"{config_table}\" ORDER BY id"
            ):
                state.config.append(
                    (kind, name, decode_config_detail(detail, f"{config_table} id {rid}")))
        db.execute("COMMIT")
        return state, orders_crc, balances_crc

    def write_slice_data(self, info: SliceInfo, state: EngineState) -> None:
        t = slice_time(info)
        order_rows = [
            (o.id, o.type, o.side, o.ctime, o.mtime, o.user, o.market, o.source,
             *[str(d) for d in order_decimals(o)], o.option, o.client_id)
            for o in state.orders
        ]
        stop_rows = [
            (s.id, s.type, s.side, s.ctime, s.mtime, s.user, s.market, s.source, s.option,
             s.client_id, s.state, *[str(d) for d in stop_decimals(s)])
            for s in state.stops
        ]
        config_rows = [(kind, name, encode_config_detail(detail))
                       for kind, name, detail in state.config]
        balance_rows = [(user, asset, kind, str(value))
                        for user, asset, kind, value in state.balances]
        update_rows = [(user, asset, business, str(business_id), when)
                       for user, asset, business, business_id, when in state.updates]
        checksum = self._slice_sums[t] = state_checksum(state)
        document = [(i, crc, data) for i, (crc, data)
                    in enumerate(slicedoc.encode(state, checksum), 1)]
        with self._slice_db() as db:
            db.execute("BEGIN IMMEDIATE")
            # A published slice of the same time stops being visible before its tables go.
            db.execute("DELETE FROM slice_history WHERE time = ?", (t,))
            for ddl in _slice_ddl(t):
                db.execute(ddl)
            db.execute("COMMIT")
            for sql, rows in (
                (f"INSERT INTO slice_order_{t} (id, t, side, create_time, update_time, user_id,"
                 " market, source, price, amount, taker_fee, maker_fee, \"left\", freeze,"
                 " deal_stock, deal_money, deal_fee, option, client_id)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", order_rows),
                (f"INSERT INTO slice_stop_{t} (id, t, side, create_time, update_time, user_id,"
                 " market, source, option, client_id, state, "
                 + ", ".join(f'"{d}"' for d in STOP_DECIMALS) + ")"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", stop_rows),
                (f"INSERT INTO slice_config_{t} (kind, name, detail) VALUES (?, ?, ?)",
                 config_rows),
                (f"INSERT INTO slice_balance_{t} (user_id, asset, t, balance) VALUES (?, ?, ?, ?)",
                 balance_rows),
                (f"INSERT INTO slice_update_{t} (user_id, asset, business, business_id, time)"
                 " VALUES (?, ?, ?, ?, ?)", update_rows),
                (f"INSERT INTO slice_state_{t} (id, checksum, data) VALUES (?, ?, ?)",
                 document),
            ):
                if rows:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany(sql, rows)
                    db.execute("COMMIT")

    def publish_slice(self, info: SliceInfo) -> None:
        t = slice_time(info)
        with self._slice_db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM slice_history WHERE time = ?", (t,))
            db.execute(
                "INSERT INTO slice_history (time, end_oper_id, end_order_id, end_deals_id,"
                " checksum) VALUES (?, ?, ?, ?, ?)",
                (t, info.end_oper_id, info.end_order_id, info.end_deals_id,
                 self._slice_sums.pop(t, info.checksum)),
            )
            db.execute("COMMIT")

    def delete_slice(self, info: SliceInfo) -> None:
        t = slice_time(info)
        with self._slice_db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM slice_history WHERE time = ?", (t,))
            for kind in SLICE_KINDS:
                db.execute(f"DROP TABLE IF EXISTS slice_{kind}_{t}")
            db.execute("COMMIT")

    def drop_unpublished_slices(self, before: int) -> list[int]:
        """Read first (nothing to drop: no write lock taken), then again and drop in one
        write transaction, so a slice published meanwhile keeps its tables."""
        with self._slice_db() as db:
            if not _unpublished(db, before):
                return []
            db.execute("BEGIN IMMEDIATE")
            times = _unpublished(db, before)
            for t in times:
                for kind in SLICE_KINDS:
                    db.execute(f"DROP TABLE IF EXISTS slice_{kind}_{t}")
            db.execute("COMMIT")
        return times


def _unpublished(db: sqlite3.Connection, before: int) -> list[int]:
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                       " AND name LIKE 'slice\\_%' ESCAPE '\\'")]
    published = [r[0] for r in db.execute("SELECT time FROM slice_history")]
    return unpublished_slice_times(tables, published, before)


def _document_chunks(db: sqlite3.Connection, t: int) -> list[slicedoc.Chunk] | None:
    """The stored chunks of slice ``t``'s document; None for a slice without one (written
    before slicedoc)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                  (f"slice_state_{t}",)).fetchone() is None:
        return None
    return [(int(crc), bytes(data)) for crc, data in db.execute(
        f"SELECT checksum, data FROM slice_state_{t} ORDER BY id")]


def _add_column(db: sqlite3.Connection, table: str, name: str, ddl: str) -> None:
    """Add a column a file made by an older version lacks (existing rows get NULL)."""
    if name not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {ddl}")


def _slice_ddl(t: int) -> list[str]:
    return [
        f"DROP TABLE IF EXISTS slice_order_{t}",
        f"CREATE TABLE slice_order_{t} ("
        " id INTEGER PRIMARY KEY,"
        " t INTEGER NOT NULL,"
        " side INTEGER NOT NULL,"
        " create_time REAL NOT NULL,"
        " update_time REAL NOT NULL,"
        " user_id INTEGER NOT NULL,"
        " market TEXT NOT NULL,"
        " source TEXT,"
        + "".join(f" \"{name}\" TEXT NOT NULL," for name in ORDER_DECIMALS)
        + " option INTEGER NOT NULL DEFAULT 0,"
        " client_id TEXT)",
        f"DROP TABLE IF EXISTS slice_balance_{t}",
        f"CREATE TABLE slice_balance_{t} ("
        " id INTEGER PRIMARY KEY,"
        " user_id INTEGER NOT NULL,"
        " asset TEXT NOT NULL,"
        " t INTEGER NOT NULL,"
        " balance TEXT NOT NULL)",
        f"DROP TABLE IF EXISTS slice_update_{t}",
        f"CREATE TABLE slice_update_{t} ("
        " id INTEGER PRIMARY KEY,"
        " user_id INTEGER NOT NULL,"
        " asset TEXT NOT NULL,"
        " business TEXT NOT NULL,"
        " business_id TEXT NOT NULL,"
        " time REAL NOT NULL)",
        f"DROP TABLE IF EXISTS slice_stop_{t}",
        f"CREATE TABLE slice_stop_{t} ("
        " id INTEGER PRIMARY KEY,"
        " t INTEGER NOT NULL,"
        " side INTEGER NOT NULL,"
        " create_time REAL NOT NULL,"
        " update_time REAL NOT NULL,"
        " user_id INTEGER NOT NULL,"
        " market TEXT NOT NULL,"
        " source TEXT NOT NULL,"
        " option INTEGER NOT NULL,"
        " client_id TEXT NOT NULL,"
        " state INTEGER NOT NULL,"
        + "".join(f" \"{name}\" TEXT NOT NULL," for name in STOP_DECIMALS)[:-1]
        + ")",
        f"DROP TABLE IF EXISTS slice_state_{t}",
        f"CREATE TABLE slice_state_{t} ("
        " id INTEGER PRIMARY KEY,"
        " checksum INTEGER NOT NULL,"
        " data BLOB NOT NULL)",
        f"DROP TABLE IF EXISTS slice_config_{t}",
        f"CREATE TABLE slice_config_{t} ("
        " id INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " name TEXT NOT NULL,"
        " detail TEXT NOT NULL)",
    ]
