"""One SQL statement on a SQLite file or a MySQL database, committed: for tests that look at or
damage what a store wrote (``%s`` placeholders for both)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from exchange_server.common.config import MysqlConfig
from exchange_server.storage import mysql as mysql_db


def execute(target: Path | MysqlConfig, sql: str, args: Any = None) -> list[Any]:
    """Run ``sql`` on ``target`` (a SQLite file, or a MySQL database), commit, return its rows."""
    if isinstance(target, Path):
        db = sqlite3.connect(target)
        try:
            rows = db.execute(sql.replace("%s", "?"), args or ()).fetchall()
            db.commit()
            return rows
        finally:
            db.close()
    conn = mysql_db.connect(target)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            rows = list(cur.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()
