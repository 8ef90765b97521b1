"""Scrape every service's metrics endpoint and judge the exchange as a whole.

Why: the health of the exchange is spread over six processes (or one, embedded).  Their
``GET /metrics`` endpoints already carry everything (pids, uptimes, log ids, lags, slice age,
rates, connections), so one reader can rebuild the picture without any new protocol and
without depending on the matchengine's console.  :func:`collect` scrapes the targets in
parallel; :func:`build_status` turns the samples into one :class:`dict` (the ``--json``
output and the status page's data) and lists every threshold crossed; a non-empty list means
"unhealthy" (exit code 1 of ``exchange-server status``).

Targets: the embedded ``run``'s metrics port, any URLs, or the configs of a deployment (each
config's ``metrics.bind``): see :func:`targets_from_configs`.

Leadership (active/standby matchengines, issue 16): each matchengine that runs with a standby
(its ``leader`` block, matchprocess/leader.py) exports ``exchange_leader`` (1 active, 0 standby
or deposed), ``exchange_leader_epoch``, ``exchange_standby_lag_operations`` and
``exchange_leader_changes``, labelled ``service="matchengine"`` (``exchange_matchengine_leader``
and ``matchengine_leader`` and so on are read too).  A matchengine without them is "single" (no
standby configured) and judged as before.  The active's samples are the ones the engine block
and the consumer lags are computed from.  With a deployment's configs, the log database's
``leader_history`` table (epoch, holder, previous, taken_at) adds when each leader took over
(:func:`leader_history`; optional).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from exchange_server.common.config import ConfigError, MysqlConfig, read_json, read_mysql
from exchange_server.common.configread import Node
from exchange_server.rpc.addr import parse_sock_addr

log = logging.getLogger("exchange_server.status")

#: ``exchange-server run``'s metrics port is its HTTP port + this (as in the deploy kit).
EMBEDDED_METRICS_OFFSET = 20000
SCRAPE_TIMEOUT = 3.0


@dataclass
class Thresholds:
    """Beyond these the exchange is reported unhealthy (None: not judged)."""

    follower_lag: float | None = 10000
    follower_lag_seconds: float | None = 30
    bus_lag: float | None = 10000
    bus_lag_seconds: float | None = 30
    marketprice_lag: float | None = 10000
    marketprice_lag_seconds: float | None = 60
    accessws_lag: float | None = None
    commit_seconds: float | None = 0.5
    slice_age_seconds: float | None = 7500
    operations_since_slice: float | None = 5_000_000
    #: operations a standby matchengine may be behind the committed log
    standby_lag: float | None = 10000

    @classmethod
    def load(cls, path: str | Path) -> Thresholds:
        """A JSON object with some of the field names (unknown names are an error)."""
        data = read_json(str(path))
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of thresholds")
        known = {f.name for f in fields(cls)}
        result = cls()
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown threshold {key!r} (one of "
                                  f"{', '.join(sorted(known))})")
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"{path}: {key}: expected a non-negative number or null")
            setattr(result, key, value)
        return result


@dataclass
class Target:
    """One metrics endpoint: ``name`` is the instance (or ``embedded``)."""

    name: str
    url: str


@dataclass
class Scrape:
    target: Target
    #: family name -> label ``service`` (or "") -> value
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None


# -- finding the endpoints -------------------------------------------------------------------------


def embedded_target(host: str, port: int) -> Target:
    return Target("embedded", f"http://{host}:{port}/metrics")


def _metrics_url(config: Any, where: str) -> str | None:
    block = config.get("metrics") if isinstance(config, dict) else None
    if not isinstance(block, dict):
        return None
    binds = block.get("bind")
    binds = [binds] if isinstance(binds, str) else binds
    if not isinstance(binds, list) or not binds or not isinstance(binds[0], str):
        raise ConfigError(f"{where}: metrics.bind: expected tcp@ip:port")
    try:
        addr = parse_sock_addr(binds[0])
    except ValueError as e:
        raise ConfigError(f"{where}: metrics.bind: {e}") from None
    host = addr.host if addr.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{addr.port}/metrics"


def targets_from_configs(path: str | Path) -> tuple[list[Target], list[str]]:
    """Targets of a deployment: ``path`` is a deploy kit (``DIR/<instance>/conf/config.json``),
    a directory of configs (``<name>.json``) or one config.  Returns the targets and the
    instances whose config has no ``metrics`` block (they cannot be watched)."""
    root = Path(path)
    if root.is_file():
        files = [(root.stem, root)]
    elif root.is_dir():
        files = sorted((p.parent.parent.name, p) for p in root.glob("*/conf/config.json"))
        files = files or sorted((p.stem, p) for p in root.glob("*.json"))
    else:
        raise ConfigError(f"{path}: no such file or directory")
    if not files:
        raise ConfigError(f"{path}: no service configs found (DIR/*/conf/config.json or *.json)")
    targets: list[Target] = []
    unwatched: list[str] = []
    for name, file in files:
        url = _metrics_url(read_json(str(file)), str(file))
        if url is None:
            unwatched.append(name)
        else:
            targets.append(Target(name, url))
    return targets, unwatched


def log_database_from_configs(path: str | Path) -> MysqlConfig | None:
    """The matchengine's log database (``db_log``) of a deployment's configs, if one of them
    is a production matchengine's: where ``leader_history`` is read from."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(root.glob("*/conf/config.json")) or sorted(
        root.glob("*.json"))
    for file in files:
        data = read_json(str(file))
        if isinstance(data, dict) and isinstance(data.get("db_log"), dict):
            return read_mysql(Node(data["db_log"], f"{file}: db_log"))
    return None


def leader_history(cfg: MysqlConfig, limit: int = 10,
                   timeout: int = int(SCRAPE_TIMEOUT)) -> list[dict[str, Any]] | None:
    """The last ``limit`` leader changes, newest first (None when the table cannot be read:
    no standby configured yet, or the database is down; status says so without failing).
    MySQL's client is imported here: the embedded mode's status page never reads the table."""
    import pymysql.cursors

    from exchange_server.storage import mysql as mysql_db

    try:
        conn = mysql_db.connect(cfg, connect_timeout=timeout, read_timeout=timeout,
                                write_timeout=timeout)
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute("SELECT * FROM leader_history ORDER BY epoch DESC, taken_at DESC "
                            "LIMIT %s", (limit,))
                rows = cur.fetchall()
        finally:
            conn.close()
    except pymysql.MySQLError as e:
        log.info("leader_history not read: %s", e)
        return None
    return [_change(row) for row in rows]


def _change(row: dict[str, Any]) -> dict[str, Any]:
    change = {"epoch": int(row["epoch"]), "holder": str(row["holder"]),
              "taken_at": _seconds(row.get("taken_at"))}
    if row.get("previous") is not None:
        change["previous"] = str(row["previous"])
    return change


def _seconds(value: Any) -> float | None:
    """``taken_at`` as Unix seconds, whether stored as a number or a DATETIME."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)


# -- scraping --------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Our samples of a Prometheus text page (the parser is imported on the first page, not
    when a service starts)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("exchange_", "process_", "matchengine_")):
                values.setdefault(sample.name, {})[sample.labels.get("service", "")] = \
                    sample.value
    return values


def scrape(target: Target, timeout: float = SCRAPE_TIMEOUT) -> Scrape:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(target.url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
        return Scrape(target, parse_metrics(text))
    except (OSError, ValueError, urllib.error.URLError) as e:
        return Scrape(target, error=str(getattr(e, "reason", e)))


def collect(targets: list[Target], timeout: float = SCRAPE_TIMEOUT) -> list[Scrape]:
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        return list(pool.map(lambda t: scrape(t, timeout), targets))


# -- judging ---------------------------------------------------------------------------------------


def _service_of(name: str) -> str:
    base, _, index = name.rpartition("-")
    return base if base and index.isdigit() else name


class _View:
    """Samples of every scrape, looked up by family and service."""

    def __init__(self, scrapes: list[Scrape]) -> None:
        self.scrapes = scrapes

    def get(self, name: str, service: str) -> float | None:
        for s in self.scrapes:
            value = s.values.get(f"exchange_{name}", {}).get(service)
            if value is not None:
                return value
        return None

    def total(self, name: str, service: str) -> float | None:
        found = [v for s in self.scrapes
                 if (v := s.values.get(f"exchange_{name}", {}).get(service)) is not None]
        return sum(found) if found else None


def _services(scrapes: list[Scrape], unwatched: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for s in scrapes:
        up_services = sorted(s.values.get("exchange_service_up", {}))
        pids = s.values.get("exchange_process_pid", {})
        uptimes = s.values.get("exchange_process_uptime_seconds", {})
        rows.append({
            "name": s.target.name, "url": s.target.url, "up": s.error is None,
            "services": up_services if s.error is None else [_service_of(s.target.name)],
            "pid": int(next(iter(pids.values()))) if pids else None,
            "uptime_seconds": round(next(iter(uptimes.values())), 1) if uptimes else None,
            "connections": sum(s.values.get("exchange_connections", {}).values())
            if "exchange_connections" in s.values else None,
            "error": s.error,
        })
    for name in unwatched:
        rows.append({"name": name, "url": None, "up": None, "services": [_service_of(name)],
                     "pid": None, "uptime_seconds": None, "connections": None,
                     "error": "no metrics block in its config: not watched"})
    return rows


# -- leadership (active/standby matchengines) --------------------------------------------------------


def _leader_gauge(s: Scrape, name: str) -> float | None:
    """A leadership gauge of a scrape, under any of the names the contract allows."""
    value = s.values.get(f"exchange_{name}", {}).get("matchengine")
    if value is not None:
        return value
    for family in (f"exchange_matchengine_{name}", f"matchengine_{name}",
                   f"exchange_matchengine_{name}_total", f"matchengine_{name}_total"):
        values = s.values.get(family)
        if values:
            return values.get("matchengine", next(iter(values.values())))
    return None


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _engine_row(s: Scrape) -> dict[str, Any]:
    leader = _leader_gauge(s, "leader")
    role = "single" if leader is None else "active" if leader >= 1 else "standby"
    return {
        "name": s.target.name, "url": s.target.url, "role": role, "deposed": False,
        "epoch": _int(_leader_gauge(s, "leader_epoch")),
        "standby_lag": _int(_leader_gauge(s, "standby_lag_operations"))
        if role == "standby" else None,
        "leader_changes": _int(_leader_gauge(s, "leader_changes")),
        "operation_id": _int(s.values.get("exchange_operations", {}).get("matchengine")),
    }


def _down_row(s: Scrape) -> dict[str, Any]:
    return {"name": s.target.name, "url": s.target.url, "role": "down", "deposed": False,
            "epoch": None, "standby_lag": None, "leader_changes": None, "operation_id": None}


def _is_engine(s: Scrape) -> bool:
    return s.error is None and "matchengine" in s.values.get("exchange_service_up", {})


def leadership(scrapes: list[Scrape],
               history: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], Scrape | None]:
    """Which matchengine is active, each one's role, epoch and standby lag, the last leader
    change; and the active's scrape (the one the engine block is read from).  Of several
    claiming to be active, the highest epoch is the leader; the others are deposed (their
    lease was taken over while they could not tell, and the log refuses their writes)."""
    rows: list[dict[str, Any]] = []
    by_row: list[Scrape] = []
    for s in scrapes:
        if _is_engine(s):
            rows.append(_engine_row(s))
            by_row.append(s)
        elif s.error is not None and s.target.name.startswith("matchengine"):
            rows.append(_down_row(s))
            by_row.append(s)
    claimants = [i for i, r in enumerate(rows) if r["role"] in ("active", "single")]
    leader = max(claimants, key=lambda i: rows[i]["epoch"] if rows[i]["epoch"] is not None
                 else -1) if claimants else None
    for i in claimants:
        if i != leader and leader is not None and rows[i]["role"] == "active" and (
                rows[i]["epoch"] or 0) < (rows[leader]["epoch"] or 0):
            rows[i]["deposed"] = True
    failover = any(r["role"] in ("active", "standby") for r in rows)
    view = {
        "mode": "failover" if failover else "single" if rows else None,
        "active": rows[leader]["name"] if leader is not None else None,
        "epoch": rows[leader]["epoch"] if leader is not None else None,
        "matchengines": rows,
        "history": history,
        "last_change": history[0] if history else None,
    }
    if history and len(history) > 1 and "previous" not in history[0]:
        view["last_change"] = dict(history[0], previous=history[1]["holder"])
    return view, by_row[leader] if leader is not None else None


def leadership_problems(view: dict[str, Any], t: Thresholds) -> list[str]:
    rows = view["matchengines"]
    found: list[str] = []
    actives = [r for r in rows if r["role"] in ("active", "single")]
    if view["mode"] == "failover" and not actives:
        standbys = ", ".join(r["name"] for r in rows if r["role"] == "standby") or "none up"
        found.append(f"no matchengine is active (standbys: {standbys})")
    leader = next((r for r in rows if r["name"] == view["active"]), None)
    for r in actives:
        if r is leader or leader is None:
            continue
        if r["deposed"]:
            found.append(f"{r['name']} still acts as the active matchengine with epoch "
                         f"{r['epoch']}, but epoch {leader['epoch']} is held by "
                         f"{leader['name']}: it is deposed and does not know it (stop it)")
        else:
            found.append(f"{r['name']} and {leader['name']} both act as the active matchengine "
                         f"(epoch {_n(r['epoch'])} and {_n(leader['epoch'])})")
    for r in rows:
        if r["role"] == "standby" and _over(r["standby_lag"], t.standby_lag):
            found.append(f"standby {r['name']} is {r['standby_lag']} operations behind the log "
                         f"(> {t.standby_lag})")
    return found


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _lag(ops: float | None, seconds: float | None) -> dict[str, float | None]:
    return {"operations": ops, "seconds": None if seconds is None else round(seconds, 1)}


def _consumer_lag(view: _View, produced: float | None, service: str, what: str,
                  now: float) -> dict[str, float | None] | None:
    last_id = view.get(f"{service}_last_{what}_id", service)
    if last_id is None or produced is None:
        return None
    if last_id == 0 and service == "accessws":
        return _lag(None, None)  # nothing seen since it started: unknown
    behind = max(0.0, produced - last_id)
    last_time = view.get(f"{service}_last_{what}_time", service) or 0.0
    seconds = (now - last_time if last_time else None) if behind > 0 else 0.0
    return _lag(behind, seconds)


def build_status(scrapes: list[Scrape], thresholds: Thresholds,
                 unwatched: list[str] | None = None, now: float | None = None,
                 history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The whole exchange as one JSON-able dict, ``problems`` listing what is wrong
    (``history``: :func:`leader_history`'s rows, when read)."""
    now = time.time() if now is None else now
    leaders, active = leadership(scrapes, history)
    # the active's samples first: the engine block and the lags are the active's
    view = _View(sorted(scrapes, key=lambda s: s is not active))
    me = "matchengine"
    engine = None
    if view.get("service_up", me) is not None:
        engine = {
            "operation_id": view.get("operations", me),
            "durable_operation": view.get("operlog_durable_operation", me),
            "commit_lag": view.get("operlog_commit_lag", me),
            "commit_seconds_avg": view.get("operlog_commit_seconds_avg", me),
            "open_orders": view.get("open_orders", me),
            "orders_per_second": view.get("orders_per_second", me),
            "trades_per_second": view.get("trades_per_second", me),
            "last_slice_time": view.get("last_slice_time", me),
            "last_slice_age_seconds": view.get("last_slice_age_seconds", me),
            "operations_since_slice": view.get("operations_since_slice", me),
        }
    lags = {
        "history_follower": _lag(view.get("history_follower_lag", me),
                                 view.get("history_follower_lag_seconds", me)),
        "bus": _lag(view.get("bus_lag", me), view.get("bus_lag_seconds", me)),
        "marketprice": _consumer_lag(view, view.get("trades_total", me), "marketprice",
                                     "deal", now),
        "accessws": _consumer_lag(view, view.get("orders_total", me), "accessws", "order", now),
    }
    status: dict[str, Any] = {
        "time": round(now, 3),
        "services": _services(scrapes, unwatched or []),
        "matchengine": engine,
        "leadership": leaders,
        "lag": lags,
        "connections": {gw: view.total("connections", gw) for gw in ("accesshttp", "accessws")},
        "thresholds": asdict(thresholds),
    }
    status["problems"] = problems(status, thresholds)
    status["healthy"] = not status["problems"]
    return status


def _over(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value > limit


def problems(status: dict[str, Any], t: Thresholds) -> list[str]:
    found = [f"{row['name']} is down ({row['url']}: {row['error']})"
             for row in status["services"] if row["up"] is False]
    engine = status["matchengine"]
    if engine is None:
        if not found:  # (a target that is down may be the matchengine)
            found.append("no matchengine among the endpoints read")
    else:
        if _over(engine["commit_seconds_avg"], t.commit_seconds):
            found.append(f"operation log commits take {engine['commit_seconds_avg']:.3f} s "
                         f"(> {t.commit_seconds})")
        if _over(engine["last_slice_age_seconds"], t.slice_age_seconds):
            found.append(f"no slice for {engine['last_slice_age_seconds']:.0f} s "
                         f"(> {t.slice_age_seconds})")
        if _over(engine["operations_since_slice"], t.operations_since_slice):
            found.append(f"a restart would replay {engine['operations_since_slice']:.0f} "
                         f"operations (> {t.operations_since_slice})")
    if "leadership" in status:
        found += leadership_problems(status["leadership"], t)
    limits = {"history_follower": (t.follower_lag, t.follower_lag_seconds),
              "bus": (t.bus_lag, t.bus_lag_seconds),
              "marketprice": (t.marketprice_lag, t.marketprice_lag_seconds),
              "accessws": (t.accessws_lag, None)}
    for name, (ops_limit, seconds_limit) in limits.items():
        lag = status["lag"][name]
        if lag is None:
            continue
        if _over(lag["operations"], ops_limit):
            found.append(f"{name} is {lag['operations']:.0f} behind (> {ops_limit})")
        if _over(lag["seconds"], seconds_limit):
            found.append(f"{name} is {lag['seconds']:.0f} s behind (> {seconds_limit})")
    return found


def status_json(status: dict[str, Any]) -> str:
    return json.dumps(status, indent=2, sort_keys=False)
