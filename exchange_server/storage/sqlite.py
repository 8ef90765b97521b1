"""SQLite connections for durable storage.

Every durable SQLite file of the project is opened through :func:`connect`: write-ahead log,
``synchronous=FULL`` (a committed transaction survives a power cut, not just a crash),
a 10 s busy timeout for the rare moments two processes write the same file, and
``isolation_level=None`` so that callers run explicit ``BEGIN`` / ``COMMIT`` statements instead
of the sqlite3 module's implicit transactions.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: How long a writer waits for another connection's lock, in milliseconds.
BUSY_TIMEOUT_MS = 10_000


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path`` for durable use.

    ``check_same_thread=False`` lets a connection move between threads; callers still use it
    from one thread at a time.
    """
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot switch to WAL journal mode ({mode})")
        conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn
