"""MySQL / MariaDB connections (PyMySQL).

:func:`connect` gives a connection with autocommit off (callers commit or roll back every unit
of work, which also releases InnoDB snapshots and metadata locks), the ``utf8mb4`` character
set whatever the config says (the original's ``utf8`` cannot store 4-byte characters, which a
client may well send in a JSON string), bounded connect/read/write timeouts, and a known
``sql_mode`` with strict tables, so an out-of-range value is an error rather than a silently
truncated row, and PyMySQL's backslash escaping is always valid.
"""

from __future__ import annotations

import pymysql
from pymysql.constants import CLIENT

from exchange_server.common.config import MysqlConfig

CHARSET = "utf8mb4"
SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
WRITE_TIMEOUT = 60


def quote_name(name: str) -> str:
    """A backquoted identifier (database or table name)."""
    return "`" + name.replace("`", "``") + "`"


def connect(
    cfg: MysqlConfig,
    database: bool = True,
    *,
    connect_timeout: int = CONNECT_TIMEOUT,
    read_timeout: int = READ_TIMEOUT,
    write_timeout: int = WRITE_TIMEOUT,
    multi_statements: bool = False,
) -> pymysql.Connection:
    """Connect to ``cfg``'s server, using database ``cfg.name`` unless ``database`` is False.
    ``multi_statements``: one query may hold several statements separated by ``;`` (the
    operation log sends its last INSERT and the COMMIT in one round trip); only for callers
    whose SQL is built from escaped values, never from a client's text."""
    return pymysql.connect(
        host=cfg.host,
        port=cfg.port,
        user=cfg.user,
        password=cfg.password,
        database=cfg.name if database else None,
        charset=CHARSET,
        autocommit=False,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        write_timeout=write_timeout,
        init_command=f"SET SESSION sql_mode = '{SQL_MODE}'",
        client_flag=CLIENT.MULTI_STATEMENTS if multi_statements else 0,
    )


def ensure_database(cfg: MysqlConfig) -> None:
    """``CREATE DATABASE IF NOT EXISTS`` ``cfg.name`` (connecting without a database)."""
    conn = connect(cfg, database=False)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {quote_name(cfg.name)} CHARACTER SET {CHARSET}"
            )
        conn.commit()
    finally:
        conn.close()
