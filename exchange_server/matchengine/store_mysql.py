"""The production backend of :class:`EngineStore`: MySQL/MariaDB with the original's ``trade_log``
layout (storage.md section 1).

Operation log: template ``operlog_example`` and one table ``operlog_YYYYMMDD`` per local day,
created with ``CREATE TABLE IF NOT EXISTS ... LIKE operlog_example`` when a day first appears.
The day of a record is the local date of its ``time`` (a batch spanning midnight is split
between the two days' tables).  ``append`` is one transaction of multi-row INSERTs (1000 rows
per statement) and returns after ``COMMIT``, sent in one query with the last INSERT (and no
BEGIN), so a batch of up to 1000 records is one round trip to the server.  If the commit's
outcome was lost (connection dropped), retrying the batch is safe: records already stored
identically are skipped.  ``read_operlog`` reads every day table that holds newer ids (not only
today's as the original did), 1000 rows per query, merged in id order.  ``detail`` is MEDIUMTEXT
rather than the original's TEXT: a balance.update detail is client-supplied, and a row over 64
KiB would otherwise make every retry of the append fail.  Each record also carries ``checksum
INT UNSIGNED NULL`` (CRC-32, see :func:`~exchange_server.matchengine.store.record_checksum`),
verified on read; ``open()`` adds the column to day tables made before it, and a table or row
without it (the original's) is read unverified.  ``slice_history.checksum`` likewise holds
each published slice's checksum.

Slices: ``slice_history`` as in the original; ``slice_order_T``, ``slice_balance_T`` and
``slice_update_T`` (the balance.update dedup window, new), ``slice_stop_T`` (pending stop
orders) and ``slice_config_T`` (runtime configuration, JSON details) created ``LIKE`` their
``*_example`` templates.  Slices older than the last two tables still load.  Each slice of
ours also has ``slice_state_T``: the whole state as one checksummed document
(:mod:`~exchange_server.matchengine.slicedoc`), which a restart reads instead of the tables,
about three times faster (the tables are read when it is absent or damaged).  Deliberate
differences from the original's tables:

* ``slice_order`` has a ``source VARCHAR(64) NULL`` column: restored orders keep their source;
  and ``option`` / ``client_id`` columns (added to an existing template by ``open()``).
* Every decimal column is DECIMAL(50,24) instead of the original's DECIMAL(30,8), (30,4),
  (30,12) and (30,16), so that operators' SQL sees the values with at most 1e-24 truncated.  But
  a DECIMAL column cannot give back the value the engine had: it returns every value with 24
  decimals (``0.50000000`` comes back as ``0.500000000000000000000000``, a different exponent
  and so a different text in replies), and it cannot hold more than 24 decimals or 26 integer
  digits at all.  So each row also has an ``exact`` TEXT column with the exact ``str()`` of its
  decimal values, space-separated in column order, and restart reads ONLY that column: the
  restored Decimals are identical to the dumped ones, exponent included.  The DECIMAL columns
  are a convenience for queries (truncated toward zero to 24 decimals; NULL for a value with 26
  or more integer digits); editing them by hand has no effect on a restart (nor, with the
  slice document, does editing ``exact``).

An original ViaBTC's ``trade_log`` (its templates lack ``exact``) is taken over by ``open()``
(matchengine/original.py): its takeover point is recorded, its slice templates are set aside for
ours, its operlog tables widened; its slices (no ``source``, ``exact``, ``slice_update``) are
read with its own load rules.

Fencing (active/standby matchengines, matchprocess/leader.py): once :meth:`set_fence` gave the
store a lease name and epoch, every transaction that changes the log or publishes a slice
(``append``, ``reset_to``, ``publish_slice``) first locks the lease row (``SELECT ... FOR
UPDATE`` on ``leader_lease``) and raises :class:`Deposed` without committing anything when the
epoch is no longer ours.  The check and the writes commit together, and a takeover's epoch bump
waits for that row lock, so a deposed leader can never commit, whatever its clock says.  The
same statement records the writer connection's id in the row (``writer``), so that a new leader
can KILL the connection of a stopped one that holds the row lock.  Without a fence (one
matchengine, today's default) nothing of this runs.

Times (order create/update times, operlog times, dedup times) are DOUBLE, which MariaDB gives
back bit-exact.  A store keeps one connection and ends every operation with COMMIT or ROLLBACK,
so it never holds InnoDB snapshots or metadata locks between calls (a forked child dropping an
old slice's tables would otherwise wait for the parent).  Connection errors become
:class:`StoreError` and the next call reconnects.
"""

from __future__ import annotations

import heapq
import logging
import re
import time
from collections.abc import Iterator, Sequence
from decimal import ROUND_DOWN, Context, Decimal
from typing import Any

import pymysql
import pymysql.cursors
from pymysql.constants import CLIENT

from exchange_server.common.config import MysqlConfig
from exchange_server.matchengine import original, slicedoc
from exchange_server.matchengine.core.engine import EngineState
from exchange_server.matchengine.logcodec import LogRow, decode_rows, encode_detail
from exchange_server.matchengine.slicerows import (
    ORDER_DECIMALS,
    SLICE_KINDS,
    STOP_DECIMALS,
    balances_from_rows,
    decode_config_detail,
    encode_config_detail,
    orders_from_rows,
    slice_time,
    stop_decimals,
    stop_from_row,
    unpublished_slice_times,
)
from exchange_server.matchengine.store import (
    Deposed,
    EngineStore,
    OperRecord,
    SliceInfo,
    StoreError,
    check_slice,
    record_checksum,
    state_checksum,
)
from exchange_server.storage import mysql as mysql_db

log = logging.getLogger("exchange_server.matchengine")

#: Rows per INSERT statement and per SELECT page.
CHUNK = 1000
#: Rows per SELECT when replaying the operation log.
OPERLOG_PAGE = 5000
#: Rows per SELECT when reading a slice table (a restart reads up to millions: fewer round trips).
SLICE_PAGE = 10_000

_OPERLOG_TABLE = re.compile(r"operlog_(\d{8})\Z")

DECIMAL_TYPE = "DECIMAL(50,24)"
_DEC_QUANTUM = Decimal(1).scaleb(-24)
_DEC_LIMIT = 26  # integer digits of DECIMAL(50,24)
_DEC_CONTEXT = Context(prec=200, rounding=ROUND_DOWN)

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS operlog_example ("
    " id BIGINT UNSIGNED NOT NULL PRIMARY KEY,"
    " time DOUBLE NOT NULL,"
    " detail MEDIUMTEXT,"
    " checksum INT UNSIGNED NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS slice_history ("
    " id INT UNSIGNED NOT NULL PRIMARY KEY AUTO_INCREMENT,"
    " time BIGINT NOT NULL,"
    " end_oper_id BIGINT UNSIGNED NOT NULL,"
    " end_order_id BIGINT UNSIGNED NOT NULL,"
    " end_deals_id BIGINT UNSIGNED NOT NULL,"
    " checksum INT UNSIGNED NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS slice_order_example ("
    " id BIGINT UNSIGNED NOT NULL PRIMARY KEY,"
    " t TINYINT UNSIGNED NOT NULL,"
    " side TINYINT UNSIGNED NOT NULL,"
    " create_time DOUBLE NOT NULL,"
    " update_time DOUBLE NOT NULL,"
    " user_id INT UNSIGNED NOT NULL,"
    " market VARCHAR(30) NOT NULL,"
    " source VARCHAR(64) NULL,"
    + "".join(f" `{name}` {DECIMAL_TYPE} NULL," for name in ORDER_DECIMALS)
    + " exact TEXT NOT NULL,"
    " `option` INT UNSIGNED NOT NULL DEFAULT 0,"
    " client_id VARCHAR(64) NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS slice_stop_example ("
    " id BIGINT UNSIGNED NOT NULL PRIMARY KEY,"
    " t TINYINT UNSIGNED NOT NULL,"
    " side TINYINT UNSIGNED NOT NULL,"
    " create_time DOUBLE NOT NULL,"
    " update_time DOUBLE NOT NULL,"
    " user_id INT UNSIGNED NOT NULL,"
    " market VARCHAR(30) NOT NULL,"
    " source VARCHAR(64) NOT NULL,"
    " `option` INT UNSIGNED NOT NULL,"
    " client_id VARCHAR(64) NOT NULL,"
    " state TINYINT UNSIGNED NOT NULL,"
    + "".join(f" `{name}` {DECIMAL_TYPE} NULL," for name in STOP_DECIMALS)
    + " exact TEXT NOT NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS slice_config_example ("
    " id INT UNSIGNED NOT NULL PRIMARY KEY AUTO_INCREMENT,"
    " kind VARCHAR(16) NOT NULL,"
    " name VARCHAR(64) NOT NULL,"
    " detail TEXT NOT NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS slice_balance_example ("
    " id INT UNSIGNED NOT NULL PRIMARY KEY AUTO_INCREMENT,"
    " user_id INT UNSIGNED NOT NULL,"
    " asset VARCHAR(30) NOT NULL,"
    " t TINYINT UNSIGNED NOT NULL,"
    f" balance {DECIMAL_TYPE} NULL,"
    " exact TEXT NOT NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    # the slice document (slicedoc): a restart's fast path; chunks of compressed JSON
    "CREATE TABLE IF NOT EXISTS slice_state_example ("
    " id INT UNSIGNED NOT NULL PRIMARY KEY,"
    " checksum INT UNSIGNED NOT NULL,"
    " data LONGBLOB NOT NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS slice_update_example ("
    " id INT UNSIGNED NOT NULL PRIMARY KEY AUTO_INCREMENT,"
    " user_id INT UNSIGNED NOT NULL,"
    " asset VARCHAR(30) NOT NULL,"
    " business VARCHAR(64) NOT NULL,"
    " business_id BIGINT UNSIGNED NOT NULL,"
    " time DOUBLE NOT NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
]

#: Columns a template must have (an older layout of ours is refused; the original's is taken
#: over before this check, see original.adopt).
REQUIRED_COLUMNS = {
    "slice_order_example": {"source", "exact"},
    "slice_balance_example": {"exact"},
}

#: Columns added to an existing table (made before the fork's extensions, or by the original).
ADDED_COLUMNS = {
    "slice_order_example": [("option", "`option` INT UNSIGNED NOT NULL DEFAULT 0"),
                            ("client_id", "client_id VARCHAR(64) NULL")],
    "slice_history": [("checksum", "checksum INT UNSIGNED NULL")],
    "operlog_example": [("checksum", "checksum INT UNSIGNED NULL")],
}
_CHECKSUM_COLUMN = "checksum INT UNSIGNED NULL"

_ORDER_COLUMNS = ("id, t, side, create_time, update_time, user_id, market, source, "
                  + ", ".join(f"`{name}`" for name in ORDER_DECIMALS) + ", exact, `option`, client_id")
_STOP_COLUMNS = ("id, t, side, create_time, update_time, user_id, market, source, `option`, "
                 "client_id, state, " + ", ".join(f"`{name}`" for name in STOP_DECIMALS)
                 + ", exact")


def _sql_decimal(value: Decimal) -> Decimal | None:
    """The value for a DECIMAL(50,24) column: truncated to 24 decimals, NULL if too large."""
    if not value.is_finite() or (value and value.adjusted() >= _DEC_LIMIT):
        return None
    if value.as_tuple().exponent < -24:  # type: ignore[operator]
        return value.quantize(_DEC_QUANTUM, rounding=ROUND_DOWN, context=_DEC_CONTEXT)
    return value


def _exact_text(values: Sequence[Decimal]) -> str:
    return " ".join(str(v) for v in values)


def _exact_texts(text: str | None, count: int, where: str) -> list[str]:
    parts = text.split(" ") if text else []
    if len(parts) != count:
        raise StoreError(f"{where}: exact column holds {len(parts)} values, {count} expected")
    return parts


def _exact_values(text: str | None, count: int, where: str) -> list[Decimal]:
    parts = _exact_texts(text, count, where)
    try:
        return [Decimal(p) for p in parts]
    except ArithmeticError as e:
        raise StoreError(f"{where}: bad exact value in {text!r}") from e


def _local_day(t: float) -> str:
    return time.strftime("%Y%m%d", time.localtime(t))


#: Socket timeouts of the engine's connection: short, so that a hanging server fails a commit
#: (which the service then refuses) instead of holding the writer thread, and a stopping
#: process exits within seconds whatever the database does.
CONNECT_TIMEOUT = 3
IO_TIMEOUT = 5

#: Seconds a reader trusts its list of operlog tables (a writer elsewhere may add a day).
TABLES_MAX_AGE = 1.0


def _insert_statements(cur: pymysql.cursors.Cursor, table: str,
                       group: list[tuple[int, float, str]]) -> Iterator[bytes]:
    """Multi-row INSERTs of ``group`` (with checksums), at most ``CHUNK`` rows and the cursor's
    ``max_stmt_length`` bytes each (what ``executemany`` would send, built here so that the last
    one can carry the COMMIT)."""
    prefix = f"INSERT INTO `{table}` (id, time, detail, checksum) VALUES ".encode()
    limit = cur.max_stmt_length
    sql = bytearray(prefix)
    rows = 0
    for i, t, d in group:
        value = cur.mogrify("(%s, %s, %s, %s)", (i, t, d, record_checksum(i, t, d))).encode()
        if rows and (rows >= CHUNK or len(sql) + len(value) + 1 > limit):
            yield bytes(sql)
            sql = bytearray(prefix)
            rows = 0
        if rows:
            sql += b","
        sql += value
        rows += 1
    if rows:
        yield bytes(sql)


def _commit_with(conn: pymysql.Connection, cur: pymysql.cursors.Cursor, last: bytes) -> None:
    """Run the transaction's last statement and COMMIT in one query: one round trip instead of
    two.  Under the production topology's load each round trip to MariaDB waited about 2 ms
    (scheduling on a busy machine, not MariaDB's work), and BEGIN, INSERT and COMMIT made a
    commit take 7 ms where MariaDB alone takes under 1 ms (bench/README.md, "where requests
    wait").  The server stops at the first failing statement, so a failed INSERT never
    commits; the COMMIT's own answer (sent after the log is flushed, the durability point) is
    read before returning, and its error, if any, is raised."""
    if not conn.client_flag & CLIENT.MULTI_STATEMENTS:
        cur.execute(last)
        conn.commit()
        return
    cur.execute(last + b"; COMMIT")
    if not cur.nextset():
        raise pymysql.err.OperationalError(2014, "no answer to the COMMIT of the operation log")


def _slice_info(row: Sequence[Any]) -> SliceInfo:
    checksum = row[4]
    return SliceInfo(int(row[0]), int(row[1]), int(row[2]), int(row[3]),
                     None if checksum is None else int(checksum))


class MysqlEngineStore(EngineStore):
    def __init__(self, cfg: MysqlConfig) -> None:
        self.cfg = cfg
        self._conn: pymysql.Connection | None = None
        self._operlog_tables: set[str] | None = None
        self._tables_read_at = 0.0
        #: MAX(id) of day tables that no longer grow
        self._closed_max: dict[str, int] = {}
        #: operlog day tables known to have the checksum column
        self._summed: set[str] = set()
        #: checksums of slices written by write_slice_data, for publish_slice
        self._slice_sums: dict[int, int] = {}
        #: the last operation the original wrote, when taking over its database (original.py)
        self._takeover = 0
        #: (lease name, epoch) every log write checks, None: not fenced (one matchengine)
        self.fence: tuple[str, int] | None = None
        #: a write found another epoch in the lease: this process is deposed
        self.fenced_off = False

    def __repr__(self) -> str:
        return f"MysqlEngineStore({self.cfg.host}:{self.cfg.port}/{self.cfg.name})"

    # -- connection --------------------------------------------------------------------------------

    def open(self) -> None:
        try:
            mysql_db.ensure_database(self.cfg)
            # Schema changes may copy big tables (a takeover's widening): the default, long
            # socket timeouts, not the operations' short ones.
            conn = mysql_db.connect(self.cfg)
            try:
                self._open_schema(conn)
            finally:
                conn.close()
            self._load_operlog_tables()
        except pymysql.MySQLError as e:
            self._fail()
            raise StoreError(f"{self!r}: cannot open: {e}") from e

    def _open_schema(self, conn: pymysql.Connection) -> None:
        self._takeover = original.adopt(conn)
        with conn.cursor() as cur:
            for ddl in SCHEMA:
                cur.execute(ddl)
            for table, added in ADDED_COLUMNS.items():
                cur.execute(f"SHOW COLUMNS FROM {table}")
                have = {row[0] for row in cur.fetchall()}
                for name, ddl in added:
                    if name not in have:
                        cur.execute(f"ALTER TABLE {table} ADD COLUMN {ddl}")
            for table, needed in REQUIRED_COLUMNS.items():
                cur.execute(f"SHOW COLUMNS FROM {table}")
                have = {row[0] for row in cur.fetchall()}
                if not needed <= have:
                    raise StoreError(
                        f"{self!r}: table {table} lacks column(s)"
                        f" {', '.join(sorted(needed - have))} (made by an older layout?)")
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES LIKE 'operlog\\_%'")
            tables = sorted(r[0] for r in cur.fetchall() if _OPERLOG_TABLE.match(r[0]))
        conn.rollback()
        for table in tables:
            self._ensure_checksum_column(table, conn)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._operlog_tables = None
        if conn is not None:
            try:
                conn.close()
            except pymysql.MySQLError:
                pass

    def takeover_point(self) -> int:
        return self._takeover

    def clone(self) -> MysqlEngineStore:
        twin = MysqlEngineStore(self.cfg)
        twin.fence = self.fence  # a slice child publishes under its parent's epoch
        return twin

    def set_fence(self, name: str, epoch: int) -> None:
        """From now on every log write checks that lease ``name`` still has ``epoch``."""
        self.fence = (name, epoch)

    def _check_fence(self, conn: pymysql.Connection) -> None:
        """Inside a write transaction: lock the lease row; :class:`Deposed` if the epoch moved
        on (the caller rolls back).  Records this connection as the writer of the epoch."""
        if self.fence is None:
            return
        name, epoch = self.fence
        with conn.cursor() as cur:
            cur.execute("SELECT epoch, holder, writer FROM leader_lease WHERE name = %s"
                        " FOR UPDATE", (name,))
            row = cur.fetchone()
            if row is None or int(row[0]) != epoch:
                conn.rollback()  # nothing of the transaction commits; the row lock goes
                self.fenced_off = True
                raise Deposed(f"lease {name!r} epoch {row[0] if row else 'none'} is held by "
                              f"{row[1] if row else 'nobody'}, not ours ({epoch}): write refused")
            if row[2] != conn.thread_id():
                cur.execute("UPDATE leader_lease SET writer = %s WHERE name = %s",
                            (conn.thread_id(), name))

    def _ensure_checksum_column(self, table: str,
                                conn: pymysql.Connection | None = None) -> None:
        """Add the checksum column to a day table that lacks it."""
        if table in self._summed:
            return
        conn = conn or self._connection()
        with conn.cursor() as cur:
            cur.execute(f"SHOW COLUMNS FROM `{table}` LIKE 'checksum'")
            if not cur.fetchall():
                cur.execute(f"ALTER TABLE `{table}` ADD COLUMN {_CHECKSUM_COLUMN}")
        conn.commit()
        self._summed.add(table)

    def _has_checksum(self, table: str) -> bool:
        """Whether a day table has the checksum column (one made by the original after our
        open() may not: it is then read unverified)."""
        if table not in self._summed:
            rows = self._query(f"SHOW COLUMNS FROM `{table}` LIKE 'checksum'")
            if not rows:
                return False
            self._summed.add(table)
        return True

    def _connection(self) -> pymysql.Connection:
        if self._conn is None:
            self._conn = mysql_db.connect(self.cfg, connect_timeout=CONNECT_TIMEOUT,
                                          read_timeout=IO_TIMEOUT, write_timeout=IO_TIMEOUT,
                                          multi_statements=True)
        return self._conn

    def _fail(self) -> None:
        """Forget the connection after an error: the next call reconnects."""
        conn, self._conn = self._conn, None
        self._operlog_tables = None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _error(self, what: str, e: pymysql.MySQLError) -> StoreError:
        self._fail()
        return StoreError(f"{self!r}: {what}: {e}")

    def _query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """One read, ending its transaction (no snapshot or metadata lock is kept)."""
        conn = self._connection()
        with conn.cursor() as cur:
            cur.execute(sql, args)
            rows = list(cur.fetchall())
        conn.rollback()
        return rows

    # -- operation log -----------------------------------------------------------------------------

    def _load_operlog_tables(self, max_age: float | None = None) -> set[str]:
        """The operlog day tables.  The list is cached (our own appends keep it up to date);
        ``max_age`` re-reads it when older, for readers that follow another process's log."""
        if self._operlog_tables is not None and max_age is not None and \
                time.monotonic() - self._tables_read_at > max_age:
            self._operlog_tables = None
        if self._operlog_tables is None:
            rows = self._query("SHOW TABLES LIKE 'operlog\\_%'")
            self._operlog_tables = {r[0] for r in rows if _OPERLOG_TABLE.match(r[0])}
            self._tables_read_at = time.monotonic()
        return self._operlog_tables

    def forget_operlog_tables(self) -> None:
        """Read the list of operlog day tables again at the next read: a standby that has just
        taken the lease must see every table the old active wrote to, also one it created
        less than ``TABLES_MAX_AGE`` ago (its first, or a new day's)."""
        self._operlog_tables = None

    def _table_max_ids(self, max_age: float | None = None) -> dict[str, int]:
        """MAX(id) of every operlog day table (empty tables left out).  Only the two newest
        tables can still grow (a batch may span midnight): older ones are asked once."""
        tables = sorted(self._load_operlog_tables(max_age))
        if not tables:
            return {}
        ask = [t for t in tables[:-2] if t not in self._closed_max] + tables[-2:]
        sql = " UNION ALL ".join(f"SELECT '{t}', MAX(id) FROM `{t}`" for t in ask)
        found = {name: int(m) for name, m in self._query(sql) if m is not None}
        for t in tables[:-2]:
            if t not in self._closed_max:
                self._closed_max[t] = found.get(t, 0)
        result = {t: m for t, m in self._closed_max.items() if m and t in tables}
        result.update({t: found[t] for t in tables[-2:] if t in found})
        return result

    def append(self, records: Sequence[OperRecord]) -> None:
        if not records:
            return
        rows = [(r.id, r.time, encode_detail(r.method, r.params)) for r in records]
        try:
            try:
                self._insert(rows)
            except pymysql.err.IntegrityError as e:
                if e.args[0] != 1062:  # duplicate key
                    raise
                # A retried batch that did commit (partly, if the writer added records to it)
                # is fine; anything else logged under the same ids is not.
                missing = self._unlogged(rows)
                if missing:
                    self._insert(missing)
        except pymysql.MySQLError as e:
            raise self._error("append failed", e) from e

    def _by_table(self, rows: list[tuple[int, float, str]]) -> dict[str, list[tuple[int, float, str]]]:
        groups: dict[str, list[tuple[int, float, str]]] = {}
        for row in rows:
            groups.setdefault(f"operlog_{_local_day(row[1])}", []).append(row)
        return groups

    def _insert(self, rows: list[tuple[int, float, str]]) -> None:
        groups = self._by_table(rows)
        conn = self._connection()
        tables = self._load_operlog_tables()
        with conn.cursor() as cur:
            for table in groups:
                if table not in tables:
                    # DDL commits implicitly: done before the batch's transaction starts.
                    cur.execute(f"CREATE TABLE IF NOT EXISTS `{table}` LIKE operlog_example")
                    tables.add(table)
                if table not in self._summed:
                    self._ensure_checksum_column(table)
            # No BEGIN: autocommit is off, so the first statement opens the transaction (a
            # round trip less; each one waits on a loaded machine: see _commit_with).
            try:
                self._check_fence(conn)
                statements = [sql for table, group in groups.items()
                              for sql in _insert_statements(cur, table, group)]
                for sql in statements[:-1]:
                    cur.execute(sql)
                _commit_with(conn, cur, statements[-1])
            except BaseException:
                try:
                    conn.rollback()
                except pymysql.MySQLError:
                    pass
                raise

    def _unlogged(self, rows: list[tuple[int, float, str]]) -> list[tuple[int, float, str]]:
        """The rows not in the log yet; StoreError if an id holds a different record."""
        missing = []
        for table, group in self._by_table(rows).items():
            for start in range(0, len(group), CHUNK):
                chunk = group[start:start + CHUNK]
                marks = ",".join(["%s"] * len(chunk))
                stored = {r[0]: (int(r[0]), float(r[1]), r[2]) for r in self._query(
                    f"SELECT id, time, detail FROM `{table}` WHERE id IN ({marks})",
                    [r[0] for r in chunk])}
                for row in chunk:
                    old = stored.get(row[0])
                    if old is None:
                        missing.append(row)
                    elif old != row:
                        raise StoreError(f"operlog id {row[0]} already holds a different record")
        return missing

    def last_oper_id(self) -> int:
        """Read from the database every time: another process (a slice child waiting for
        durability, a follower) may be asking about the writer's progress."""
        try:
            return max(self._table_max_ids(TABLES_MAX_AGE).values(), default=0)
        except pymysql.MySQLError as e:
            raise self._error("cannot read the operlog", e) from e

    def read_operlog(self, after_id: int) -> Iterator[OperRecord]:
        tables = self._operlog_tables_after(after_id)
        if len(tables) == 1:
            for page in self._read_table_rows(tables[0], after_id):
                for row in page:
                    yield OperRecord(*row)
        else:
            # Tables in date order, merged by id: right even if the clock once went backwards.
            yield from heapq.merge(*(self._read_table(t, after_id) for t in tables),
                                   key=lambda r: r.id)

    def read_operlog_rows(self, after_id: int) -> Iterator[list[LogRow]]:
        tables = self._operlog_tables_after(after_id)
        if len(tables) == 1:  # the usual case: read in bulk
            yield from self._read_table_rows(tables[0], after_id)
        else:
            yield from super().read_operlog_rows(after_id)

    def _operlog_tables_after(self, after_id: int) -> list[str]:
        try:
            return [t for t, top in sorted(self._table_max_ids(TABLES_MAX_AGE).items())
                    if top > after_id]
        except pymysql.MySQLError as e:
            raise self._error("cannot read the operlog", e) from e

    def _read_table(self, table: str, after_id: int) -> Iterator[OperRecord]:
        for page in self._read_table_rows(table, after_id):
            for row in page:
                yield OperRecord(*row)

    def _read_table_rows(self, table: str, after_id: int) -> Iterator[list[LogRow]]:
        last = after_id
        while True:
            try:
                checksum = "checksum" if self._has_checksum(table) else "NULL"
                rows = self._query(
                    f"SELECT id, time, detail, {checksum} FROM `{table}` WHERE id > %s"
                    " ORDER BY id LIMIT %s", (last, OPERLOG_PAGE))
            except pymysql.MySQLError as e:
                raise self._error(f"cannot read {table}", e) from e
            if rows:
                yield decode_rows(rows)
            if len(rows) < OPERLOG_PAGE:
                return
            last = rows[-1][0]

    def reset_to(self, oper_id: int) -> None:
        if self.fence is not None:  # a deposed leader deletes nothing (slices below either)
            try:
                conn = self._connection()
                conn.begin()
                self._check_fence(conn)
                conn.rollback()
            except pymysql.MySQLError as e:
                raise self._error("cannot check the leader lease", e) from e
        for info in self.list_slices():
            if info.end_oper_id > oper_id:
                self.delete_slice(info)
        try:
            tables = sorted(self._load_operlog_tables())
            conn = self._connection()
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS store_probe (id INT UNSIGNED NOT NULL"
                            " PRIMARY KEY, time DOUBLE NOT NULL) ENGINE=InnoDB")
                conn.begin()
                self._check_fence(conn)
                for table in tables[-2:]:  # only the newest day tables can hold recent ids
                    cur.execute(f"DELETE FROM `{table}` WHERE id > %s", (oper_id,))
                cur.execute("REPLACE INTO store_probe (id, time) VALUES (1, %s)", (time.time(),))
                conn.commit()
            self._closed_max.clear()
        except pymysql.MySQLError as e:
            raise self._error("cannot reset the operlog", e) from e

    def _operlog_down(self, last_id: int) -> Iterator[tuple[int, Any]]:
        """``(id, detail)`` of the records at or below ``last_id``, newest first."""
        for table in sorted(self._load_operlog_tables(), reverse=True):
            top = last_id
            while True:
                rows = self._query(f"SELECT id, detail FROM `{table}` WHERE id <= %s"
                                   " ORDER BY id DESC LIMIT %s", (top, CHUNK))
                for oper_id, detail in rows:
                    yield int(oper_id), detail
                if len(rows) < CHUNK:
                    break
                top = int(rows[-1][0]) - 1

    # -- slices ------------------------------------------------------------------------------------

    def latest_slice(self) -> SliceInfo | None:
        try:
            rows = self._query("SELECT time, end_oper_id, end_order_id, end_deals_id, checksum"
                               " FROM slice_history ORDER BY id DESC LIMIT 1")
        except pymysql.MySQLError as e:
            raise self._error("cannot read slice_history", e) from e
        return _slice_info(rows[0]) if rows else None

    def list_slices(self) -> list[SliceInfo]:
        try:
            rows = self._query("SELECT time, end_oper_id, end_order_id, end_deals_id, checksum"
                               " FROM slice_history ORDER BY id")
        except pymysql.MySQLError as e:
            raise self._error("cannot read slice_history", e) from e
        return [_slice_info(row) for row in rows]

    def _read_pages(self, table: str, columns: str) -> Iterator[tuple[Any, ...]]:
        """Every row of a slice table in id order, SLICE_PAGE rows per query."""
        last = -1
        while True:
            rows = self._query(
                f"SELECT id, {columns} FROM `{table}` WHERE id > %s ORDER BY id LIMIT %s",
                (last, SLICE_PAGE))
            yield from rows
            if len(rows) < SLICE_PAGE:
                return
            last = rows[-1][0]

    def read_slice(self, info: SliceInfo) -> EngineState:
        """The slice's document when it has one (the fast path, see slicedoc), else (or if the
        document is damaged, which is logged) its tables."""
        t = slice_time(info)
        table = f"slice_state_{t}"
        try:
            chunks = ([(int(crc), bytes(data)) for crc, data in self._query(
                f"SELECT checksum, data FROM `{table}` ORDER BY id")]
                if self._query(f"SHOW TABLES LIKE '{table}'") else None)
        except pymysql.MySQLError as e:
            raise self._error(f"cannot read slice {t}", e) from e
        if chunks is not None:
            try:
                return slicedoc.decode(chunks, info, f"{self!r}: {table}")
            except StoreError as e:
                log.error("%s; loading the slice from its tables instead", e)
        return self._read_slice_tables(info, t)

    def _read_slice_tables(self, info: SliceInfo, t: int) -> EngineState:
        names = (f"slice_order_{t}", f"slice_balance_{t}", f"slice_update_{t}")
        stop_table, config_table = f"slice_stop_{t}", f"slice_config_{t}"
        state = EngineState(order_id=info.end_order_id, deal_id=info.end_deals_id)
        try:
            found = {r[0] for r in self._query(f"SHOW TABLES LIKE 'slice\\_%\\_{t}'")}
            columns = ({r[0] for r in self._query(f"SHOW COLUMNS FROM `{names[0]}`")}
                       if names[0] in found else set())
            is_original = bool(columns) and original.is_original_slice(columns)
            # the original's slices have no slice_update table
            missing = [n for n in names[:2 if is_original else 3] if n not in found]
            if missing:
                raise StoreError(f"{self!r}: slice {t} lacks table(s) {', '.join(missing)}")
            if is_original:
                return original.read_slice(self._read_pages, t, info,
                                           self._operlog_down(info.end_oper_id))
            n = len(ORDER_DECIMALS)
            extra = ", `option`, client_id" if "client_id" in columns else ", 0, NULL"
            rows = [(*row[:8], *_exact_texts(row[8], n, f"{names[0]} id {row[0]}"), *row[9:])
                    for row in self._read_pages(
                        names[0], "t, side, create_time, update_time, user_id, market, source,"
                                  f" exact{extra}")]
            state.orders, orders_crc = orders_from_rows(rows, names[0])
            state.balances, balances_crc = balances_from_rows(
                [(user, asset, kind, _exact_texts(exact, 1, f"{names[1]} id {bid}")[0])
                 for bid, user, asset, kind, exact in self._read_pages(
                     names[1], "user_id, asset, t, exact")], names[1])
            for _, user, asset, business, business_id, when in self._read_pages(
                    names[2], "user_id, asset, business, business_id, time"):
                state.updates.append((int(user), asset, business, int(business_id), float(when)))
            if stop_table in found:
                for row in self._read_pages(
                        stop_table, "t, side, create_time, update_time, user_id, market, source,"
                                    " `option`, client_id, state, exact"):
                    state.stops.append(stop_from_row(row[:11], _exact_values(
                        row[11], len(STOP_DECIMALS), f"{stop_table} id {row[0]}")))
            if config_table in found:
                for rid, kind, name, detail in self._read_pages(config_table,
                                                                "kind, name, detail"):
                    state.config.append(
                        (kind, name, decode_config_detail(detail, f"{config_table} id {rid}")))
        except pymysql.MySQLError as e:
            raise self._error(f"cannot read slice {t}", e) from e
        check_slice(info, state, orders_crc, balances_crc)
        return state

    def write_slice_data(self, info: SliceInfo, state: EngineState) -> None:
        t = slice_time(info)
        order_rows = []
        for o in state.orders:
            values = [o.price, o.amount, o.taker_fee, o.maker_fee, o.left, o.freeze,
                      o.deal_stock, o.deal_money, o.deal_fee]
            order_rows.append((o.id, o.type, o.side, o.ctime, o.mtime, o.user, o.market, o.source,
                               *[_sql_decimal(v) for v in values], _exact_text(values),
                               o.option, o.client_id))
        stop_rows = []
        for st in state.stops:
            values = stop_decimals(st)
            stop_rows.append((st.id, st.type, st.side, st.ctime, st.mtime, st.user, st.market,
                              st.source, st.option, st.client_id, st.state,
                              *[_sql_decimal(v) for v in values], _exact_text(values)))
        config_rows = [(kind, name, encode_config_detail(detail))
                       for kind, name, detail in state.config]
        balance_rows = [(user, asset, kind, _sql_decimal(value), str(value))
                        for user, asset, kind, value in state.balances]
        update_rows = list(state.updates)
        checksum = self._slice_sums[t] = state_checksum(state)
        document = [(i, crc, data) for i, (crc, data)
                    in enumerate(slicedoc.encode(state, checksum), 1)]
        inserts: list[tuple[str, str, Sequence[Sequence[Any]]]] = [
            (f"slice_order_{t}", _ORDER_COLUMNS, order_rows),
            (f"slice_balance_{t}", "user_id, asset, t, balance, exact", balance_rows),
            (f"slice_update_{t}", "user_id, asset, business, business_id, time", update_rows),
            (f"slice_stop_{t}", _STOP_COLUMNS, stop_rows),
            (f"slice_config_{t}", "kind, name, detail", config_rows),
            (f"slice_state_{t}", "id, checksum, data", document),
        ]
        conn = None
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                # A published slice of the same time stops being visible before its tables go.
                cur.execute("DELETE FROM slice_history WHERE time = %s", (t,))
                conn.commit()
                for table, _, _ in inserts:
                    template = table[:table.rindex("_")] + "_example"
                    cur.execute(f"DROP TABLE IF EXISTS `{table}`")
                    cur.execute(f"CREATE TABLE `{table}` LIKE {template}")
                for table, columns, rows in inserts:
                    if not rows:
                        continue
                    marks = ", ".join(["%s"] * (columns.count(",") + 1))
                    sql = f"INSERT INTO `{table}` ({columns}) VALUES ({marks})"
                    conn.begin()
                    for start in range(0, len(rows), CHUNK):
                        cur.executemany(sql, rows[start:start + CHUNK])
                    conn.commit()
        except pymysql.MySQLError as e:
            raise self._error(f"cannot write slice {t}", e) from e

    def publish_slice(self, info: SliceInfo) -> None:
        t = slice_time(info)
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                conn.begin()
                self._check_fence(conn)
                cur.execute("DELETE FROM slice_history WHERE time = %s", (t,))
                cur.execute(
                    "INSERT INTO slice_history (time, end_oper_id, end_order_id, end_deals_id,"
                    " checksum) VALUES (%s, %s, %s, %s, %s)",
                    (t, info.end_oper_id, info.end_order_id, info.end_deals_id,
                     self._slice_sums.pop(t, info.checksum)))
                conn.commit()
        except pymysql.MySQLError as e:
            raise self._error(f"cannot publish slice {t}", e) from e

    def delete_slice(self, info: SliceInfo) -> None:
        t = slice_time(info)
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                cur.execute("DELETE FROM slice_history WHERE time = %s", (t,))
                conn.commit()
                for kind in SLICE_KINDS:
                    cur.execute(f"DROP TABLE IF EXISTS `slice_{kind}_{t}`")
        except pymysql.MySQLError as e:
            raise self._error(f"cannot delete slice {t}", e) from e

    def drop_unpublished_slices(self, before: int) -> list[int]:
        """DDL commits on its own, so the list and the drops cannot be one transaction: each
        time is looked up in ``slice_history`` again just before its tables go (``before``
        is old enough that no writer can publish one of them meanwhile)."""
        try:
            tables = [r[0] for r in self._query("SHOW TABLES LIKE 'slice\\_%'")]
            published = [int(r[0]) for r in self._query("SELECT time FROM slice_history")]
            times = unpublished_slice_times(tables, published, before)
            conn = self._connection()
            dropped = []
            for t in times:
                if self._query("SELECT 1 FROM slice_history WHERE time = %s", (t,)):
                    continue
                with conn.cursor() as cur:
                    for kind in SLICE_KINDS:
                        cur.execute(f"DROP TABLE IF EXISTS `slice_{kind}_{t}`")
                dropped.append(t)
        except pymysql.MySQLError as e:
            raise self._error("cannot drop unpublished slices", e) from e
        return dropped
