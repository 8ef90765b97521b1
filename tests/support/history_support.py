"""Helpers shared by the history / readhistory tests (no tests here).

* :class:`HistoryBackend`: one history database location per ``new_location()`` on SQLite or on
  the real MariaDB (fixture ``history_backend`` in conftest.py), with stores, readers and a raw
  dump of every stored row.
* :func:`run_session`: run write requests through a real Engine + MatchEngineMethods and collect
  each successful operation's events, numbered like the operation log does.
* Test doubles for stores (failing, losing the commit outcome).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange_server.common.config import MysqlConfig, load_matchengine, read_json
from exchange_server.common.errors import RpcError
from exchange_server.history.rows import KINDS, SHARDS, TABLES
from exchange_server.history.store import HistoryStore, HistoryStoreError, Operation, StoreRows
from exchange_server.history.store_mysql import MysqlHistoryStore
from exchange_server.history.store_sqlite import FILENAME, SqliteHistoryStore
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import Event
from exchange_server.matchengine.methods import MatchEngineMethods
from exchange_server.readhistory.reader import (
    HistoryReader,
    MysqlHistoryReader,
    SqliteHistoryReader,
)
from exchange_server.storage import mysql as mysql_db
from tests.support.server import SHARED

GOLDEN = SHARED / "golden"
TRANSCRIPT = GOLDEN / "transcript-1.jsonl"

#: A small market set: BTC/BCH as in the original's sample config.
SMALL_CONFIG: dict[str, Any] = {
    "assets": [
        {"name": "BCH", "prec_save": 20, "prec_show": 8},
        {"name": "BTC", "prec_save": 12, "prec_show": 8},
    ],
    "markets": [
        {"name": "BTCBCH", "stock": {"name": "BTC", "prec": 8},
         "money": {"name": "BCH", "prec": 8}, "min_amount": "0.001"},
    ],
}

Ops = list[tuple[int, list[Event]]]


def small_methods() -> MatchEngineMethods:
    return MatchEngineMethods(Engine.from_config(load_matchengine(SMALL_CONFIG, embedded=True)))


def golden_methods() -> MatchEngineMethods:
    config = load_matchengine(read_json(GOLDEN / "matchengine.json"), embedded=True)
    return MatchEngineMethods(Engine.from_config(config))


def run_session(methods: MatchEngineMethods, requests: Sequence[tuple[float, str, list[Any]]],
                first_id: int = 1) -> Ops:
    """Run ``(time, method, params)`` write requests; failed ones are skipped like the service
    does (no operation id, no events).  Returns ``[(oper_id, events)]``."""
    ops: Ops = []
    oper_id = first_id - 1
    engine = methods.engine
    for now, method, params in requests:
        write = methods.writes[method]
        try:
            write.run(now, params)
        except RpcError:
            engine.take_events()
            continue
        oper_id += 1
        ops.append((oper_id, engine.take_events()))
    return ops


def golden_steps() -> list[dict[str, Any]]:
    return [json.loads(line) for line in TRANSCRIPT.read_text().splitlines() if line.strip()]


def golden_ops(clock_start: float = 1795617814.0) -> Ops:
    """The transcript's matchengine write requests, in order, through a fresh engine."""
    methods = golden_methods()
    requests = []
    now = clock_start
    for step in golden_steps():
        request = step.get("request")
        if not isinstance(request, dict) or request.get("method") not in methods.writes:
            continue
        if not isinstance(request.get("params"), list):
            continue
        now += 0.001
        requests.append((now, request["method"], request["params"]))
    return run_session(methods, requests)


# -- the scripted session of test_history_rows / test_history_writer / test_readhistory ----------

T0 = 1_700_000_000.0


def scripted_requests() -> list[tuple[float, str, list[Any]]]:
    """Deposits, a crossing limit bid, a cancel of a partly filled ask, an unfilled order
    cancelled, a market ask, a withdrawal (op i runs at T0 + i)."""
    reqs: list[tuple[str, list[Any]]] = [
        ("balance.update", [1, "BTC", "deposit", 1, "10", {"k": "v"}]),                    # 1
        ("balance.update", [2, "BCH", "deposit", 2, "1000", {}]),                          # 2
        ("balance.update", [3, "BCH", "deposit", 3, "500", {}]),                           # 3
        ("order.put_limit", [1, "BTCBCH", 1, "2", "100", "0.002", "0.001", "s1"]),         # 4
        ("order.put_limit", [2, "BTCBCH", 2, "1.5", "101", "0.002", "0.001", "s2"]),       # 5
        ("order.cancel", [1, "BTCBCH", 1]),                                                # 6
        ("order.put_limit", [3, "BTCBCH", 2, "1", "90", "0.002", "0.001", "s3"]),          # 7
        ("order.put_limit", [3, "BTCBCH", 2, "0.5", "80", "0.002", "0.001", "s3"]),        # 8
        ("order.cancel", [3, "BTCBCH", 4]),                                                # 9
        ("order.put_market", [1, "BTCBCH", 1, "0.4", "0.002", "m1"]),                      # 10
        ("balance.update", [2, "BCH", "withdraw", 4, "-50.123456789", {}]),                # 11
    ]
    return [(T0 + i, m, p) for i, (m, p) in enumerate(reqs, start=1)]


def scripted_ops() -> Ops:
    return run_session(small_methods(), scripted_requests())


# -- backends -------------------------------------------------------------------------------------


@dataclass
class HistoryBackend:
    """History databases on one backend ("sqlite" or "mysql")."""

    kind: str
    tmp_path: Path
    make_mysql_config: Any = None
    stores: list[HistoryStore] = field(default_factory=list)
    readers: list[HistoryReader] = field(default_factory=list)
    _count: int = 0

    def new_location(self) -> Any:
        """A new, empty database: a directory (SQLite) or a MysqlConfig (MySQL)."""
        self._count += 1
        if self.kind == "sqlite":
            path = self.tmp_path / f"history{self._count}"
            path.mkdir()
            return path
        return self.make_mysql_config("test_history")

    def store(self, location: Any) -> HistoryStore:
        store: HistoryStore
        if self.kind == "sqlite":
            store = SqliteHistoryStore(location)
        else:
            store = MysqlHistoryStore(location)
        self.stores.append(store)
        return store

    def reader(self, location: Any) -> HistoryReader:
        reader: HistoryReader
        if self.kind == "sqlite":
            reader = SqliteHistoryReader(location)
        else:
            reader = MysqlHistoryReader(location)
        self.readers.append(reader)
        return reader

    def query(self, location: Any, sql: str) -> list[tuple[Any, ...]]:
        return self.query_many(location, [sql])[0]

    def query_many(self, location: Any, sqls: list[str]) -> list[list[tuple[Any, ...]]]:
        """Run SELECTs on one connection."""
        if self.kind == "sqlite":
            import sqlite3

            conn = sqlite3.connect(Path(location) / FILENAME)
            try:
                return [[tuple(r) for r in conn.execute(sql).fetchall()] for sql in sqls]
            finally:
                conn.close()
        conn2 = mysql_db.connect(location)
        try:
            out = []
            with conn2.cursor() as cur:
                for sql in sqls:
                    cur.execute(sql)
                    out.append([tuple(r) for r in cur.fetchall()])
            conn2.commit()
            return out
        finally:
            conn2.close()

    def _tables(self, kind: str) -> list[str]:
        if self.kind == "sqlite":
            return [kind]
        return [f"{kind}_{shard}" for shard in range(SHARDS)]

    def dump(self, location: Any) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored row of every table, as text, in storage order (SQLite: id; MySQL: shard
        then id), without the AUTO_INCREMENT ids."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for kind in KINDS:
            cols = ", ".join(f"`{name}`" for name, _ in TABLES[kind])
            sqls = [f"SELECT {cols} FROM `{t}` ORDER BY `id`" for t in self._tables(kind)]
            rows = [r for part in self.query_many(location, sqls) for r in part]
            scales = [_scale(sql_type) for _, sql_type in TABLES[kind]]
            out[kind] = [tuple(_text(v, sc) for v, sc in zip(r, scales, strict=True)) for r in rows]
        return out

    def ids(self, location: Any, kind: str) -> list[int]:
        """The AUTO_INCREMENT / order ids of one table (all shards), ascending."""
        sqls = [f"SELECT `id` FROM `{t}`" for t in self._tables(kind)]
        return sorted(r[0] for part in self.query_many(location, sqls) for r in part)

    def mark(self, location: Any) -> int:
        return int(self.query(location, "SELECT `oper_id` FROM `history_offset` WHERE `id` = 1")[0][0])

    def close(self) -> None:
        for store in self.stores:
            store.close()
        for reader in self.readers:
            reader.close()


def _scale(sql_type: str) -> int | None:
    match = re.match(r"DECIMAL\((\d+),(\d+)\)", sql_type)
    return int(match.group(2)) if match else None


def _text(value: Any, scale: int | None) -> Any:
    """A stored value as its DECIMAL column holds it: MySQL gives a Decimal at the scale, the
    SQLite store keeps the exact text that readers round the same way."""
    from decimal import ROUND_HALF_UP, Decimal

    if scale is None:
        return value
    return format(Decimal(value).quantize(Decimal(1).scaleb(-scale), ROUND_HALF_UP), "f")


def mysql_drop(cfg: MysqlConfig) -> None:
    conn = mysql_db.connect(cfg, database=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {mysql_db.quote_name(cfg.name)}")
        conn.commit()
    finally:
        conn.close()


# -- store doubles --------------------------------------------------------------------------------


class FlakyStore:
    """Fails the first ``failures`` writes (before touching the database)."""

    def __init__(self, inner: HistoryStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0
        self.lock = threading.Lock()

    def rows_of(self, events: list[Event]) -> StoreRows:
        return self.inner.rows_of(events)

    def open(self) -> None:
        self.inner.open()

    def read_mark(self) -> int:
        return self.inner.read_mark()

    def write(self, batch: Sequence[Operation]) -> int:
        with self.lock:
            self.attempts += 1
            if self.failures > 0:
                self.failures -= 1
                raise HistoryStoreError("injected failure")
        return self.inner.write(batch)

    def close(self) -> None:
        self.inner.close()


class LostCommitStore(FlakyStore):
    """Commits the first ``failures`` writes, then raises as if the connection dropped before
    the COMMIT's answer arrived."""

    def write(self, batch: Sequence[Operation]) -> int:
        written = self.inner.write(batch)
        with self.lock:
            self.attempts += 1
            if self.failures > 0:
                self.failures -= 1
                raise HistoryStoreError("connection lost after COMMIT")
        return written
