"""SIGKILL in the middle of a concurrent order load loses nothing that was acknowledged.

A real server process takes orders, cancels and balance updates from 8 concurrent keep-alive
clients and is killed with SIGKILL mid-load.  After a restart:
* every operation that got a reply is in the operation log, and replaying the log in a fresh
  engine gives, for that operation, exactly the reply the client got (ids, amounts, times);
* the restarted server's balances and order books equal that replay's;
* the history tables hold exactly one row per logged event: the same rows, in the same order,
  as a history database written from the replay's events.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common.config import MysqlConfig, default_matchengine_data, load_matchengine
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.methods import MatchEngineMethods, present
from exchange_server.matchengine.store import EngineStore
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from tests.integration.test_history_writer import reference_dump
from tests.support.history_support import HistoryBackend
from tests.support.server import ServerProcess
from tests.support.waiting import wait_until

USERS = list(range(1, 9))
Acked = tuple[str, list[Any], Any]


class Worker(threading.Thread):
    def __init__(self, port: int, seed: int, user: int, acked: list[Acked]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.rng = random.Random(seed)
        self.user = user
        self.acked = acked
        self.orders: list[int] = []
        self.business_id = seed * 1_000_000

    def run(self) -> None:
        # a deadline only (a reply held up on a loaded machine must not end the load)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while True:
            method, params = self.next_request()
            try:
                conn.request("POST", "/", json.dumps({"method": method, "params": params, "id": 1}))
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                return
            if resp.status != 200:
                continue
            reply = json.loads(body)
            if reply["error"] is None:
                self.acked.append((method, params, reply["result"]))
                if method == "order.put_limit" and reply["result"]["left"] not in ("0", "0e-8"):
                    self.orders.append(reply["result"]["id"])

    def next_request(self) -> tuple[str, list[Any]]:
        r = self.rng.random()
        side = self.rng.choice([1, 2])
        if r < 0.65:
            price = f"{self.rng.randint(990, 1010) / 10:.1f}"
            amount = f"{self.rng.randint(1, 200) / 100:.2f}"
            return "order.put_limit", [self.user, "BTCBCH", side, amount, price, "0.002", "0.001",
                                       f"w{self.user}"]
        if r < 0.72:
            amount = "0.05" if side == 1 else "5"
            return "order.put_market", [self.user, "BTCBCH", side, amount, "0.002", "m"]
        if r < 0.9 and self.orders:
            victim = self.orders.pop(self.rng.randrange(len(self.orders)))
            return "order.cancel", [self.user, "BTCBCH", victim]
        self.business_id += 1
        return "balance.update", [self.user, "BTC", "deposit", self.business_id, "0.01", {"w": 1}]


def state_of(server: ServerProcess) -> dict[str, Any]:
    balances = {u: server.call("balance.query", u) for u in USERS}
    books = {}
    for side in (1, 2):
        orders: list[Any] = []
        while True:
            page = server.call("order.book", "BTCBCH", side, len(orders), 101)
            orders += page["orders"]
            if len(orders) >= page["total"]:
                break
        books[side] = orders
    return json.loads(json.dumps({"balances": balances, "books": books}))


Replayed = tuple[MatchEngineMethods, list[tuple[str, list[Any], Any]], list[tuple[int, list[Any]]]]


def replay(store: EngineStore) -> Replayed:
    engine = Engine.from_config(load_matchengine(default_matchengine_data(), embedded=True))
    methods = MatchEngineMethods(engine)
    results = []
    events = []
    for record in store.read_operlog(0):
        write = methods.by_log_name[record.method]
        results.append((write.name, record.params, present(write.run(record.time, record.params))))
        events.append((record.id, engine.take_events()))
    return methods, results, events


def replay_state(methods: MatchEngineMethods) -> dict[str, Any]:
    balances = {u: methods.balance_query([u]) for u in USERS}
    books = {}
    for side in (1, 2):
        orders: list[Any] = []
        total = methods.order_book(["BTCBCH", side, 0, 0])["total"]
        while len(orders) < total:
            orders += methods.order_book(["BTCBCH", side, len(orders), 101])["orders"]
        books[side] = orders
    return json.loads(json.dumps({"balances": balances, "books": books}))


@dataclass
class Loaded:
    """A server (SQLite or MariaDB log) under eight concurrent clients, as the crash tests
    start it: ``acked`` collects every acknowledged reply."""

    server: ServerProcess
    data: Path
    config_path: Path
    mysql: MysqlConfig | None
    history: Any
    acked: list[Acked]
    workers: list[Worker]


def start_under_load(tmp_path: Path, storage: str, request: pytest.FixtureRequest,
                     config: dict[str, Any], prefix: str) -> Loaded:
    """Start ``exchange-server run`` with ``config`` on ``storage`` (MariaDB databases named
    ``<prefix>_log`` and ``<prefix>_history``), fund the users and start the clients."""
    mysql: MysqlConfig | None = None
    history: Any = tmp_path / "data"
    if storage == "mysql":
        make_mysql = request.getfixturevalue("mysql_config")
        mysql = make_mysql(f"{prefix}_log")
        history = make_mysql(f"{prefix}_history")
        for key, cfg in (("db_log", mysql), ("db_history", history)):
            config[key] = {"host": cfg.host, "port": cfg.port, "user": cfg.user,
                           "pass": cfg.password, "name": cfg.name}
    config_path = tmp_path / "matchengine.json"
    config_path.write_text(json.dumps(config))
    data = tmp_path / "data"
    server = ServerProcess(data, config=config_path, extra=["--storage", storage]).start()
    for u in USERS:
        server.setup_call("balance.update", u, "BTC", "deposit", u, "1000", {})
        server.setup_call("balance.update", u, "BCH", "deposit", 100 + u, "1000000", {})
    acked: list[Acked] = []
    workers = [Worker(server.port, i + 1, USERS[i], acked) for i in range(8)]
    for w in workers:
        w.start()
    return Loaded(server, data, config_path, mysql, history, acked, workers)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def test_sigkill_during_load(tmp_path: Path, storage: str, request: pytest.FixtureRequest) -> None:
    config = default_matchengine_data()
    config["slice_interval"] = 86400
    loaded = start_under_load(tmp_path, storage, request, config, "test_crash")
    server, data, config_path, acked, workers = (
        loaded.server, loaded.data, loaded.config_path, loaded.acked, loaded.workers)
    mysql, history_location = loaded.mysql, loaded.history
    make_mysql = request.getfixturevalue("mysql_config") if storage == "mysql" else None
    wait_until(lambda: len(acked) > 300, 120, 0.05, "a sustained load")
    server.kill()
    for w in workers:
        w.join(60)
    assert len(acked) > 200, f"load too small to mean anything: {len(acked)} replies"

    restarted = ServerProcess(data, config=config_path, extra=["--storage", storage]).start()
    live = state_of(restarted)
    assert restarted.stop() == 0

    store: EngineStore = SqliteEngineStore(data) if mysql is None else MysqlEngineStore(mysql)
    store.open()
    try:
        methods, results, events = replay(store)
    finally:
        store.close()

    by_order_id = {r["id"]: r for m, _, r in results if m in ("order.put_limit", "order.put_market")}
    cancels = {(m, json.dumps(p)): r for m, p, r in results if m == "order.cancel"}
    updates = {p[3] for m, p, _ in results if m == "balance.update"}
    for method, params, result in acked:
        if method in ("order.put_limit", "order.put_market"):
            assert by_order_id.get(result["id"]) == result
        elif method == "order.cancel":
            assert cancels.get((method, json.dumps(params))) == result
        else:
            assert params[3] in updates
    assert live == replay_state(methods)
    # operations that were logged but whose reply never arrived are allowed; losing is not
    assert len(results) >= len(acked) + 2 * len(USERS)
    with pytest.raises(RpcError):
        methods.balance_update(time.time(), [1, "BTC", "deposit", 1, "1000", {}])

    backend = HistoryBackend(storage, tmp_path, make_mysql)
    try:
        assert backend.dump(history_location) == reference_dump(backend, events)
        assert backend.mark(history_location) == len(results)
    finally:
        backend.close()
