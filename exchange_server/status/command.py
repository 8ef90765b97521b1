"""``exchange-server status``: the whole exchange in one view, and its health as an exit code.

Why a command: cron jobs, monitoring agents and people at a shell need one answer to "is the
exchange healthy?" without Prometheus.  Exit code 0: every endpoint answered and nothing is
beyond its threshold; 1: something is down or lagging (the lines under "problems" say what);
2: bad usage (unreadable configs or threshold file).

Where it looks (docs/operations.md, "Status and health"):

* ``--url URL`` (repeatable): these metrics endpoints;
* ``-c PATH``: a deployment: the deploy kit's directory (``DIR/<instance>/conf/config.json``),
  a directory of service configs (``*.json``) or one config; each config's ``metrics.bind``;
* otherwise the embedded ``exchange-server run`` on ``--host`` at ``--metrics-port`` (default:
  its default, HTTP port 8080 + 20000).

With ``-c``, the matchengine's config also gives the log database, whose ``leader_history``
(active/standby matchengines) says when the current leader took over; without it, or when the
table cannot be read, the leadership comes from the metrics alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import fields
from typing import Any

from exchange_server.common.config import ConfigError, MysqlConfig
from exchange_server.status.collect import (
    EMBEDDED_METRICS_OFFSET,
    SCRAPE_TIMEOUT,
    Target,
    Thresholds,
    build_status,
    collect,
    embedded_target,
    leader_history,
    log_database_from_configs,
    status_json,
    targets_from_configs,
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "status", help="one view of the whole exchange from the services' metrics endpoints; "
        "exit code 1 when something is down or lagging",
        description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--config", "-c", metavar="PATH",
                   help="deploy kit directory, directory of service configs, or one config")
    p.add_argument("--url", action="append", metavar="URL",
                   help="a metrics endpoint (http://host:port/metrics); repeatable")
    p.add_argument("--host", default="127.0.0.1", help="embedded: the host of `run`")
    p.add_argument("--metrics-port", type=int, default=8080 + EMBEDDED_METRICS_OFFSET,
                   help="embedded: `run`'s metrics port (default 28080)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--timeout", type=float, default=SCRAPE_TIMEOUT,
                   help="seconds to wait for each endpoint")
    p.add_argument("--thresholds", metavar="FILE",
                   help="JSON object of thresholds (names as the flags below, with _)")
    for f in fields(Thresholds):
        p.add_argument(f"--max-{f.name.replace('_', '-')}", dest=f"max_{f.name}", type=float,
                       default=None, metavar="N",
                       help=f"threshold {f.name} (default {f.default}; negative: not judged)")
    p.add_argument("--serve", metavar="HOST:PORT",
                   help="serve the status page and /status.json here instead of printing "
                   "(the production exchange's page)")
    p.set_defaults(func=cmd_status)
    return p


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    result = Thresholds.load(args.thresholds) if args.thresholds else Thresholds()
    for f in fields(Thresholds):
        value = getattr(args, f"max_{f.name}")
        if value is not None:
            setattr(result, f.name, None if value < 0 else value)
    return result


def targets_from(args: argparse.Namespace) -> tuple[list[Target], list[str]]:
    targets: list[Target] = []
    unwatched: list[str] = []
    if args.config:
        targets, unwatched = targets_from_configs(args.config)
    for i, url in enumerate(args.url or [], start=1):
        targets.append(Target(f"url-{i}", url))
    if not targets and not unwatched:
        targets.append(embedded_target(args.host, args.metrics_port))
    return targets, unwatched


def cmd_status(args: argparse.Namespace) -> int:
    try:
        thresholds = thresholds_from(args)
        targets, unwatched = targets_from(args)
        log_db = log_database_from_configs(args.config) if args.config else None
    except (ConfigError, OSError) as e:
        print(f"exchange-server status: {e}", file=sys.stderr)
        return 2
    if args.serve:
        return serve(args.serve, targets, unwatched, thresholds, log_db)
    history = leader_history(log_db, timeout=max(1, int(args.timeout))) if log_db else None
    status = build_status(collect(targets, args.timeout), thresholds, unwatched,
                          history=history)
    print(status_json(status) if args.json else render_text(status))
    return 0 if status["healthy"] else 1


def serve(bind: str, targets: list[Target], unwatched: list[str],
          thresholds: Thresholds, log_db: MysqlConfig | None = None) -> int:
    import uvloop

    from exchange_server.common.metrics import MetricsServer
    from exchange_server.status.page import remote_status, routes

    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        print(f"exchange-server status: --serve {bind!r}: expected HOST:PORT", file=sys.stderr)
        return 2

    async def main() -> int:
        server = MetricsServer("status", routes(remote_status(targets, unwatched, thresholds, log_db)))
        await server.start(host or "127.0.0.1", int(port))
        print(f"exchange-server status: page on http://{host or '127.0.0.1'}:{server.port}"
              f"/status", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()
        return 0

    try:
        return int(uvloop.run(main()))
    except KeyboardInterrupt:
        return 0


# -- text ------------------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    parts = [f"{d}d"] if d else []
    parts += [f"{h}h"] if d or h else []
    parts += [f"{m}m"] if d or h or m else []
    return " ".join(parts + [f"{s % 60}s"])


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "at an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _leadership_lines(view: dict[str, Any] | None) -> list[str]:
    """Which matchengine is active, each one's epoch and standby lag, the last change."""
    if not view or view["mode"] is None:
        return []
    if view["mode"] == "single":
        names = ", ".join(r["name"] for r in view["matchengines"])
        return ["", f"matchengine: single (no standby configured): {names}"]
    lines = ["", f"{'matchengine':<16}{'role':<12}{'epoch':>7}{'standby lag':>13}"
                 f"{'leader changes':>16}"]
    for r in view["matchengines"]:
        role = "DEPOSED" if r["deposed"] else r["role"]
        lines.append(f"{r['name']:<16}{role:<12}{_n(r['epoch']):>7}{_n(r['standby_lag']):>13}"
                     f"{_n(r['leader_changes']):>16}")
    change = view["last_change"]
    if change is not None:
        was = f" (was {change['previous']})" if change.get("previous") else ""
        lines.append(f"last leader change: epoch {change['epoch']} taken by {change['holder']}"
                     f"{was} {_when(change['taken_at'])}")
    elif view["active"] is not None:
        lines.append(f"leader: {view['active']}, epoch {_n(view['epoch'])}")
    return lines


def render_text(status: dict[str, Any]) -> str:
    lines = [f"exchange: {'HEALTHY' if status['healthy'] else 'UNHEALTHY'}  "
             f"({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(status['time']))})"]
    lines += [f"  problem: {p}" for p in status["problems"]]
    lines.append("")
    lines.append(f"{'instance':<16}{'state':<12}{'pid':>8}  {'uptime':<14}{'conns':>6}  services")
    for row in status["services"]:
        state = {True: "up", False: "DOWN", None: "unwatched"}[row["up"]]
        lines.append(f"{row['name']:<16}{state:<12}{_n(row['pid']):>8}  "
                     f"{_duration(row['uptime_seconds']):<14}{_n(row['connections']):>6}  "
                     f"{', '.join(row['services'])}")
    lines += _leadership_lines(status.get("leadership"))
    engine = status["matchengine"]
    if engine is not None:
        commit = engine["commit_seconds_avg"]
        slice_time = engine["last_slice_time"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(slice_time)) \
            if slice_time else "none yet"
        lines += [
            "",
            f"operation log: last {_n(engine['operation_id'])}, durable "
            f"{_n(engine['durable_operation'])}, commit "
            f"{'-' if commit is None else f'{commit * 1000:.2f} ms'} (avg, last minute)",
            f"last slice: {when} ({_duration(engine['last_slice_age_seconds'])} ago); "
            f"a restart would replay {_n(engine['operations_since_slice'])} operations",
            f"activity (last minute): {_n(engine['orders_per_second'], 2)} orders/s, "
            f"{_n(engine['trades_per_second'], 2)} trades/s; "
            f"{_n(engine['open_orders'])} open orders",
        ]
    lines.append("")
    lines.append(f"{'lag':<18}{'behind':>10}{'seconds':>10}")
    for name, lag in status["lag"].items():
        if lag is None:
            lines.append(f"{name:<18}{'-':>10}{'-':>10}")
        else:
            lines.append(f"{name:<18}{_n(lag['operations']):>10}{_n(lag['seconds'], 1):>10}")
    conns = status["connections"]
    lines.append("")
    lines.append("connections: " + ", ".join(f"{gw} {_n(n)}" for gw, n in conns.items()))
    return "\n".join(lines)
