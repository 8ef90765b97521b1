"""The ``exchange-server`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from exchange_server.accesshttp.limits import HttpLimits
from exchange_server.common import logs
from exchange_server.common.config import (
    ConfigError,
    MatchEngineConfig,
    default_matchengine_data,
    load_matchengine,
    read_json,
)
from exchange_server.common.names import Service, Storage


def load_embedded_config(path: str | None) -> MatchEngineConfig:
    data = read_json(path) if path else default_matchengine_data()
    return load_matchengine(data, embedded=True)


def embedded_metrics_port(given: int | None, http_port: int) -> int:
    """``--metrics-port``, by default the HTTP port + 20000 as in the deploy kit (0: off)."""
    from exchange_server.status.collect import EMBEDDED_METRICS_OFFSET

    if given is not None:
        return given
    port = http_port + EMBEDDED_METRICS_OFFSET
    return port if http_port > 0 and port < 65536 else 0


def cmd_run(args: argparse.Namespace) -> int:
    from exchange_server.accessws.config import load_accessws
    from exchange_server.embedded import DataDirLocked, EmbeddedOptions, EmbeddedSystem
    from exchange_server.matchengine.store import StoreError
    from exchange_server.process.runner import StartupFailed

    config = load_embedded_config(args.config)
    options = EmbeddedOptions(
        data_dir=Path(args.data_dir),
        http_host=args.host,
        http_port=args.http_port,
        admin_token=args.admin_token or os.environ.get("EXCHANGE_ADMIN_TOKEN") or None,
        http_limits=HttpLimits(
            keep_alive=args.http_keep_alive, request_timeout=args.http_request_timeout,
            max_connections=args.http_max_connections, max_pipeline=args.http_max_pipeline,
            max_body_size=args.http_max_body),
        api_token=args.api_token or os.environ.get("EXCHANGE_API_TOKEN") or None,
        public_port=args.public_port,
        storage=Storage(args.storage),
        disabled=set(args.disable or []),
        ws_host=args.host,
        ws_port=args.ws_port,
        metrics_port=embedded_metrics_port(args.metrics_port, args.http_port),
        cli_port=args.cli_port,
        ws_config=load_accessws(read_json(args.ws_config), embedded=True) if args.ws_config else None,
    )
    system = EmbeddedSystem(config, options)
    try:
        _run_async(system.run_until_signalled())
    except (DataDirLocked, StartupFailed) as e:
        print(f"exchange-server: {e}", file=sys.stderr)
        return 1
    except StoreError as e:
        # a log that cannot be restored: one fatal line naming the operation, no traceback
        logging.getLogger("exchange_server").critical("cannot start: %s", e)
        return 3
    return 0


def cmd_db_init(args: argparse.Namespace) -> int:
    from exchange_server.history.store_mysql import init_schema
    from exchange_server.matchengine.store_mysql import MysqlEngineStore

    config = load_matchengine(read_json(args.config))
    assert config.db_log is not None and config.db_history is not None
    store = MysqlEngineStore(config.db_log)
    store.open()
    store.close()
    init_schema(config.db_history)
    print(f"exchange-server: {config.db_log.name} and {config.db_history.name} are ready")
    return 0


def _run_async(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(coro)  # type: ignore[arg-type]


#: ``exchange-server SERVICE -c CONFIG``: the module of each service's stand-alone process (it
#: exposes ``build(config_data)`` and ``validate(config_data)``).
SERVICE_MODULES = {
    Service.MATCHENGINE: "exchange_server.matchprocess.standalone",
    Service.MARKETPRICE: "exchange_server.marketprice.standalone",
    Service.READHISTORY: "exchange_server.readhistory.standalone",
    Service.ACCESSHTTP: "exchange_server.accesshttp.standalone",
    Service.ACCESSWS: "exchange_server.accessws.standalone",
    Service.ALERTCENTER: "exchange_server.alertcenter",
}


def cmd_service(args: argparse.Namespace) -> int:
    import importlib

    from exchange_server.process.runner import run_service

    module = importlib.import_module(SERVICE_MODULES[args.command])
    return run_service(args.command, args.config, module.build, daemon=args.daemon,
                       validate=getattr(module, "validate", None), lock_dir=args.lock_dir,
                       log_stderr=args.log_stderr)


#: Sub-commands whose parsers live in their own (heavier) modules: deploy's tables, status's
#: judging code, the API client.  Built only when asked for or when the command line names no
#: other command (``--help``), so ``exchange-server run`` starts without importing them.
SEPARATE_COMMANDS = ("deploy", "status", "call")


def command_word(argv: list[str]) -> str | None:
    """The sub-command ``argv`` names: its first word that is neither an option nor the value
    of ``--log-level`` (the one top-level option with a value); None when there is none."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = "=" not in arg and len(arg) > 2 and "--log-level".startswith(arg)
        else:
            return arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; given the ``command`` about to run, the sub-commands of
    :data:`SEPARATE_COMMANDS` other than it are left out (they would only cost imports)."""
    parser = argparse.ArgumentParser(prog="exchange-server", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run every service in one process (embedded mode)")
    run.add_argument("--config", "-c", help="matchengine config in the original's format "
                     "(default: the original's sample assets and markets)")
    run.add_argument("--data-dir", default="./data", help="where the SQLite files live")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run.add_argument("--http-port", type=int, default=8080, help="JSON-RPC HTTP port")
    run.add_argument("--admin-token", default=None,
                     help="bearer token that unlocks the admin methods (config.*) on the HTTP "
                          "port (default: $EXCHANGE_ADMIN_TOKEN; none: they are refused)")
    limits = HttpLimits()
    run.add_argument("--http-keep-alive", type=float, default=limits.keep_alive, metavar="SECONDS",
                     help="close idle HTTP keep-alive connections after this long (svr.keep_alive)")
    run.add_argument("--http-request-timeout", type=float, default=limits.request_timeout,
                     metavar="SECONDS", help="close an HTTP connection that takes longer to send a "
                     "request's headers and body, or to take a reply")
    run.add_argument("--http-max-connections", type=int, default=limits.max_connections,
                     help="open HTTP connections; more are closed at once")
    run.add_argument("--http-max-pipeline", type=int, default=limits.max_pipeline,
                     help="requests read ahead per HTTP connection (a batch counts as its size)")
    run.add_argument("--http-max-body", type=int, default=limits.max_body_size, metavar="BYTES",
                     help="largest HTTP request body (svr.max_pkg_size); larger: 413")
    run.add_argument("--api-token", default=None,
                     help="bearer token that every non-public method needs on the HTTP port "
                          "(default: $EXCHANGE_API_TOKEN; none: the port is trusted as is)")
    run.add_argument("--public-port", type=int, default=None,
                     help="also serve only the public market-data methods and pages on this "
                          "port (what may face the internet)")
    run.add_argument("--storage", choices=[s.value for s in Storage], default=Storage.SQLITE,
                     help="operation log and slices: SQLite under --data-dir, or MySQL/MariaDB "
                     "at the config's db_log")
    run.add_argument("--ws-port", type=int, default=8090, help="WebSocket port")
    run.add_argument("--metrics-port", type=int, default=None,
                     help="serve Prometheus metrics (GET /metrics) and the status page "
                     "(GET /status) at this port (default: --http-port + 20000; 0: off)")
    run.add_argument("--cli-port", type=int, default=7317,
                     help="the operator console (the original's cli: status, balance, market, "
                          "makeslice) on 127.0.0.1 at this port (0: off)")
    run.add_argument("--ws-config", help="accessws config (original format) for auth_url, "
                     "sign_url, push intervals, depth limits")
    run.add_argument("--disable", action="append", metavar="SERVICE",
                     choices=[Service.READHISTORY, Service.MARKETPRICE, Service.ACCESSWS],
                     help="leave a service out (readhistory, marketprice, accessws); repeatable")
    run.set_defaults(func=cmd_run)

    for name in SERVICE_MODULES:
        svc = sub.add_parser(name, help=f"run {name} as its own process (production)")
        svc.add_argument("--config", "-c", required=True, help=f"{name} config (original format)")
        svc.add_argument("--daemon", "-d", action="store_true",
                         help="detach and run under a watchdog that restarts it if it dies")
        svc.add_argument("--lock-dir", default=None,
                         help="where the single-instance lock lives (default /tmp)")
        svc.add_argument("--log-stderr", action="store_true",
                         help="also log to stderr (e.g. under systemd)")
        svc.set_defaults(func=cmd_service)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    init = db_sub.add_parser("init", help="create the trade_log and trade_history databases and "
                             "tables of a matchengine config (idempotent)")
    init.add_argument("--config", "-c", required=True, help="matchengine config (db_log, db_history)")
    init.set_defaults(func=cmd_db_init)

    separate = command is None or command in SEPARATE_COMMANDS or command not in sub.choices
    if separate:
        add_separate_parsers(sub)
    return parser


def add_separate_parsers(sub: Any) -> None:
    """``deploy``, ``status`` and ``call``, from their modules."""
    from exchange_server import deploy

    deploy.add_parser(sub)

    from exchange_server.status.command import add_parser as add_status_parser

    add_status_parser(sub)

    from exchange_server.client.cli import add_call_parser

    add_call_parser(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(command_word(argv))
    args = parser.parse_args(argv)
    logs.setup(args.log_level.upper())
    try:
        result: int = args.func(args)
        return result
    except ConfigError as e:
        print(f"exchange-server: invalid config: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
