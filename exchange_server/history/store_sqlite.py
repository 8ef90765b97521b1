"""History backend for embedded mode: one SQLite file ``<data_dir>/trade_history.sqlite``.

One table per kind (no sharding; order_detail, which holds order_history's rows, is a view of
it in a file made since 2026-12-02, see DETAIL_VIEW), with the original's column names;
decimals are TEXT holding exactly what the original's DECIMAL column would hold (rounded to the
column's scale, see ``rows.column_converters``), so readers format both backends the same way.
``id`` is the rowid: AUTO_INCREMENT-like for balance/deal rows (never reused: rows are never
deleted), the order id for order rows.  The writer's rows come from this store's ``rows_of``
already as their stored values (``rows.stored_rows_of``), so a flush only groups them per table
and inserts them.

WAL with ``synchronous=NORMAL``: a power cut can lose the last transactions, rows and mark
together, and the operation log (fully synchronous) replays them.  That is all the durability
derived data needs, and the least that is safe: ``synchronous=OFF`` could leave a corrupt file
after a power cut (then the history would have to be rebuilt from the whole log).  A 64 MiB page
cache keeps a busy writer's index pages in memory.  (A checkpoint every 16 384 WAL pages instead
of 1 000 saved a little CPU but its bigger write bursts doubled the engine's p99 latency, whose
own log fsyncs share the disk: not taken.)

Indexes serve the readhistory queries (storage.md section 2), each ending implicitly in the
rowid so ``ORDER BY id DESC`` walks the index backwards:
balance_history (user_id), (user_id, asset), (user_id, asset, business); order_history
(user_id, market); deal_history (order_id); user_deal_history (user_id, market).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from exchange_server.history.rows import (
    ALL_KINDS,
    AUTO_ID,
    BALANCE,
    DEAL,
    DEAL_PAIR,
    DETAIL,
    GROUPS,
    ORDER,
    STOP,
    TABLES,
    USER_DEAL,
    USER_DEAL_PAIR,
    group_width,
    stored_rows_of,
)
from exchange_server.history.store import HistoryStoreError, Operation, skip_stored
from exchange_server.storage import sqlite as sqlite_db
from exchange_server.storage.forkguard import FORK_GUARD

FILENAME = "trade_history.sqlite"

#: Page cache of the writer's connection (KiB).  The default 2 MiB cannot hold the pages the
#: history's indexes touch in one flush (rows of a thousand users land all over them), so every
#: flush read and rewrote the same pages again.
CACHE_KIB = 65_536

_SQL_TYPES = {"DOUBLE": "REAL", "TEXT": "TEXT"}

INDEXES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    BALANCE: [
        ("idx_user", ("user_id",)),
        ("idx_user_asset", ("user_id", "asset")),
        ("idx_user_asset_business", ("user_id", "asset", "business")),
    ],
    ORDER: [("idx_user_market", ("user_id", "market"))],
    DETAIL: [],
    DEAL: [("idx_order_id", ("order_id",))],
    USER_DEAL: [("idx_user_market", ("user_id", "market"))],
    STOP: [("idx_user", ("user_id",)), ("idx_user_market", ("user_id", "market"))],
}


def _sqlite_type(sql_type: str) -> str:
    if sql_type.startswith(("DECIMAL", "VARCHAR")):
        return "TEXT"
    if sql_type.endswith("INT UNSIGNED"):
        return "INTEGER"
    return _SQL_TYPES[sql_type]


#: order_detail in a new file: a view of order_history, which holds the very same rows (both
#: get every finished order, the same values and id).  Why: one row in six of the e2e load
#: written once instead of twice.  A file made before it keeps its order_detail table, which
#: is still written (no migration; ``CREATE VIEW IF NOT EXISTS`` leaves the table alone).
DETAIL_VIEW = ('CREATE VIEW IF NOT EXISTS "order_detail" AS SELECT '
               + ", ".join(f'"{name}"' for name, _ in TABLES[DETAIL]) + ' FROM "order_history"')
#: An older version writing a file with the view inserts order_detail rows: ignored (its
#: order_history rows, the same, are stored), instead of an error that would stop its history.
DETAIL_VIEW_TRIGGER = ('CREATE TRIGGER IF NOT EXISTS "order_detail_insert" INSTEAD OF INSERT '
                       'ON "order_detail" BEGIN SELECT RAISE(IGNORE); END')


def schema() -> list[str]:
    """Every statement of the schema, all idempotent (order_detail: see DETAIL_VIEW; its
    trigger is created by ``open()`` once the view is there)."""
    ddl: list[str] = []
    for kind in ALL_KINDS:
        if kind == DETAIL:
            ddl.append(DETAIL_VIEW)
            continue
        cols = []
        if kind in AUTO_ID:
            cols.append('"id" INTEGER PRIMARY KEY')
        for name, sql_type in TABLES[kind]:
            if name == "id":
                cols.append('"id" INTEGER PRIMARY KEY')
            else:
                cols.append(f'"{name}" {_sqlite_type(sql_type)} NOT NULL')
        ddl.append(f'CREATE TABLE IF NOT EXISTS "{kind}" ({", ".join(cols)})')
        for index, columns in INDEXES[kind]:
            column_list = ", ".join(f'"{c}"' for c in columns)
            ddl.append(f'CREATE INDEX IF NOT EXISTS "{kind}_{index}" ON "{kind}" ({column_list})')
    ddl.append('CREATE TABLE IF NOT EXISTS "history_offset" '
               '("id" INTEGER PRIMARY KEY, "oper_id" INTEGER NOT NULL)')
    ddl.append('INSERT OR IGNORE INTO "history_offset" ("id", "oper_id") VALUES (1, 0)')
    return ddl


#: Rows per INSERT statement.  Why several: SQLite and the sqlite3 module pay a statement
#: step, halt and reset (and the module its per-call checks) once per statement, which cost
#: about as much as binding a row's values; with 64 rows a statement that overhead is paid once
#: per 64 rows.  (A history row has up to 17 columns: 64 rows stay far below SQLite's 32,766
#: parameters.)  The rows of a batch beyond the last full statement go one per statement.
ROWS_PER_INSERT = 64


#: The verb of every INSERT but order rows'.  Why not the default (ABORT): a statement of many
#: rows that may abort opens a statement journal, so that an error undoes its own rows only,
#: and SQLite then copies into it every page the statement changes that existed before it
#: (some 1,500 instructions per e2e order).  A write never keeps part of a
#: transaction: on any error the store rolls the whole one back (rows and mark), so the rows a
#: failed statement wrote before the error go with the rest.
FAIL = "INSERT OR FAIL"


def insert_sql(kind: str, rows: int = 1) -> str:
    """The INSERT of ``rows`` rows of ``kind`` (their values in row order, flattened)."""
    names = [name for name, _ in TABLES[kind]]
    columns = ", ".join(f'"{n}"' for n in names)
    marks = "(" + ", ".join("?" for _ in names) + ")"
    # order rows: a second write of an order id (never expected) keeps the first, as the
    # original ignored MySQL's duplicate-key error.  Any other: OR FAIL (see FAIL).
    verb = "INSERT OR IGNORE" if kind in (ORDER, DETAIL) else FAIL
    return f'{verb} INTO "{kind}" ({columns}) VALUES {", ".join([marks] * rows)}'


def group_insert_sql(kind: str, groups: int = 1) -> str:
    """The INSERT of ``groups`` groups of rows (rows.GROUPS): each group's values given once, in
    the group's order, and every row naming its values by number (``?N``) or holding a
    constant."""
    table, layouts = GROUPS[kind]
    width = group_width(kind)
    columns = ", ".join(f'"{name}"' for name, _ in TABLES[table])
    rows = [
        "(" + ", ".join(f"?{base + v + 1}" if type(v) is int else str(v) for v in layout) + ")"
        for base in range(0, groups * width, width) for layout in layouts]
    return f'{FAIL} INTO "{table}" ({columns}) VALUES {", ".join(rows)}'


class _Statements(dict[str, str]):
    """The INSERT per kind, made on its first use.  Why: a multi-row statement of a group
    writes out some 450 numbered parameters, and a follower that never sees some kinds of
    groups (no zero fees) would make them at every start for nothing."""

    def __init__(self, multi: bool) -> None:
        super().__init__()
        self.multi = multi

    def __missing__(self, kind: str) -> str:
        if kind in GROUPS:
            groups = ROWS_PER_INSERT // _ROWS[kind] if self.multi else 1
            sql = self[kind] = group_insert_sql(kind, groups)
        else:
            sql = self[kind] = insert_sql(kind, ROWS_PER_INSERT if self.multi else 1)
        return sql


_INSERTS = _Statements(multi=False)
_MULTI_INSERTS = _Statements(multi=True)
#: values in one unit of a kind's flat list: a row's, or a group's
_COLUMNS = {kind: len(TABLES[kind]) for kind in ALL_KINDS}
#: rows each unit of a kind's values stands for: a group's rows
_ROWS = dict.fromkeys(ALL_KINDS, 1)
for _kind, (_table, _layouts) in GROUPS.items():
    _ROWS[_kind] = len(_layouts)
    _COLUMNS[_kind] = group_width(_kind)


def insert_rows(conn: sqlite3.Connection, kind: str, values: list[object]) -> int:
    """Insert rows of ``kind`` given as one flat list of their column values (a group kind:
    the groups' values), in order: ROWS_PER_INSERT rows (or the groups that fit) a statement,
    then the rest one row (one group) a statement (a statement per size would be compiled
    again and again: the sqlite3 module keeps 128).  Returns how many rows."""
    width = _COLUMNS[kind]
    step = ROWS_PER_INSERT // _ROWS[kind] * width
    full = len(values) - len(values) % step
    if full:
        conn.executemany(_MULTI_INSERTS[kind], [values[i:i + step] for i in range(0, full, step)])
    if full < len(values):
        conn.executemany(_INSERTS[kind], [values[i:i + width]
                                          for i in range(full, len(values), width)])
    return len(values) // width * _ROWS[kind]


def _detail_is_view(conn: sqlite3.Connection) -> bool:
    """Whether order_detail is the view (a file made by this version) or a table (older)."""
    row = conn.execute("SELECT \"type\" FROM sqlite_master WHERE \"name\" = 'order_detail'"
                       ).fetchone()
    return row is not None and row[0] == "view"


class SqliteHistoryStore:
    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / FILENAME
        self._conn: sqlite3.Connection | None = None
        #: whether order_detail rows are inserted (a file with the order_detail table)
        self._write_detail = True

    def __repr__(self) -> str:
        return f"SqliteHistoryStore({str(self.path)!r})"

    #: Rows as their stored column values, per table (``rows.stored_rows_of``): written as
    #: they are.  The function itself (no method of its own: one call less per operation).
    rows_of = staticmethod(stored_rows_of)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite_db.connect(self.path)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        return conn

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in schema():
                    conn.execute(statement)
                if _detail_is_view(conn):
                    conn.execute(DETAIL_VIEW_TRIGGER)
                conn.execute("COMMIT")
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as e:
            raise HistoryStoreError(f"{self.path}: {e}") from e

    def read_mark(self) -> int:
        try:
            conn = self._connect()
            try:
                row = conn.execute('SELECT "oper_id" FROM "history_offset" WHERE "id" = 1').fetchone()
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise HistoryStoreError(f"{self.path}: {e}") from e
        return int(row[0]) if row else 0

    def write(self, batch: Sequence[Operation]) -> int:
        if not batch:
            return 0
        with FORK_GUARD.using():
            return self._write(batch)

    def _write(self, batch: Sequence[Operation]) -> int:
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = self._connect()
                self._write_detail = not _detail_is_view(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute('SELECT "oper_id" FROM "history_offset" WHERE "id" = 1').fetchone()
                mark = int(row[0]) if row else 0
                todo = skip_stored(batch, mark)
                if not todo:
                    conn.execute("ROLLBACK")
                    return 0
                count = self._insert(conn, todo)
                conn.execute('INSERT OR REPLACE INTO "history_offset" ("id", "oper_id") '
                             'VALUES (1, ?)', (todo[-1][0],))
                conn.execute("COMMIT")
                return count
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            self.close()
            raise HistoryStoreError(f"{self.path}: {e}") from e

    def _insert(self, conn: sqlite3.Connection, todo: Sequence[Operation]) -> int:
        """Insert the operations' rows (``stored_rows_of``'s), per table; returns how many
        (order_detail's counted, whether its table is written or is the view)."""
        # balance_history: consecutive values of one kind in one list, the lists in order
        # (their rows get their ids in that order); every other table: one flat list
        balances: list[tuple[str, list[object]]] = []
        kind_now = ""
        run: list[object] = []
        orders: list[object] = []
        deals: list[object] = []
        user_deals: list[object] = []
        stops: list[object] = []
        for _oper_id, rows in todo:
            if not rows:  # none in any form (an empty list: a mark raised past rows of others)
                continue
            op_balances, op_orders, op_deals, op_user_deals, op_stops = rows
            for kind, values in op_balances:
                if kind != kind_now:
                    kind_now, run = kind, []
                    balances.append((kind, run))
                run += values
            if op_orders:
                orders += op_orders
            if op_deals:
                deals += op_deals
                user_deals += op_user_deals
            if op_stops:
                stops += op_stops
        count = 0
        for kind, values in balances:
            count += insert_rows(conn, kind, values)
        if orders:
            count += 2 * insert_rows(conn, ORDER, orders)
            if self._write_detail:
                insert_rows(conn, DETAIL, orders)
        if deals:
            count += insert_rows(conn, DEAL_PAIR, deals)
        if user_deals:
            count += insert_rows(conn, USER_DEAL_PAIR, user_deals)
        if stops:
            count += insert_rows(conn, STOP, stops)
        return count

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass
