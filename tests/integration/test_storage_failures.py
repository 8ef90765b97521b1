"""Writes are refused cleanly when the storage fails, and nothing refused ever takes effect.

Found by an attacker: with the data directory on a full 5 MB tmpfs, deposits were applied in
memory, answered 504 after the timeout, piled up, and were credited when space came back;
reads got 504 too, and SIGTERM never exited.  Now a failed commit refuses its operations with
code 3 at once, the service refuses writes until the storage takes writes again, reads are
answered from the durable state, and recovery is automatic.  The same holds with the MySQL
operation log's server stopped (a private MariaDB, stopped and started by the test).

Real servers throughout: a real ``exchange-server run`` on a real tmpfs (mounted by the test as
root; a refused mount fails the test), and a real MariaDB instance.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import MysqlConfig, default_matchengine_data
from exchange_server.matchengine.store import EngineStore
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.storage import mysql as mysql_db
from tests.integration.test_history_outage import OutageDatabase
from tests.support.server import CallError, ServerProcess

SERVICE_UNAVAILABLE = 3
#: A client detail that makes each log record a few KiB, so a full disk shows at once.
PAD = {"note": "x" * 3000}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 5 MB tmpfs of our own (the test runs as root; a refused mount fails it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"cannot mount a tmpfs: {result.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill(disk: Path, name: str = "filler") -> Path:
    """Fill the disk to the last byte; the filler file is returned (delete it to free space)."""
    filler = disk / name
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)
                f.flush()
        with contextlib.suppress(OSError):
            f.close()
    return filler


class Ledger:
    """What clients were told: the deposits acknowledged and the ones refused."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.business_id = 0
        self.acked: list[tuple[int, Decimal]] = []
        self.refused: list[int] = []

    def deposit(self, amount: str = "1", detail: dict[str, Any] | None = None) -> bool:
        """One deposit for user 1: True when acknowledged; a refusal must be code 3 (HTTP 200:
        answered at once, not a gateway timeout)."""
        self.business_id += 1
        try:
            result = self.server.call("balance.update", 1, "BTC", "deposit", self.business_id,
                                      amount, detail if detail is not None else {})
        except CallError as e:
            assert (e.status, e.code) == (200, SERVICE_UNAVAILABLE), (e.status, e.error)
            self.refused.append(self.business_id)
            return False
        assert result == {"status": "success"}
        self.acked.append((self.business_id, Decimal(amount)))
        return True

    def balance(self) -> Decimal:
        return sum((amount for _, amount in self.acked), Decimal(0))


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def answered_balance(server: ServerProcess) -> Decimal | None:
    """user 1's BTC balance, or None while reads are refused with code 3."""
    try:
        reply = server.call("balance.query", 1, "BTC")
    except CallError as e:
        assert (e.status, e.code) == (200, SERVICE_UNAVAILABLE), (e.status, e.error)
        return None
    return Decimal(reply["BTC"]["available"])


def logged_business_ids(store: EngineStore) -> list[int]:
    store.open()
    try:
        return [r.params[3] for r in store.read_operlog(0) if r.method == "update_balance"]
    finally:
        store.close()


def history_ids(server: ServerProcess, count: int) -> list[int]:
    """The business ids of user 1's BTC history once it holds ``count`` records."""
    def page() -> list[int] | None:
        records = server.call("balance.history", 1, "BTC", "", 0, 0, 0, 100)["records"]
        ids = sorted(r["detail"]["id"] for r in records if "id" in r["detail"])
        return ids if len(records) >= count else None
    found: list[int] = wait_until(page, "the history to catch up")
    return found


def on_disk(data: Path, logs: Path) -> ServerProcess:
    """A server with its data on the small disk and its output file elsewhere."""
    server = ServerProcess(data)
    server.log_path = logs / "server.log"
    return server


def test_full_disk_refuses_writes_and_recovers(small_disk: Path, tmp_path: Path) -> None:
    data = small_disk / "data"
    server = on_disk(data, tmp_path).start()
    ledger = Ledger(server)
    try:
        for _ in range(5):
            assert ledger.deposit("10", {"id": ledger.business_id + 1})

        # -- the disk fills up: writes refused with code 3 at once, never left pending --------
        filler = fill(small_disk)
        for _ in range(500):
            if not ledger.deposit("1", dict(PAD, id=ledger.business_id + 1)):
                break
        assert ledger.refused, "the full disk never refused a deposit"
        for i in range(20):
            # the server's own processes may free a few KiB now and then: keep it full
            fill(small_disk, f"top-up-{i}")
            assert not ledger.deposit("1000", dict(PAD, id=ledger.business_id + 1))
        # reads are answered (from the durable state, refused deposits not in it)
        assert wait_until(lambda: answered_balance(server), "reads to be answered") == \
            ledger.balance()

        # -- space comes back: recovery is automatic, the refused deposits never credited -----
        filler.unlink()
        for top_up in small_disk.glob("top-up-*"):
            top_up.unlink()
        wait_until(lambda: ledger.deposit("2", {"id": ledger.business_id + 1}),
                   "writes to be accepted again")
        assert answered_balance(server) == ledger.balance()

        # -- full again, then SIGTERM: the process exits within 10 s --------------------------
        filler = fill(small_disk)
        wait_until(lambda: not ledger.deposit("1000", dict(PAD, id=ledger.business_id + 1)),
                   "the full disk to refuse a deposit")
        assert server.stop(timeout=10) == 0
    finally:
        with contextlib.suppress(Exception):
            server.kill()

    # -- starting on a full disk (the stopped process freed its SQLite index files: fill the
    # rest): it exits with one clear line and no traceback, or it comes up answering reads
    # and refusing writes with code 3
    more = fill(small_disk, "filler-2")
    starting = on_disk(data, tmp_path)
    starting.log_path = tmp_path / "start-on-full-disk.log"
    try:
        starting.start()
    except RuntimeError:
        output = starting.log()
        assert "Traceback" not in output, output
        assert len([line for line in output.splitlines() if "cannot start" in line]) == 1, output
    else:
        try:
            assert not Ledger(starting).deposit("1000")
            assert wait_until(lambda: answered_balance(starting), "reads to be answered") == \
                ledger.balance()
        finally:
            assert starting.stop(timeout=10) == 0

    # -- space back: exactly the acknowledged operations took effect ---------------------------
    filler.unlink()
    more.unlink()
    server = on_disk(data, tmp_path).start()
    try:
        assert answered_balance(server) == ledger.balance()
        acked_ids = [bid for bid, _ in ledger.acked]
        assert history_ids(server, len(acked_ids)) == acked_ids
    finally:
        assert server.stop(timeout=30) == 0
    assert logged_business_ids(SqliteEngineStore(data)) == acked_ids


def _db(cfg: MysqlConfig) -> dict[str, Any]:
    return {"host": cfg.host, "port": cfg.port, "user": cfg.user, "pass": cfg.password,
            "name": cfg.name}


@pytest.fixture
def log_db(tmp_path: Path) -> Iterator[OutageDatabase]:
    db = OutageDatabase(tmp_path / "log-db-services")
    db.up()
    yield db
    db.down()


@pytest.mark.mysql
@pytest.mark.slow
def test_mysql_log_server_down_refuses_writes_and_recovers(
        tmp_path: Path, log_db: OutageDatabase, mysql_config: Callable[..., MysqlConfig]) -> None:
    log_cfg = log_db.config("test_outage_oplog")
    config = default_matchengine_data()
    config.update(db_log=_db(log_cfg), db_history=_db(mysql_config("test_outage_oplog_hist")))
    config_path = tmp_path / "matchengine.json"
    config_path.write_text(json.dumps(config))
    server = ServerProcess(tmp_path / "data", config=config_path, extra=["--storage", "mysql"])
    server.start()
    ledger = Ledger(server)
    try:
        for _ in range(5):
            assert ledger.deposit("10", {"id": ledger.business_id + 1})

        # -- the log's server stops: writes refused with code 3, reads never show them --------
        log_db.down()
        for _ in range(10):
            assert not ledger.deposit("1000", {"id": ledger.business_id + 1})
        for _ in range(5):
            assert answered_balance(server) in (None, ledger.balance())

        # -- it comes back: the engine recovers by itself ---------------------------------------
        log_db.up()
        wait_until(lambda: ledger.deposit("2", {"id": ledger.business_id + 1}),
                   "writes to be accepted again", timeout=120)
        assert answered_balance(server) == ledger.balance()

        # -- down again, then SIGTERM: the process exits within 10 s --------------------------
        log_db.down()
        wait_until(lambda: not ledger.deposit("1000", {"id": ledger.business_id + 1}),
                   "the stopped server to refuse a deposit")
        assert server.stop(timeout=10) == 0
    finally:
        with contextlib.suppress(Exception):
            server.kill()

    # -- starting while it is down: one clear line, no traceback --------------------------------
    starting = ServerProcess(tmp_path / "data", config=config_path, extra=["--storage", "mysql"])
    starting.log_path = tmp_path / "start-while-down.log"
    with pytest.raises(RuntimeError):
        starting.start()
    output = starting.log()
    assert "Traceback" not in output, output
    assert len([line for line in output.splitlines() if "cannot start" in line]) == 1, output

    # -- back again: a restart holds exactly the acknowledged operations -----------------------
    log_db.up()
    server.start()
    try:
        assert answered_balance(server) == ledger.balance()
        acked_ids = [bid for bid, _ in ledger.acked]
        assert history_ids(server, len(acked_ids)) == acked_ids
    finally:
        assert server.stop(timeout=30) == 0
    assert logged_business_ids(MysqlEngineStore(log_cfg)) == acked_ids


@pytest.mark.mysql
def test_timed_out_commit_is_refused_even_if_it_lands_later(
        tmp_path: Path, mysql_config: Callable[..., MysqlConfig]) -> None:
    """A commit held up past the commit timeout (another session holds a lock on the log's day
    table) is answered code 3; when the lock goes, the held INSERT may still land, and the
    recovery deletes it again: it never takes effect, not even in the history."""
    log_cfg = mysql_config("test_slow_oplog")
    config = default_matchengine_data()
    config.update(db_log=_db(log_cfg), db_history=_db(mysql_config("test_slow_oplog_hist")))
    config_path = tmp_path / "matchengine.json"
    config_path.write_text(json.dumps(config))
    server = ServerProcess(tmp_path / "data", config=config_path,
                           extra=["--storage", "mysql"]).start()
    ledger = Ledger(server)
    try:
        for _ in range(3):
            assert ledger.deposit("10", {"id": ledger.business_id + 1})
        locker = mysql_db.connect(log_cfg)
        try:
            with locker.cursor() as cur:
                cur.execute("SHOW TABLES LIKE 'operlog\\_2%'")
                (table,), = cur.fetchall()
                cur.execute(f"LOCK TABLES `{table}` READ")
            assert not ledger.deposit("1000", {"id": ledger.business_id + 1})
            assert not ledger.deposit("1000", {"id": ledger.business_id + 1})
            # the engine is rebuilt from the durable log (readable under a READ lock)
            assert wait_until(lambda: answered_balance(server), "reads to be answered") == \
                ledger.balance()
            with locker.cursor() as cur:
                cur.execute("UNLOCK TABLES")
        finally:
            locker.close()
        wait_until(lambda: ledger.deposit("2", {"id": ledger.business_id + 1}),
                   "writes to be accepted again")
        assert answered_balance(server) == ledger.balance()
        acked_ids = [bid for bid, _ in ledger.acked]
        assert history_ids(server, len(acked_ids)) == acked_ids
    finally:
        assert server.stop(timeout=30) == 0
    assert logged_business_ids(MysqlEngineStore(log_cfg)) == acked_ids
    server.start()
    try:
        assert answered_balance(server) == ledger.balance()
    finally:
        assert server.stop(timeout=30) == 0
