"""marketprice state in SQLite (embedded mode): ``<data dir>/marketprice.db``.

Same content as the Redis layout, as tables: ``kline(market, kind, time, value)``,
``deal(market, id, value)`` (newest 10000 per market kept), ``market(name, last, seen)`` and
``meta('offset', value)``.  A flush is one SQLite transaction, so data and offset are
committed together.  All SQL runs on one worker thread; the event loop never waits on disk.
Each call on it is inside ``FORK_GUARD.using()`` (storage/forkguard.py): the matchengine in
the same process forks its slice children away from it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from exchange_server.marketprice.state import DEALS_MAX, KINDS, Changes, StoredMarket
from exchange_server.storage.forkguard import FORK_GUARD

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kline (
    market TEXT NOT NULL, kind TEXT NOT NULL, time INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (market, kind, time)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deal (
    market TEXT NOT NULL, id INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (market, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS market (
    name TEXT PRIMARY KEY, last TEXT, seen INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

FILENAME = "marketprice.db"


def _guarded(fn: Callable[[], T]) -> T:
    """Run ``fn`` (SQLite work) where the matchengine's slice fork waits for it.  Why: in
    embedded mode this worker thread lives in the matchengine's process; a ``fork()`` while it
    was inside SQLite left a slice child blocked forever on SQLite's mutex in its first
    ``connect`` (seen in bench_kill_restart: no slice was taken after it)."""
    with FORK_GUARD.using():
        return fn()


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        """``path``: the database file, or a directory to hold ``marketprice.db``."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / FILENAME
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="marketprice-db")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, _guarded, fn)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store not open"
        return self._db

    async def open(self) -> None:
        def _open() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            self._db = db
        await self._run(_open)

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        await self._run(_close)
        self._executor.shutdown(wait=True)

    async def load_offset(self) -> int:
        def _load() -> int:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'offset'").fetchone()
            return int(row[0]) if row else -1
        return await self._run(_load)

    async def load_market_names(self) -> list[str]:
        def _load() -> list[str]:
            rows = self.db.execute("SELECT name FROM market WHERE seen ORDER BY name").fetchall()
            return [r[0] for r in rows]
        return await self._run(_load)

    async def load_market(self, name: str) -> StoredMarket:
        def _load() -> StoredMarket:
            db = self.db
            klines: tuple[dict[int, str], ...] = ({}, {}, {}, {})
            index = {k: i for i, k in enumerate(KINDS)}
            for kind, ts, value in db.execute(
                    "SELECT kind, time, value FROM kline WHERE market = ?", (name,)):
                i = index.get(kind)
                if i is not None:
                    klines[i][ts] = value
            deals = [r[0] for r in db.execute(
                "SELECT value FROM deal WHERE market = ? ORDER BY id DESC LIMIT ?",
                (name, DEALS_MAX))]
            row = db.execute("SELECT last FROM market WHERE name = ?", (name,)).fetchone()
            return StoredMarket(last=row[0] if row else None, klines=klines, deals=deals)
        return await self._run(_load)

    async def write(self, changes: Changes) -> None:
        await self._run(lambda: self._write(changes))

    def _write(self, changes: Changes) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM kline WHERE market = ? AND kind = ? AND time = ?",
                           [(m, KINDS[k], ts) for m, k, ts in changes.deleted])
            db.executemany("INSERT OR REPLACE INTO kline (market, kind, time, value) "
                           "VALUES (?, ?, ?, ?)",
                           [(m, KINDS[k], ts, v) for m, k, ts, v in changes.buckets])
            db.executemany("INSERT INTO market (name, seen) VALUES (?, 1) "
                           "ON CONFLICT (name) DO UPDATE SET seen = 1",
                           [(m,) for m in changes.markets])
            db.executemany("INSERT INTO market (name, last) VALUES (?, ?) "
                           "ON CONFLICT (name) DO UPDATE SET last = excluded.last",
                           changes.lasts)
            for market, texts in changes.deals.items():
                db.executemany("INSERT OR REPLACE INTO deal (market, id, value) VALUES (?, ?, ?)",
                               [(market, deal_id, text) for deal_id, text in texts])
                db.execute("DELETE FROM deal WHERE market = ? AND id <= (SELECT id FROM deal "
                           "WHERE market = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                           (market, market, DEALS_MAX))
            if changes.offset >= 0:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('offset', ?)",
                           (str(changes.offset),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
