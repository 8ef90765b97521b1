"""The history database goes down during trading (a real MariaDB instance, stopped and started).

Matching goes on while the backlog is under its bound; past it, writes are refused with code 3
"service unavailable" (reads still answer); when the database is back the backlog drains,
writes are accepted again, and the history holds exactly the rows of every logged operation.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import MysqlConfig, default_matchengine_data
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from tests.integration.test_crash import replay
from tests.integration.test_history_writer import reference_dump
from tests.support.history_support import HistoryBackend
from tests.support.server import GATEWAY_TIMEOUT, REPO, CallError, ServerProcess, free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.slow]


class OutageDatabase:
    """A MariaDB of its own, started and stopped with scripts/services.sh."""

    def __init__(self, state_dir: Path) -> None:
        self.port = free_port()
        self.env = dict(os.environ, EXCHANGE_SERVICES_DIR=str(state_dir),
                        EXCHANGE_MYSQL_PORT=str(self.port))

    def _services(self, command: str) -> None:
        result = subprocess.run(["bash", "scripts/services.sh", command, "mariadb"], cwd=REPO,
                                env=self.env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr

    def up(self) -> None:
        self._services("up")

    def down(self) -> None:
        self._services("down")

    def config(self, name: str) -> MysqlConfig:
        return MysqlConfig(host="127.0.0.1", port=self.port, user="exchange", password="exchange",
                           name=name)


@pytest.fixture
def outage_db(tmp_path: Path) -> Iterator[OutageDatabase]:
    db = OutageDatabase(tmp_path / "outage-services")
    db.up()
    yield db
    db.down()


def _db(cfg: MysqlConfig) -> dict[str, Any]:
    return {"host": cfg.host, "port": cfg.port, "user": cfg.user, "pass": cfg.password,
            "name": cfg.name}


def test_history_database_outage(tmp_path: Path, outage_db: OutageDatabase,
                                 mysql_config: Any) -> None:
    log_cfg = mysql_config("test_outage_log")
    history_cfg = outage_db.config("test_outage_history")
    config = default_matchengine_data()
    # commit_timeout: the refusals under test are the history backlog's; a log commit slowed
    # past the default 0.7 s by a loaded machine would refuse with the same code 3
    config.update(db_log=_db(log_cfg), db_history=_db(history_cfg), history_max_pending=400,
                  commit_timeout=30.0)
    config_path = tmp_path / "matchengine.json"
    config_path.write_text(json.dumps(config))
    server = ServerProcess(tmp_path / "data", config=config_path,
                           extra=["--storage", "mysql"]).start()
    try:
        server.setup_call("balance.update", 1, "BTC", "deposit", 1, "1000", {})
        server.setup_call("balance.update", 2, "BCH", "deposit", 2, "1000000", {})

        def trade() -> None:
            server.call("order.put_limit", 1, "BTCBCH", 1, "0.1", "100", "0.002", "0.001", "t")
            server.call("order.put_limit", 2, "BTCBCH", 2, "0.1", "100", "0.002", "0.001", "t")

        trade()

        def history_arrived() -> bool:
            try:
                return bool(server.call("balance.history", 1, "BTC", "", 0, 0, 0, 10)["records"])
            except CallError as e:  # a query slowed past the gateway's 1 s by a loaded machine
                if e.status != GATEWAY_TIMEOUT:
                    raise
                return False

        wait_until(history_arrived, 120, 0.1, "history of the first trade")

        outage_db.down()
        accepted = 0
        refused = None
        for _ in range(200):
            try:
                trade()
                accepted += 1
            except CallError as e:
                if e.status == GATEWAY_TIMEOUT:  # a commit slowed past the gateway's 1 s: load,
                    continue  # neither an acceptance nor the refusal under test
                refused = e.code
                break
        assert accepted > 0, "matching must go on while the backlog is under its bound"
        assert refused == 3, "writes must be refused with service unavailable once the backlog is full"
        assert server.call("balance.query", 1, "BTC")["BTC"]["freeze"] in ("0", "0.1")  # reads answer
        # readhistory cannot reach its database either: internal error
        with pytest.raises(CallError) as e:
            server.call("balance.history", 1, "BTC", "", 0, 0, 0, 10)
        assert e.value.code == 2

        outage_db.up()

        def traded() -> bool:
            try:
                trade()
            except CallError as e:
                # refused until the backlog drains (or a 504 of a loaded machine), nothing else
                assert e.code == 3 or e.status == GATEWAY_TIMEOUT, (e.status, e.error)
                return False
            return True

        wait_until(traded, 180, 0.5, "writes accepted again once the database is back")
        stopped = server.stop()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
    assert stopped == 0

    store = MysqlEngineStore(log_cfg)
    store.open()
    try:
        _, results, events = replay(store)
    finally:
        store.close()
    backend = HistoryBackend("mysql", tmp_path, mysql_config)
    try:
        assert backend.dump(history_cfg) == reference_dump(backend, events)
        assert backend.mark(history_cfg) == len(results)
    finally:
        backend.close()
