"""The history queries readhistory runs, on SQLite or MySQL (storage.md section 2, "readhistory
query shapes").

Readers are read-only and thread-safe: each worker thread gets its own connection, opened on
first use and dropped after an error (the next query reconnects).  Every query sees the latest
committed rows (autocommit), so several readers, in any number of processes, can share one
database with the writer.  Rows come back as tuples of raw column values in the documented
column order; ``methods.py`` shapes them into replies.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from exchange_server.common.config import MysqlConfig
from exchange_server.history.rows import SHARDS
from exchange_server.history.store import HistoryStoreError
from exchange_server.history.store_sqlite import FILENAME
from exchange_server.storage import sqlite as sqlite_db
from exchange_server.storage.forkguard import FORK_GUARD

Record = Sequence[Any]
T = TypeVar("T")

BALANCE_COLUMNS = "`time`, `asset`, `business`, `change`, `balance`, `detail`"
ORDER_COLUMNS = ("`id`, `create_time`, `finish_time`, `user_id`, `market`, `source`, `t`, `side`, "
                 "`price`, `amount`, `taker_fee`, `maker_fee`, `deal_stock`, `deal_money`, "
                 "`deal_fee`")
DEAL_COLUMNS = ("`time`, `user_id`, `deal_id`, `role`, `price`, `amount`, `deal`, `fee`, "
                "`deal_order_id`")
USER_DEAL_COLUMNS = ("`time`, `user_id`, `deal_id`, `side`, `role`, `price`, `amount`, `deal`, "
                     "`fee`, `deal_order_id`, `market`")
STOP_COLUMNS = ("`id`, `create_time`, `finish_time`, `user_id`, `option`, `market`, `source`, `t`, "
                "`side`, `stop_price`, `price`, `amount`, `taker_fee`, `maker_fee`, `status`, "
                "`client_id`, `order_id`")

#: SQLite integers are signed 64-bit: a larger OFFSET is the same (empty) page.
SQLITE_INT_MAX = 2**63 - 1


class HistoryReader(Protocol):
    def balance_history(self, user_id: int, asset: str, business: str, start_time: int,
                        end_time: int, offset: int, limit: int) -> list[Record]:
        """time, asset, business, change, balance, detail"""
        ...

    def order_finished(self, user_id: int, market: str, side: int, start_time: int,
                       end_time: int, offset: int, limit: int) -> list[Record]:
        """id, create_time, finish_time, user_id, market, source, t, side, price, amount,
        taker_fee, maker_fee, deal_stock, deal_money, deal_fee"""
        ...

    def order_detail(self, order_id: int) -> Record | None:
        """Same columns as order_finished."""
        ...

    def order_deals(self, order_id: int, offset: int, limit: int) -> list[Record]:
        """time, user_id, deal_id, role, price, amount, deal, fee, deal_order_id"""
        ...

    def user_deals(self, user_id: int, market: str, offset: int, limit: int) -> list[Record]:
        """time, user_id, deal_id, side, role, price, amount, deal, fee, deal_order_id,
        market"""
        ...

    def stop_history(self, user_id: int, market: str, side: int, start_time: int,
                     end_time: int, offset: int, limit: int) -> list[Record]:
        """id, create_time, finish_time, user_id, option, market, source, t, side, stop_price,
        price, amount, taker_fee, maker_fee, status, client_id, order_id (market "" = all)"""
        ...

    def close(self) -> None:
        ...


def _stop_where(market: str, side: int, start_time: float, end_time: float,
                params: list[Any]) -> str:
    where = ""
    if market:
        where += " AND `market` = ?"
        params.append(market)
    return where + _order_where(side, start_time, end_time, params)


def _balance_where(asset: str, business: str, start_time: float, end_time: float,
                   params: list[Any]) -> str:
    where = ""
    if asset:
        where += " AND `asset` = ?"
        params.append(asset)
    if business:
        where += " AND `business` = ?"
        params.append(business)
    if start_time:
        where += " AND `time` >= ?"
        params.append(start_time)
    if end_time:
        where += " AND `time` < ?"
        params.append(end_time)
    return where


def _order_where(side: int, start_time: float, end_time: float, params: list[Any]) -> str:
    where = ""
    if side:
        where += " AND `side` = ?"
        params.append(side)
    if start_time:
        where += " AND `create_time` >= ?"
        params.append(start_time)
    if end_time:
        where += " AND `create_time` < ?"
        params.append(end_time)
    return where


class _PerThread:
    """One connection per thread, all closed by ``close()``."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []

    def get(self) -> Any:
        return getattr(self._local, "conn", None)

    def set(self, conn: Any) -> None:
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)

    def drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            try:
                conn.close()
            except Exception:
                pass

    def close_all(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass


# -- SQLite ---------------------------------------------------------------------------------------


class SqliteHistoryReader:
    """Reads ``<data_dir>/trade_history.sqlite`` through read-only connections."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / FILENAME
        self._conns = _PerThread()

    def __repr__(self) -> str:
        return f"SqliteHistoryReader({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = self._conns.get()
        if conn is None:
            uri = self.path.absolute().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                   timeout=sqlite_db.BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout = {sqlite_db.BUSY_TIMEOUT_MS}")
            self._conns.set(conn)
        return conn

    def _query(self, sql: str, params: list[Any]) -> list[Record]:
        try:
            with FORK_GUARD.using():
                return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            self._conns.drop()
            raise HistoryStoreError(f"{self.path}: {e}") from e

    @staticmethod
    def _page(offset: int, limit: int, params: list[Any]) -> str:
        params.extend((limit, min(offset, SQLITE_INT_MAX)))
        return " ORDER BY `id` DESC LIMIT ? OFFSET ?"

    def balance_history(self, user_id: int, asset: str, business: str, start_time: int,
                        end_time: int, offset: int, limit: int) -> list[Record]:
        params: list[Any] = [user_id]
        # as REAL: SQLite integers cannot hold a time above 2**63 - 1
        where = _balance_where(asset, business, float(start_time), float(end_time), params)
        sql = (f"SELECT {BALANCE_COLUMNS} FROM `balance_history` WHERE `user_id` = ?{where}"
               + self._page(offset, limit, params))
        return self._query(sql, params)

    def order_finished(self, user_id: int, market: str, side: int, start_time: int,
                       end_time: int, offset: int, limit: int) -> list[Record]:
        params: list[Any] = [user_id, market]
        where = _order_where(side, float(start_time), float(end_time), params)
        sql = (f"SELECT {ORDER_COLUMNS} FROM `order_history` WHERE `user_id` = ? AND `market` = ?"
               f"{where}" + self._page(offset, limit, params))
        return self._query(sql, params)

    def order_detail(self, order_id: int) -> Record | None:
        if order_id > SQLITE_INT_MAX:
            return None
        rows = self._query(f"SELECT {ORDER_COLUMNS} FROM `order_detail` WHERE `id` = ?",
                           [order_id])
        return rows[0] if rows else None

    def order_deals(self, order_id: int, offset: int, limit: int) -> list[Record]:
        if order_id > SQLITE_INT_MAX:
            return []
        params: list[Any] = [order_id]
        sql = (f"SELECT {DEAL_COLUMNS} FROM `deal_history` WHERE `order_id` = ?"
               + self._page(offset, limit, params))
        return self._query(sql, params)

    def user_deals(self, user_id: int, market: str, offset: int, limit: int) -> list[Record]:
        params: list[Any] = [user_id, market]
        sql = (f"SELECT {USER_DEAL_COLUMNS} FROM `user_deal_history` WHERE `user_id` = ? AND "
               "`market` = ?" + self._page(offset, limit, params))
        return self._query(sql, params)

    def stop_history(self, user_id: int, market: str, side: int, start_time: int,
                     end_time: int, offset: int, limit: int) -> list[Record]:
        params: list[Any] = [user_id]
        where = _stop_where(market, side, float(start_time), float(end_time), params)
        sql = (f"SELECT {STOP_COLUMNS} FROM `stop_history` WHERE `user_id` = ?{where}"
               + self._page(offset, limit, params))
        return self._query(sql, params)

    def close(self) -> None:
        self._conns.close_all()


# -- MySQL ----------------------------------------------------------------------------------------


def _mysql(sql: str) -> str:
    return sql.replace("?", "%s")


class MysqlHistoryReader:
    """Reads the sharded ``trade_history`` tables, autocommit connections per thread."""

    def __init__(self, cfg: MysqlConfig) -> None:
        self.cfg = cfg
        self._conns = _PerThread()

    def __repr__(self) -> str:
        return f"MysqlHistoryReader({self.cfg.user}@{self.cfg.host}:{self.cfg.port}/{self.cfg.name})"

    def _run(self, work: Callable[[Any], T]) -> T:
        # MySQL's client on first use: the embedded mode (SQLite) imports this module too
        import pymysql

        from exchange_server.storage import mysql as mysql_db

        try:
            conn = self._conns.get()
            if conn is None:
                conn = mysql_db.connect(self.cfg)
                conn.autocommit(True)
                self._conns.set(conn)
            with conn.cursor() as cur:
                return work(cur)
        except pymysql.MySQLError as e:
            self._conns.drop()
            raise HistoryStoreError(f"{self!r}: {e}") from e

    def _query(self, sql: str, params: list[Any]) -> list[Record]:
        def work(cur: Any) -> list[Record]:
            cur.execute(_mysql(sql), params)
            return list(cur.fetchall())

        return self._run(work)

    @staticmethod
    def _page(offset: int, limit: int, params: list[Any]) -> str:
        params.extend((offset, limit))
        return " ORDER BY `id` DESC LIMIT ?, ?"

    def balance_history(self, user_id: int, asset: str, business: str, start_time: int,
                        end_time: int, offset: int, limit: int) -> list[Record]:
        params: list[Any] = [user_id]
        where = _balance_where(asset, business, start_time, end_time, params)
        sql = (f"SELECT {BALANCE_COLUMNS} FROM `balance_history_{user_id % SHARDS}` "
               f"WHERE `user_id` = ?{where}" + self._page(offset, limit, params))
        return self._query(sql, params)

    def order_finished(self, user_id: int, market: str, side: int, start_time: int,
                       end_time: int, offset: int, limit: int) -> list[Record]:
        params: list[Any] = [user_id, market]
        where = _order_where(side, start_time, end_time, params)
        sql = (f"SELECT {ORDER_COLUMNS} FROM `order_history_{user_id % SHARDS}` "
               f"WHERE `user_id` = ? AND `market` = ?{where}" + self._page(offset, limit, params))
        return self._query(sql, params)

    def order_detail(self, order_id: int) -> Record | None:
        rows = self._query(f"SELECT {ORDER_COLUMNS} FROM `order_detail_{order_id % SHARDS}` "
                           "WHERE `id` = ?", [order_id])
        return rows[0] if rows else None

    def order_deals(self, order_id: int, offset: int, limit: int) -> list[Record]:
        params: list[Any] = [order_id]
        sql = (f"SELECT {DEAL_COLUMNS} FROM `deal_history_{order_id % SHARDS}` "
               "WHERE `order_id` = ?" + self._page(offset, limit, params))
        return self._query(sql, params)

    def user_deals(self, user_id: int, market: str, offset: int, limit: int) -> list[Record]:
        params: list[Any] = [user_id, market]
        sql = (f"SELECT {USER_DEAL_COLUMNS} FROM `user_deal_history_{user_id % SHARDS}` "
               "WHERE `user_id` = ? AND `market` = ?" + self._page(offset, limit, params))
        return self._query(sql, params)

    def stop_history(self, user_id: int, market: str, side: int, start_time: int,
                     end_time: int, offset: int, limit: int) -> list[Record]:
        params: list[Any] = [user_id]
        where = _stop_where(market, side, start_time, end_time, params)
        sql = (f"SELECT {STOP_COLUMNS} FROM `stop_history_{user_id % SHARDS}` "
               f"WHERE `user_id` = ?{where}" + self._page(offset, limit, params))
        return self._query(sql, params)

    def close(self) -> None:
        self._conns.close_all()
