"""The publisher's durable mark: the highest operation id whose messages are all acknowledged.

Why a seam (:class:`MarkStore`): in production the matchengine may move to another host (an
active/standby pair, issue 16), so the mark must live where the operation log lives, not on
the host that published.  Two stores:

* :class:`MarkFile` (embedded mode, tests): a small JSON file, ``{"oper_id": N, "offsets":
  {"deals": n, ...}}``, replaced atomically (write a temporary file, fsync, rename).  A missing
  or unreadable file reads as mark 0.
* :class:`MysqlMark` (production): one row of table ``bus_mark`` in the matchengine's log
  database (``db_log``), updated in one autocommitted statement.  On the first start after an
  upgrade (no row yet) it takes over the old mark file's value, so that an upgrade neither
  republishes everything nor skips anything.  Its writes never lower the stored mark (a
  deposed matchengine still flushing cannot pull it back under the new active's).

``offsets`` is only used by the in-process adapter: the offset the first message after
operation N gets on each topic, so that re-published messages get back the offsets they had
before the restart.

The mark may lag behind the truth (it is rewritten every 0.5 s at most) but is never ahead of
it: a lower mark only means some operations are published a second time after a restart.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from exchange_server.common.config import MatchEngineConfig, MysqlConfig

if TYPE_CHECKING:
    import pymysql

log = logging.getLogger("exchange_server.bus")

#: The row of ``bus_mark`` the matchengine's publisher uses.
PUBLISHER_MARK = "matchengine"
#: Seconds to wait for the log database on each mark read or write.
MYSQL_TIMEOUT = 5

BUS_MARK_DDL = """CREATE TABLE IF NOT EXISTS `bus_mark` (
    `name`       VARCHAR(64) NOT NULL PRIMARY KEY,
    `oper_id`    BIGINT UNSIGNED NOT NULL,
    `offsets`    TEXT NOT NULL,
    `updated_at` DOUBLE NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8"""

# offsets first: MySQL evaluates ON DUPLICATE KEY UPDATE assignments left to right, each
# seeing the columns the previous ones set.
_UPSERT = """INSERT INTO `bus_mark` (`name`, `oper_id`, `offsets`, `updated_at`)
VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE
    `offsets` = IF(VALUES(`oper_id`) >= `oper_id`, VALUES(`offsets`), `offsets`),
    `updated_at` = IF(VALUES(`oper_id`) >= `oper_id`, VALUES(`updated_at`), `updated_at`),
    `oper_id` = GREATEST(`oper_id`, VALUES(`oper_id`))"""


@dataclass(frozen=True)
class Mark:
    oper_id: int = 0
    offsets: dict[str, int] = field(default_factory=dict)


class MarkStoreError(OSError):
    """The mark could not be read or written (the publisher logs it and retries later)."""


class MarkStore(Protocol):
    """Where a :class:`~exchange_server.bus.publisher.BusPublisher` keeps its mark."""

    def load(self) -> Mark: ...

    def save(self, mark: Mark) -> None: ...

    def close(self) -> None:
        """Release what the store holds (a connection); the next call opens it again."""
        ...


def _valid(oper_id: Any, offsets: Any) -> bool:
    return type(oper_id) is int and oper_id >= 0 and isinstance(offsets, dict) and all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in offsets.items())


def _encode(mark: Mark) -> str:
    return json.dumps({"oper_id": mark.oper_id, "offsets": mark.offsets}, sort_keys=True)


class MarkFile:
    """A mark stored at ``path``; with ``path=None`` nothing is stored (mark is always 0)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None

    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def load(self) -> Mark:
        if self.path is None:
            return Mark()
        try:
            data = json.loads(self.path.read_text())
            oper_id = data["oper_id"]
            offsets = data.get("offsets", {})
            if not _valid(oper_id, offsets):
                raise ValueError("bad field types")
        except FileNotFoundError:
            return Mark()
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("%s: unreadable bus mark (%s): starting from mark 0", self.path, e)
            return Mark()
        return Mark(oper_id, dict(offsets))

    def save(self, mark: Mark) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(_encode(mark))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def close(self) -> None:
        pass


class MysqlMark:
    """The mark as row ``name`` of ``bus_mark`` in ``cfg``'s database; ``legacy`` is the mark
    file of the releases that kept it on the host, taken over when the row does not exist."""

    def __init__(self, cfg: MysqlConfig, name: str = PUBLISHER_MARK,
                 legacy: MarkFile | None = None) -> None:
        self.cfg = cfg
        self.name = name
        self.legacy = legacy
        self._conn: pymysql.Connection | None = None

    def __repr__(self) -> str:
        return f"MysqlMark({self.cfg.host}:{self.cfg.port}/{self.cfg.name} bus_mark.{self.name})"

    def load(self) -> Mark:
        """The stored mark; raises :class:`MarkStoreError` when the database cannot be read
        (unlike a bad file, a database that is down must not read as mark 0)."""
        import pymysql  # here, not at the top: the embedded mode's mark is a file

        try:
            row = self._read()
            if row is None and self.legacy is not None and self.legacy.exists():
                row = self._take_over_legacy(self.legacy)
        except pymysql.MySQLError as e:
            raise self._error("cannot read the bus mark", e) from None
        return row or Mark()

    def save(self, mark: Mark) -> None:
        import pymysql

        try:
            self._write(mark)
        except pymysql.MySQLError as e:
            raise self._error("cannot store the bus mark", e) from None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            import pymysql

            try:
                conn.close()
            except pymysql.MySQLError:
                pass

    # -- internals --------------------------------------------------------------------------------

    def _connection(self) -> pymysql.Connection:
        from exchange_server.storage import mysql as mysql_db

        if self._conn is None:
            mysql_db.ensure_database(self.cfg)  # (a first start: the log's may not exist yet)
            self._conn = mysql_db.connect(self.cfg, connect_timeout=MYSQL_TIMEOUT,
                                          read_timeout=MYSQL_TIMEOUT,
                                          write_timeout=MYSQL_TIMEOUT)
            self._conn.autocommit(True)
            with self._conn.cursor() as cur:
                cur.execute(BUS_MARK_DDL)
        return self._conn

    def _error(self, what: str, e: pymysql.MySQLError) -> MarkStoreError:
        self.close()
        return MarkStoreError(f"{self!r}: {what}: {e}")

    def _read(self) -> Mark | None:
        with self._connection().cursor() as cur:
            cur.execute("SELECT `oper_id`, `offsets` FROM `bus_mark` WHERE `name` = %s",
                        (self.name,))
            row = cur.fetchone()
        if row is None:
            return None
        oper_id, text = int(row[0]), row[1]
        try:
            offsets = json.loads(text).get("offsets", {})
        except (ValueError, AttributeError):
            offsets = None
        if not _valid(oper_id, offsets):
            log.error("%r: unreadable offsets %r: kept the operation id only", self, text)
            offsets = {}
        return Mark(oper_id, dict(offsets))

    def _write(self, mark: Mark) -> None:
        with self._connection().cursor() as cur:
            cur.execute(_UPSERT, (self.name, mark.oper_id, _encode(mark), time.time()))

    def _take_over_legacy(self, legacy: MarkFile) -> Mark | None:
        mark = legacy.load()
        self._write(mark)
        log.warning("bus mark taken over from %s into %r: operation %d (the file is no longer "
                    "read or written and may be removed)", legacy.path, self, mark.oper_id)
        return self._read()  # (another process may have stored a higher one meanwhile)


def publisher_mark(config: MatchEngineConfig) -> MysqlMark:
    """The production matchengine's mark store: its row in the log database, the old mark
    file (``bus_mark_file``) taken over on the first start after the upgrade.  The one place
    that says where a production mark is kept (the process, a standby reading the active's
    mark and a new active's publisher all use it)."""
    assert config.db_log is not None
    return MysqlMark(config.db_log, legacy=MarkFile(config.bus_mark_file))
