"""History backend for production: MySQL/MariaDB with the original's ``trade_history`` layout.

Templates ``balance_history_example``, ``order_history_example``, ``order_detail_example``,
``deal_history_example``, ``user_deal_history_example`` with the original's column types and
indexes (storage.md section 2), each cloned into ``X_0`` .. ``X_99``; shard = user_id % 100
(balance, order_history, user_deal_history) or order id % 100 (order_detail, deal_history).
Plus ``history_offset`` (one row, ``id`` = 1): the last operation id whose rows are stored,
updated in the same transaction as the rows (exactly-once, see store.py).

Deliberate differences from the original's DDL: ``DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin``
instead of ``utf8`` (a client's business name or detail may hold 4-byte characters, which strict
mode would refuse forever; string filters compare exactly, as on SQLite, where the original's
case-insensitive collation matched "btc" to "BTC"), and the ``history_offset`` table, which the
original did not have.

A flush is one transaction: the mark row is locked (``SELECT ... FOR UPDATE``, which also
serialises two writers by mistake pointed at one database), operations already stored are
skipped, then one multi-row INSERT per table and shard touched (split only when a statement
would exceed about 1 MB; several statements go in one round trip on a multi-statement
connection; a builder thread makes the next round trip's text while the database runs the
current one), the mark update, COMMIT.  Any error rolls back, drops the connection and is raised
as :class:`HistoryStoreError`; the writer retries the same batch.  ``init_schema`` (also run by
``open()`` on a database never initialised, unless ``create_schema=False``) is idempotent.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
from pymysql.constants import CLIENT

from exchange_server.common.config import MysqlConfig
from exchange_server.history.rows import (
    ALL_KINDS,
    AUTO_ID,
    BALANCE,
    DEAL,
    DETAIL,
    ORDER,
    SHARD_FIELD,
    SHARDS,
    STOP,
    TABLES,
    USER_DEAL,
    Row,
    column_converters,
    decimal_fast_path,
    rows_of,
    time_value,
)
from exchange_server.history.store import HistoryStoreError, Operation, skip_stored
from exchange_server.matchengine.core.model import Event
from exchange_server.storage import mysql as mysql_db

log = logging.getLogger("exchange_server.history")

CHARSET = "utf8mb4"
#: Binary collation: string filters (asset, business, market) match exactly, as on SQLite.  The
#: original's utf8_general_ci matched "btc" to "BTC" and ignored trailing spaces.
COLLATION = "utf8mb4_bin"

#: The original's indexes per template.
INDEXES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    BALANCE: [
        ("idx_user_asset", ("user_id", "asset")),
        ("idx_user_asset_business", ("user_id", "asset", "business")),
    ],
    ORDER: [("idx_user_market", ("user_id", "market"))],
    DETAIL: [("idx_user_market", ("user_id", "market"))],
    DEAL: [("idx_order_id", ("order_id",))],
    USER_DEAL: [("idx_user_market", ("user_id", "market"))],
    STOP: [("idx_user", ("user_id",)), ("idx_user_market", ("user_id", "market"))],
}

OFFSET_TABLE = "history_offset"


def _q(name: str) -> str:
    return mysql_db.quote_name(name)


def table_name(kind: str, shard: int) -> str:
    return f"{kind}_{shard}"


def template_ddl(kind: str) -> str:
    lines: list[str] = []
    if kind in AUTO_ID:
        lines.append("`id` BIGINT UNSIGNED NOT NULL PRIMARY KEY AUTO_INCREMENT")
    for name, sql_type in TABLES[kind]:
        if name == "id":
            lines.append(f"`id` {sql_type} NOT NULL PRIMARY KEY")
        else:
            lines.append(f"{_q(name)} {sql_type} NOT NULL")
    for index, columns in INDEXES[kind]:
        lines.append(f"INDEX {_q(index)} ({', '.join(_q(c) for c in columns)})")
    body = ",\n    ".join(lines)
    return (f"CREATE TABLE IF NOT EXISTS {_q(kind + '_example')} (\n    {body}\n)"
            f" ENGINE=InnoDB DEFAULT CHARSET={CHARSET} COLLATE={COLLATION}")


def schema() -> list[str]:
    """Every statement of the schema, all idempotent."""
    ddl = [template_ddl(kind) for kind in ALL_KINDS]
    for kind in ALL_KINDS:
        for shard in range(SHARDS):
            ddl.append(f"CREATE TABLE IF NOT EXISTS {_q(table_name(kind, shard))} "
                       f"LIKE {_q(kind + '_example')}")
    ddl.append(f"CREATE TABLE IF NOT EXISTS {_q(OFFSET_TABLE)} ("
               "`id` TINYINT UNSIGNED NOT NULL PRIMARY KEY,"
               " `oper_id` BIGINT UNSIGNED NOT NULL"
               f") ENGINE=InnoDB DEFAULT CHARSET={CHARSET}")
    ddl.append(f"INSERT IGNORE INTO {_q(OFFSET_TABLE)} (`id`, `oper_id`) VALUES (1, 0)")
    return ddl


def init_schema(cfg: MysqlConfig) -> None:
    """Create the database and every history table if missing (``exchange-server db init``).

    Idempotent: existing tables and rows are left alone."""
    mysql_db.ensure_database(cfg)
    conn = mysql_db.connect(cfg)
    try:
        with conn.cursor() as cur:
            for statement in schema():
                cur.execute(statement)
        conn.commit()
    finally:
        conn.close()


# -- multi-row INSERT text -------------------------------------------------------------------------
#
# PyMySQL's executemany escapes every value through generic Python code (about half the write
# time); each column's type is known here, so rows are turned into SQL literals directly.
# Decimals are fixed-point text made by the column converters (digits, "-", "."), times finite
# floats, strings escaped like PyMySQL's escape_string (backslash escapes: our sessions' sql_mode
# has no NO_BACKSLASH_ESCAPES).

#: Longest INSERT statement sent (characters), well under MariaDB's default 16 MB packet.
MAX_STATEMENT = 1_000_000

_ESCAPES = {0: "\\0", ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r",
            ord("\032"): "\\Z", ord('"'): '\\"', ord("'"): "\\'"}



def _float_literal(value: float) -> str:
    value = time_value(value)
    if not math.isfinite(value):
        return "0e0"
    text = repr(value)
    return text if "e" in text else text + "e0"


def _escaped(convert: Callable[[Any], str]) -> Callable[[Any], str]:
    def literal(value: Any) -> str:
        return convert(value).translate(_ESCAPES)

    return literal


def row_literal_function(kind: str) -> Callable[[Sequence[Any]], str]:
    """``row -> "(v1,v2,...)"`` with the stored values of ``kind``'s columns as SQL literals.

    Why generated: building these literals was most of the MySQL writer's Python time, and a
    per-value function call (a list of converters zipped with the row) cost more than the
    conversions themselves.  The generated function unpacks the row and formats every column
    in one f-string, calling a converter only for what needs one (times, strings, and decimals
    near their column's range); its text is exactly what the per-column converters give."""
    names: dict[str, Any] = {"_float": _float_literal}
    fields: list[str] = []
    args = [f"v{i}" for i in range(len(TABLES[kind]))]
    for i, ((_name, sql_type), conv) in enumerate(zip(TABLES[kind], column_converters(kind),
                                                      strict=True)):
        v = args[i]
        dec = re.match(r"DECIMAL\((\d+),(\d+)\)\Z", sql_type)
        if dec:
            names[f"c{i}"] = conv
            expr = decimal_fast_path(int(dec.group(1)), int(dec.group(2)), v, f"c{i}")
            fields.append("'{" + expr + "}'")
        elif sql_type.startswith("VARCHAR") or sql_type == "TEXT":
            assert conv is not None
            names[f"c{i}"] = _escaped(conv)
            fields.append(f"'{{c{i}({v})}}'")
        elif sql_type == "DOUBLE":
            fields.append(f"{{_float({v})}}")
        else:
            fields.append(f"{{int({v})}}")
    source = (f"def literal(row):\n    {', '.join(args)}, = row\n"
              f"    return f\"({','.join(fields)})\"\n")
    exec(compile(source, f"<history literal {kind}>", "exec"), names)  # noqa: S102
    function: Callable[[Sequence[Any]], str] = names["literal"]
    return function


_ROW_LITERAL = {kind: row_literal_function(kind) for kind in ALL_KINDS}


def insert_prefix(kind: str, shard: int) -> str:
    columns = ", ".join(_q(name) for name, _ in TABLES[kind])
    return f"INSERT INTO {_q(table_name(kind, shard))} ({columns}) VALUES "


def insert_suffix(kind: str) -> str:
    # A second write of an order id (never expected: the mark prevents it) is ignored, as the
    # original ignored the duplicate-key error 1062, instead of blocking history forever.
    return " ON DUPLICATE KEY UPDATE `id` = `id`" if kind in (ORDER, DETAIL) else ""


_PREFIX = {(kind, shard): insert_prefix(kind, shard) for kind in ALL_KINDS for shard in range(SHARDS)}
_SUFFIX = {kind: insert_suffix(kind) for kind in ALL_KINDS}


def insert_statements(kind: str, shard: int, rows: Sequence[Sequence[Any]]) -> list[str]:
    """Multi-row INSERTs storing ``rows`` (in order) in ``kind``'s table ``shard``: one
    statement unless it would exceed MAX_STATEMENT characters."""
    literal = _ROW_LITERAL[kind]
    prefix = _PREFIX[(kind, shard)]
    suffix = _SUFFIX[kind]
    statements: list[str] = []
    values: list[str] = []
    size = len(prefix) + len(suffix)
    for row in rows:
        text = literal(row)
        if values and size + len(text) + 1 > MAX_STATEMENT:
            statements.append(prefix + ",".join(values) + suffix)
            values = []
            size = len(prefix) + len(suffix)
        values.append(text)
        size += len(text) + 1
    if values:
        statements.append(prefix + ",".join(values) + suffix)
    return statements


def _packed(statements: list[str]) -> list[str]:
    """Statements joined with ";" into texts of at most about MAX_STATEMENT characters."""
    texts: list[str] = []
    current: list[str] = []
    size = 0
    for statement in statements:
        if current and size + len(statement) + 1 > MAX_STATEMENT:
            texts.append(";".join(current))
            current = []
            size = 0
        current.append(statement)
        size += len(statement) + 1
    if current:
        texts.append(";".join(current))
    return texts


#: (table, shard) groups per pipelined step of a flush (a batch touches up to 600).
PIPELINE_GROUPS = 64


def _step_texts(groups: list[tuple[tuple[str, int], list[Any]]]) -> list[str]:
    """The multi-statement texts inserting ``groups``' rows (the builder thread's work)."""
    statements: list[str] = []
    for (kind, shard), group in groups:
        statements += insert_statements(kind, shard, group)
    return _packed(statements)


def _connect_multi(cfg: MysqlConfig) -> pymysql.Connection:
    """Like storage.mysql.connect, with multi-statement texts allowed (this connection only
    ever sends texts built here)."""
    return pymysql.connect(
        host=cfg.host,
        port=cfg.port,
        user=cfg.user,
        password=cfg.password,
        database=cfg.name,
        charset=mysql_db.CHARSET,
        autocommit=False,
        connect_timeout=mysql_db.CONNECT_TIMEOUT,
        read_timeout=mysql_db.READ_TIMEOUT,
        write_timeout=mysql_db.WRITE_TIMEOUT,
        init_command=f"SET SESSION sql_mode = '{mysql_db.SQL_MODE}'",
        client_flag=CLIENT.MULTI_STATEMENTS,
    )


class MysqlHistoryStore:
    def __init__(self, cfg: MysqlConfig, *, create_schema: bool = True) -> None:
        """``create_schema``: ``open()`` runs :func:`init_schema` when ``history_offset`` is
        missing (a database never initialised); otherwise a missing schema is an error."""
        self.cfg = cfg
        self.create_schema = create_schema
        self._conn: pymysql.Connection | None = None
        self._builder: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"MysqlHistoryStore({self.cfg.user}@{self.cfg.host}:{self.cfg.port}/{self.cfg.name})"

    def rows_of(self, events: list[Event]) -> list[Row]:
        """``rows.rows_of``'s rows: their SQL literals are made from the raw values."""
        return rows_of(events)

    def _schema_present(self) -> bool:
        """Whether every table exists (a database made before a kind was added, e.g.
        stop_history, gets the new tables: the schema statements are idempotent)."""
        conn = mysql_db.connect(self.cfg)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW TABLES")
                tables = {row[0] for row in cur.fetchall()}
            conn.commit()
        finally:
            conn.close()
        needed = {OFFSET_TABLE} | {table_name(kind, SHARDS - 1) for kind in ALL_KINDS}
        return needed <= tables

    def open(self) -> None:
        try:
            try:
                present = self._schema_present()
            except pymysql.err.OperationalError as e:
                if e.args and e.args[0] == 1049 and self.create_schema:  # unknown database
                    present = False
                else:
                    raise
            if not present:
                if not self.create_schema:
                    raise HistoryStoreError(
                        f"{self!r}: history tables missing (run `exchange-server db init`)")
                log.info("%r: creating the history tables", self)
                init_schema(self.cfg)
        except pymysql.MySQLError as e:
            raise HistoryStoreError(f"{self!r}: {e}") from e

    def read_mark(self) -> int:
        try:
            conn = mysql_db.connect(self.cfg)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"SELECT `oper_id` FROM {_q(OFFSET_TABLE)} WHERE `id` = 1")
                    row = cur.fetchone()
                conn.commit()
            finally:
                conn.close()
        except pymysql.MySQLError as e:
            raise HistoryStoreError(f"{self!r}: {e}") from e
        return int(row[0]) if row else 0

    def write(self, batch: Sequence[Operation]) -> int:
        if not batch:
            return 0
        conn = self._conn
        try:
            if conn is None:
                conn = self._conn = _connect_multi(self.cfg)
            with conn.cursor() as cur:
                cur.execute(f"SELECT `oper_id` FROM {_q(OFFSET_TABLE)} WHERE `id` = 1 FOR UPDATE")
                row = cur.fetchone()
                mark = int(row[0]) if row else 0
                todo = skip_stored(batch, mark)
                if not todo:
                    conn.rollback()
                    return 0
                grouped: dict[tuple[str, int], list[Any]] = {}
                for _oper_id, rows in todo:
                    for kind, values in rows:
                        key = (kind, int(values[SHARD_FIELD[kind]]) % SHARDS)
                        group = grouped.get(key)
                        if group is None:
                            group = grouped[key] = []
                        group.append(values)
                count = sum(len(group) for group in grouped.values())
                self._insert(cur, list(grouped.items()))
                cur.execute(f"INSERT INTO {_q(OFFSET_TABLE)} (`id`, `oper_id`) VALUES (1, %s)"
                            " ON DUPLICATE KEY UPDATE `oper_id` = VALUES(`oper_id`)",
                            (todo[-1][0],))
            conn.commit()
            return count
        except pymysql.MySQLError as e:
            self.close()
            raise HistoryStoreError(f"{self!r}: {e}") from e
        except BaseException:
            self.close()
            raise

    def _insert(self, cur: Any, groups: list[tuple[tuple[str, int], list[Any]]]) -> None:
        """Run the INSERTs of every (table, shard) group, several per round trip.

        Pipelined: while the database runs one step's statements (this thread waits on the
        socket, without the GIL), the builder thread turns the next step's rows into SQL text.
        Building and running each took about half of a flush, one after the other."""
        steps = [groups[i:i + PIPELINE_GROUPS] for i in range(0, len(groups), PIPELINE_GROUPS)]
        if not steps:
            return
        builder = self._builder
        if builder is None:
            builder = self._builder = ThreadPoolExecutor(1, thread_name_prefix="history-sql")
        pending = builder.submit(_step_texts, steps[0])
        for following in [*steps[1:], None]:
            texts = pending.result()
            if following is not None:
                pending = builder.submit(_step_texts, following)
            for text in texts:
                cur.execute(text)
                while cur.nextset():
                    pass

    def close(self) -> None:
        builder, self._builder = self._builder, None
        if builder is not None:
            builder.shutdown(wait=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except pymysql.MySQLError:
                pass
