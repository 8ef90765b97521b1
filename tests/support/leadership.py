"""Stand-in matchengine metrics endpoints and leader_history rows for the leadership view
(test_status_leadership.py, test_status_page.py).

Why: the leadership gauges come from a matchengine with a standby (its ``leader`` block,
matchprocess/leader.py), which needs two matchengines, a lease and a takeover to show each
state; these endpoints serve what ``common.metrics.gauges("matchengine")`` exports, the
leadership gauges included (``status_support.LEADERSHIP_METRICS``), in the Prometheus text
format of prometheus_client, over real HTTP, in whatever state a test needs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exchange_server.common.config import MysqlConfig
from exchange_server.storage import mysql as mysql_db

#: a matchengine's samples besides the leadership gauges (what `status` judges by)
ENGINE = {"service_up": 1, "operations": 100, "operlog_durable_operation": 100,
          "operlog_commit_seconds_avg": 0.002, "last_slice_age_seconds": 10,
          "operations_since_slice": 5, "history_follower_lag": 0,
          "history_follower_lag_seconds": 0, "bus_lag": 0, "bus_lag_seconds": 0,
          "trades_total": 50, "orders_total": 80, "process_pid": 4242}


class _Samples(Collector):
    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, value in dict(self.values).items():
            family = GaugeMetricFamily(f"exchange_{name}", name, labels=["service"])
            family.add_metric(["matchengine"], value)
            yield family


class Exporter:
    """A metrics endpoint serving ``values`` (changeable between scrapes)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = dict(ENGINE)
        registry = CollectorRegistry()
        registry.register(_Samples(self.values))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set(self, **values: float) -> None:
        self.values.clear()
        self.values.update(ENGINE)
        self.values.update(values)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def exporter_pool() -> Iterator[Callable[[], Exporter]]:
    """A factory of exporters, all closed on exit (wrap it in a test module's fixture)."""
    made: list[Exporter] = []

    def make() -> Exporter:
        made.append(Exporter())
        return made[-1]

    try:
        yield make
    finally:
        for e in made:
            e.close()


def leader(epoch: int, changes: int = 1) -> dict[str, float]:
    return {"leader": 1, "leader_epoch": epoch, "standby_lag_operations": 0,
            "leader_changes": changes}


def standby(epoch: int, lag: int) -> dict[str, float]:
    return {"leader": 0, "leader_epoch": epoch, "standby_lag_operations": lag,
            "leader_changes": 1}




def create_leader_history(cfg: MysqlConfig, rows: list[tuple[int, str, str, float]]) -> None:
    """``leader_history`` as the leader lease makes it (matchprocess/leader.py), with rows
    (epoch, holder, previous, taken_at) of the lease ``matchengine``."""
    mysql_db.ensure_database(cfg)
    conn = mysql_db.connect(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE leader_history (epoch BIGINT UNSIGNED NOT NULL, "
                        "name VARCHAR(64) NOT NULL, holder VARCHAR(255) NOT NULL, "
                        "previous VARCHAR(255) NOT NULL, taken_at DOUBLE NOT NULL, "
                        "PRIMARY KEY (name, epoch))")
            cur.executemany("INSERT INTO leader_history (epoch, name, holder, previous, taken_at)"
                            " VALUES (%s, 'matchengine', %s, %s, %s)", rows)
        conn.commit()
    finally:
        conn.close()
