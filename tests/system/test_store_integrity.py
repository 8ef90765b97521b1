"""A damaged operation log or slice stops start-up with one clear line, never a silent change.

An attacker (or a bad disk) changed one digit of the last logged deposit and the restarted
engine credited 1008 instead of 1000; garbage or a truncated record gave raw tracebacks.  Every
record and slice this project writes now carries a CRC-32, verified on load; rows written by the
original server (no checksum column, or NULL) are still accepted.  These tests damage the files
of real ``exchange-server`` processes (embedded on SQLite and on MySQL, and the standalone
matchengine) and start them again.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest

from exchange_server.common.config import MysqlConfig, default_matchengine_data
from exchange_server.matchengine.store import REPAIR_HINT, OperRecord, record_checksum
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore, encode_detail
from exchange_server.storage import mysql as mysql_db
from tests.support.server import REPO, ServerProcess
from tests.support.sql import execute as sql_execute
from tests.support.topology import Topology

DEPOSITS = ["1000", "1000", "1000"]


def _db(cfg: MysqlConfig) -> dict[str, Any]:
    return {"host": cfg.host, "port": cfg.port, "user": cfg.user, "pass": cfg.password,
            "name": cfg.name}


class Setup:
    """A data directory (and for MySQL, fresh log/history databases) with a server config."""

    def __init__(self, tmp_path: Path, storage: str,
                 mysql_config: Callable[..., MysqlConfig] | None) -> None:
        self.storage = storage
        self.data = tmp_path / "data"
        self.extra: list[str] = []
        self.config_path: Path | None = None
        self.log_cfg: MysqlConfig | None = None
        if storage == "mysql":
            assert mysql_config is not None
            self.log_cfg = mysql_config("test_integrity_log")
            history = mysql_config("test_integrity_history")
            config = default_matchengine_data()
            config.update(db_log=_db(self.log_cfg), db_history=_db(history))
            self.config_path = tmp_path / "matchengine.json"
            self.config_path.write_text(json.dumps(config))
            self.extra = ["--storage", "mysql"]

    def server(self) -> ServerProcess:
        return ServerProcess(self.data, config=self.config_path, extra=self.extra)

    def args(self) -> list[str]:
        args = [sys.executable, "-m", "exchange_server", "run", "--data-dir", str(self.data),
                "--http-port", "0", "--ws-port", "0", *self.extra]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        return args

    def execute(self, sql: str, args: Any = None) -> list[Any]:
        """Run SQL on the operation log database (the SQLite file or the MySQL database)."""
        if self.storage == "sqlite":
            return sql_execute(self.data / "trade_log.sqlite", sql, args)
        assert self.log_cfg is not None
        return sql_execute(self.log_cfg, sql, args)

    def operlog_table(self) -> str:
        if self.storage == "sqlite":
            return "operlog"
        tables = [r[0] for r in self.execute("SHOW TABLES LIKE 'operlog\\_2%'")]
        assert len(tables) == 1, tables
        return tables[0]


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    make = request.getfixturevalue("mysql_config") if request.param == "mysql" else None
    return Setup(tmp_path, request.param, make)


def _run_deposits_then_kill(setup: Setup) -> None:
    """Log three deposits and stop without a final slice (SIGKILL), so start-up replays them."""
    server = setup.server().start()
    try:
        for i, amount in enumerate(DEPOSITS, 1):
            assert server.call("balance.update", 1, "BTC", "deposit", i, amount, {}) == \
                {"status": "success"}
    finally:
        server.kill()


def _start_fails(args: list[str]) -> str:
    """Start a process that must refuse to start: its whole output, which must be free of
    tracebacks and end with exactly one error line."""
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    return output


def _cannot_start_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "cannot start" in line]


def test_changed_digit_in_last_record_stops_start_up(setup: Setup) -> None:
    _run_deposits_then_kill(setup)
    table = setup.operlog_table()
    (detail,) = setup.execute(f"SELECT detail FROM {table} WHERE id = 3")[0]
    assert '"1000"' in detail
    setup.execute(f"UPDATE {table} SET detail = %s WHERE id = 3",
                  (detail.replace('"1000"', '"1008"'),))
    output = _start_fails(setup.args())
    (line,) = _cannot_start_lines(output)
    assert "operation log record id 3 is damaged" in line, output
    assert REPAIR_HINT in line


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_truncated_or_garbage_record_stops_start_up(setup: Setup, damage: str) -> None:
    _run_deposits_then_kill(setup)
    table = setup.operlog_table()
    (detail,) = setup.execute(f"SELECT detail FROM {table} WHERE id = 3")[0]
    new = {"truncated": detail[:17], "garbage": "\x00\x13garbage{[", "empty": ""}[damage]
    setup.execute(f"UPDATE {table} SET detail = %s WHERE id = 3", (new,))
    output = _start_fails(setup.args())
    (line,) = _cannot_start_lines(output)
    assert "operation log record id 3 is damaged" in line, output


def test_unchecksummed_damage_is_still_one_line(setup: Setup) -> None:
    """A record without a checksum (the original's) that is garbage: still one line naming it."""
    _run_deposits_then_kill(setup)
    table = setup.operlog_table()
    setup.execute(f"UPDATE {table} SET detail = %s, checksum = NULL WHERE id = 2", ("{garb",))
    output = _start_fails(setup.args())
    (line,) = _cannot_start_lines(output)
    assert "id 2" in line, output


def test_records_without_checksum_are_accepted(setup: Setup) -> None:
    """Rows as the original (or this project before the column) wrote them: NULL checksum."""
    _run_deposits_then_kill(setup)
    table = setup.operlog_table()
    setup.execute(f"UPDATE {table} SET checksum = NULL")
    server = setup.server().start()
    try:
        assert server.call("balance.query", 1, "BTC")["BTC"]["available"] == "3000"
        server.call("balance.update", 1, "BTC", "deposit", 4, "1", {})
    finally:
        assert server.stop() == 0
    rows = setup.execute(f"SELECT id, time, detail, checksum FROM {table} ORDER BY id")
    assert [r[3] for r in rows[:3]] == [None, None, None]
    oper_id, t, detail, checksum = rows[3]
    assert checksum == record_checksum(oper_id, t, detail)


def test_damaged_slice_stops_start_up(setup: Setup) -> None:
    server = setup.server().start()
    try:
        server.call("balance.update", 1, "BTC", "deposit", 1, "1000", {})
    finally:
        assert server.stop() == 0  # writes the final slice
    # the slice document (read first) and the tables it falls back to are both damaged
    if setup.storage == "sqlite":
        db = sqlite3.connect(setup.data / "slices.sqlite")
        (t,) = db.execute("SELECT time FROM slice_history").fetchone()
        db.execute(f"UPDATE slice_balance_{t} SET balance = '1008'")
        db.execute(f"UPDATE slice_state_{t} SET checksum = (checksum + 1) % 4294967296")
        db.commit()
        db.close()
    else:
        (t,) = setup.execute("SELECT time FROM slice_history")[0]
        setup.execute(f"UPDATE slice_balance_{t} SET exact = '1008'")
        setup.execute(f"UPDATE slice_state_{t} SET checksum = (checksum + 1) % 4294967296")
    output = _start_fails(setup.args())
    assert f"slice_state_{t}: chunk 1 is damaged" in output, output
    (line,) = _cannot_start_lines(output)
    assert f"slice {t}" in line and "damaged" in line, output


def test_sqlite_log_of_an_older_version_is_migrated(tmp_path: Path) -> None:
    """A trade_log.sqlite made before the checksum column: the column is added on open, the
    old rows are read unverified and new ones are checksummed."""
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "trade_log.sqlite")
    db.execute("CREATE TABLE operlog (id INTEGER PRIMARY KEY, time REAL NOT NULL,"
               " detail TEXT NOT NULL)")
    db.execute("INSERT INTO operlog VALUES (1, 1700000000.5, ?)",
               (encode_detail("update_balance", [1, "BTC", "deposit", 1, "7", {}]),))
    db.commit()
    db.close()
    server = ServerProcess(data).start()
    try:
        assert server.call("balance.query", 1, "BTC")["BTC"]["available"] == "7"
        server.call("balance.update", 1, "BTC", "deposit", 2, "1", {})
    finally:
        assert server.stop() == 0
    store = SqliteEngineStore(data)
    store.open()
    try:
        assert [(r.id, r.params[4]) for r in store.read_operlog(0)] == [(1, "7"), (2, "1")]
    finally:
        store.close()


@pytest.mark.mysql
def test_mysql_tables_of_the_original_layout_are_read(mysql_config: Callable[..., MysqlConfig]
                                                      ) -> None:
    """The original's operlog tables (no checksum column) stay readable: ``open()`` adds the
    column, and a day table it did not see is read without it."""
    cfg = mysql_config("test_integrity_orig")
    mysql_db.ensure_database(cfg)
    conn = mysql_db.connect(cfg)
    original = ("(id BIGINT UNSIGNED NOT NULL PRIMARY KEY, time DOUBLE NOT NULL,"
                " detail TEXT DEFAULT NULL)")
    detail = '{"method": "update_balance", "params": [1, "BTC", "deposit", 1, "10", {"id": 1}]}'
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE operlog_example {original}")
            cur.execute(f"CREATE TABLE operlog_20261201 {original}")
            cur.execute("INSERT INTO operlog_20261201 VALUES (1, 1796096528.758718, %s)", (detail,))
        conn.commit()
        store = MysqlEngineStore(cfg)
        store.open()
        with conn.cursor() as cur:
            # made by the original after our open(): no checksum column
            cur.execute(f"CREATE TABLE operlog_20261202 {original}")
            cur.execute("INSERT INTO operlog_20261202 VALUES (2, 1796182928.5, %s)",
                        (detail.replace('1, "10"', '2, "5"'),))
        conn.commit()
        store._operlog_tables = None
        records = list(store.read_operlog(0))
        assert [(r.id, r.params[4]) for r in records] == [(1, "10"), (2, "5")]
        store.append([OperRecord(3, 1796182929.0, "update_balance",
                                 [1, "BTC", "deposit", 3, "1", {}])])
        with conn.cursor() as cur:
            cur.execute("SHOW COLUMNS FROM operlog_20261201 LIKE 'checksum'")
            assert cur.fetchall()
            cur.execute("SELECT id, time, detail, checksum FROM operlog_20261202 WHERE id = 3")
            (oper_id, t, text, checksum), = cur.fetchall()
        conn.commit()
        assert checksum == record_checksum(oper_id, t, text)
        store.close()
    finally:
        conn.close()


@pytest.mark.mysql
def test_standalone_matchengine_reports_a_damaged_log_in_one_line(
        tmp_path: Path, mysql_config: Callable[..., MysqlConfig]) -> None:
    log_cfg = mysql_config("test_integrity_me_log")
    store = MysqlEngineStore(log_cfg)
    store.open()
    store.append([OperRecord(i, 1796096528.0 + i, "update_balance",
                             [1, "BTC", "deposit", i, "1000", {}]) for i in (1, 2)])
    store.close()
    conn = mysql_db.connect(log_cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES LIKE 'operlog\\_2%'")
            (table,), = cur.fetchall()
            cur.execute(f"UPDATE `{table}` SET detail = REPLACE(detail, '1000', '1008')"
                        " WHERE id = 2")
        conn.commit()
    except pymysql.MySQLError:
        conn.close()
        raise
    conn.close()
    topo = Topology(tmp_path / "topo", log_cfg, mysql_config("test_integrity_me_history"),
                    redis_db=0)
    output = _start_fails(
        [sys.executable, "-m", "exchange_server", "matchengine", "-c",
         str(topo.conf / "matchengine.json"), "--lock-dir", str(topo.lock_dir)])
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines == ["matchengine: init server fail: cannot start: operation log record id 2 is"
                     f" damaged (checksum mismatch: changed or truncated on disk); {REPAIR_HINT}"
                     ], output
    log_text = (tmp_path / "topo" / "log").glob("matchengine*")
    assert not any("Traceback" in p.read_text() for p in log_text)


def test_clean_stop_still_starts(tmp_path: Path) -> None:
    """Sanity: an undamaged log and slice start as before (SIGTERM writes a checksummed
    slice, which is verified on load)."""
    server = ServerProcess(tmp_path / "data").start()
    try:
        server.call("balance.update", 1, "BTC", "deposit", 1, "5", {})
        server.stop()
        server.start()
        assert server.call("balance.query", 1, "BTC")["BTC"]["available"] == "5"
    finally:
        server.stop(signal.SIGTERM)
    db = sqlite3.connect(tmp_path / "data" / "slices.sqlite")
    try:
        assert all(row[0] is not None for row in db.execute("SELECT checksum FROM slice_history"))
    finally:
        db.close()
