"""Embedded mode: every service in one process, SQLite files under a data directory.

This is what ``exchange-server run`` starts.  The services are the same objects that run alone
in production; only the adapters differ (SQLite instead of MySQL, in-process calls instead of
the binary RPC, an in-process bus instead of Kafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from exchange_server.accesshttp.limits import HttpLimits
from exchange_server.accesshttp.observe import register_accesshttp
from exchange_server.accesshttp.server import AccessHttp
from exchange_server.accessws.config import AccessWsConfig, load_accessws
from exchange_server.accessws.observe import register_accessws
from exchange_server.accessws.server import AccessWs
from exchange_server.bus.mark import MarkFile
from exchange_server.bus.memory import InProcessBus
from exchange_server.bus.publisher import BusPublisher
from exchange_server.common import metrics
from exchange_server.common.backend import Backend, LocalBackend
from exchange_server.common.config import ConfigError, MatchEngineConfig, MysqlConfig
from exchange_server.common.looplag import LoopLagProbe
from exchange_server.common.metrics import MetricsServer
from exchange_server.common.names import Service, Storage
from exchange_server.marketprice.observe import register_marketprice
from exchange_server.marketprice.service import MarketPriceService
from exchange_server.marketprice.store_sqlite import SqliteStore as MarketSqliteStore
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import EngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore
from exchange_server.matchprocess.console import DEFAULT_PORT as CONSOLE_PORT
from exchange_server.matchprocess.console import Console, ConsoleServer
from exchange_server.matchprocess.follower import FollowerProcess, FollowerSpec
from exchange_server.matchprocess.lifecycle import engine_steps
from exchange_server.matchprocess.observe import register_gauges
from exchange_server.process.inherited import parent_only
from exchange_server.process.lifecycle import Composite, StartupFailed, Step, step
from exchange_server.readhistory.reader import HistoryReader, SqliteHistoryReader
from exchange_server.readhistory.service import ReadHistoryService
from exchange_server.rpc.addr import SockAddr
from exchange_server.status.page import local_status
from exchange_server.status.page import routes as status_routes

log = logging.getLogger("exchange_server")

#: Services that can be left out of an embedded run (matchengine and accesshttp always run).
OPTIONAL_SERVICES = (Service.READHISTORY, Service.MARKETPRICE, Service.ACCESSWS)


@dataclass
class EmbeddedOptions:
    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    http_timeout: float = 1.0
    #: Bearer token unlocking accesshttp's admin methods (``config.*``); None: always refused.
    admin_token: str | None = None
    #: what one HTTP client may cost (keep-alive, request timeout, connections, pipeline, sizes)
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    #: Bearer token every non-public HTTP method needs (accesshttp/trust.py); None: none.
    api_token: str | None = None
    #: A second HTTP listener that answers only the public market-data methods and pages
    #: (None: none; 0: any free port).
    public_port: int | None = None
    #: files under data_dir, or MySQL (the config's ``db_log`` and ``db_history``)
    storage: Storage = Storage.SQLITE
    disabled: set[str] = field(default_factory=set)
    ws_host: str = "127.0.0.1"
    ws_port: int = 8090
    ws_config: AccessWsConfig | None = None
    #: Prometheus ``GET /metrics`` on this port (0: off).
    metrics_port: int = 0
    #: The operator console (the original's ``cli``) on 127.0.0.1 at this port (0: off).
    cli_port: int = CONSOLE_PORT


class DataDirLocked(RuntimeError):
    """Another process already runs on this data directory."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """One engine per data directory: an exclusive lock held for the process's lifetime."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "exchange-server.lock", "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirLocked(f"{data_dir}: another exchange-server is running on it") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return parent_only(handle)


def _mysql(config: MatchEngineConfig, name: str) -> MysqlConfig:
    value: MysqlConfig | None = getattr(config, name)
    if value is None:
        raise ConfigError(f"{name}: required field is missing (needed by --storage mysql)")
    return value


def make_engine_store(config: MatchEngineConfig, options: EmbeddedOptions) -> EngineStore:
    """The operation log's store.  The MySQL one (and its client library) is imported only
    when asked for: every restart of a SQLite data directory would pay for it."""
    if options.storage == Storage.SQLITE:
        return SqliteEngineStore(options.data_dir)
    if options.storage == Storage.MYSQL:
        from exchange_server.matchengine.store_mysql import MysqlEngineStore

        return MysqlEngineStore(_mysql(config, "db_log"))
    raise ConfigError(f"unknown storage {options.storage!r}")


def make_history_reader(config: MatchEngineConfig, options: EmbeddedOptions) -> HistoryReader:
    if options.storage == Storage.MYSQL:
        from exchange_server.readhistory.reader import MysqlHistoryReader

        return MysqlHistoryReader(_mysql(config, "db_history"))
    return SqliteHistoryReader(options.data_dir)


class EmbeddedSystem(Composite):
    def __init__(self, config: MatchEngineConfig, options: EmbeddedOptions) -> None:
        unknown = options.disabled - set(OPTIONAL_SERVICES)
        if unknown:
            raise ConfigError(f"cannot disable {', '.join(sorted(unknown))}: only "
                              f"{', '.join(OPTIONAL_SERVICES)} are optional")
        if not 0 <= options.cli_port <= 65535:
            raise ConfigError(f"--cli-port {options.cli_port}: not a port (0: no console)")
        self.config = config
        self.options = options
        self.store = make_engine_store(config, options)
        self.matchengine = MatchEngineService(config, self.store)
        reader = make_history_reader(config, options)
        # History rows are written by a follower process that tails the operation log (even
        # when readhistory is disabled: they are the record).
        self.follower = FollowerProcess(
            FollowerSpec(config.raw, True, str(options.data_dir), options.storage,
                         logging.getLogger().level),
            max_pending_rows=config.history_max_pending)
        self.matchengine.pressure.append(lambda: self.follower.overloaded(self.matchengine.oper_id))
        self.matchengine.durable_hooks.append(self.follower.set_durable)
        # The in-process bus: the publisher turns durable operations into the original's
        # deals/orders/balances messages; marketprice and accessws consume them.
        mark = MarkFile(options.data_dir / "bus.mark")
        self.bus = InProcessBus(mark)
        self.publisher = BusPublisher(self.bus, mark)
        self.matchengine.add_sink(self.publisher)
        backends: dict[str, Backend] = {"matchengine": LocalBackend(self.matchengine)}
        self.readhistory: ReadHistoryService | None = None
        if "readhistory" not in options.disabled:
            self.readhistory = ReadHistoryService(reader, debug=config.debug)
            backends["readhistory"] = LocalBackend(self.readhistory)
        self.marketprice: MarketPriceService | None = None
        if "marketprice" not in options.disabled:
            # the engine is looked up each time: a storage failure's recovery replaces it
            matchengine = self.matchengine
            self.marketprice = MarketPriceService(
                self.bus, MarketSqliteStore(options.data_dir),
                markets=lambda: list(matchengine.engine.markets), debug=config.debug)
            backends["marketprice"] = LocalBackend(self.marketprice)
        self.http = AccessHttp(backends, timeout=options.http_timeout,
                               admin_token=options.admin_token, api_token=options.api_token,
                               limits=options.http_limits)
        self.public_http = AccessHttp(backends, timeout=options.http_timeout, public_only=True,
                                      limits=options.http_limits
                                      ) if options.public_port is not None else None
        if self.public_http is not None:  # one max_connections for both listeners
            self.public_http.connections = self.http.connections
        self.ws: AccessWs | None = None
        if "accessws" not in options.disabled:
            self.ws = AccessWs(options.ws_config or load_accessws({}, embedded=True), backends,
                               self.bus)
        self._lock: IO[str] | None = None
        self.metrics = MetricsServer("embedded", status_routes(local_status(),
                                                              options.admin_token))
        self.loop_lag = LoopLagProbe()
        register_gauges(self.matchengine, self.follower, self.publisher)
        self.console = ConsoleServer(Console(self.matchengine, self.follower, self.publisher))
        self._register_gauges()

    def _register_gauges(self) -> None:
        """Every service of ``exchange-server run`` (the matchengine's are registered above)."""
        if self.readhistory is not None:
            metrics.gauges("readhistory")
        if self.marketprice is not None:
            register_marketprice(self.marketprice)
        register_accesshttp(*(h for h in (self.http, self.public_http) if h is not None))
        if self.ws is not None:
            register_accessws(self.ws)

    def steps(self) -> list[Step]:
        """The start order (stopped in the reverse): the data directory, the matching process's
        steps shared with the standalone matchengine (matchprocess/lifecycle.py) with
        marketprice's subscription before the restore (it registers as a durable consumer of
        the deals it has not stored yet), then the listeners, then marketprice's state (loaded
        while the listeners take orders: the first order does not wait for k-lines)."""
        before_restore = [] if self.marketprice is None else [
            step("marketprice", self.marketprice.subscribe, self._stop_marketprice)]
        return [
            step("data directory", self._lock_data_dir, self._unlock_data_dir),
            *([] if self.readhistory is None else [step("readhistory", stop=self.readhistory.close)]),
            *engine_steps(self.matchengine, self.follower, self.publisher, before_restore),
            *self._listener_steps(),
        ]

    def _listener_steps(self) -> list[Step]:
        options = self.options
        steps = [step("accesshttp", self._start_http, self.http.stop)]
        if self.ws is not None:
            steps.append(step("accessws", self._start_ws, self.ws.stop))
        if self.public_http is not None and options.public_port is not None:
            steps.append(step("accesshttp (public)", self._start_public_http,
                              self.public_http.stop))
        if self.marketprice is not None:
            # its state loads while the listeners already take orders; its requests wait
            steps += [step("marketprice load", self.marketprice.load_soon),
                      step("marketprice state", self.marketprice.loaded)]
        if options.metrics_port:
            steps += [step("loop lag probe", self.loop_lag.start, self.loop_lag.stop),
                      step("metrics", partial(self.metrics.start, options.http_host,
                                              options.metrics_port), self.metrics.stop)]
        if options.cli_port:
            steps.append(step("console", partial(self.console.start, SockAddr(
                "tcp", "127.0.0.1", options.cli_port)), self.console.stop))
        return steps

    def _lock_data_dir(self) -> None:
        self._lock = lock_data_dir(self.options.data_dir)

    def _unlock_data_dir(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def _start_http(self) -> None:
        await self.http.start(self.options.http_host, self.options.http_port)
        log.info("accesshttp listening on http://%s:%d/", self.options.http_host, self.http.port)

    async def _start_ws(self) -> None:
        assert self.ws is not None
        await self.ws.start(self.options.ws_host, self.options.ws_port)
        log.info("accessws listening on ws://%s:%d/", self.options.ws_host, self.ws.port)
        self.http.ws_port = self.ws.port  # the market page finds the WebSocket here

    async def _start_public_http(self) -> None:
        assert self.public_http is not None and self.options.public_port is not None
        self.public_http.ws_port = self.http.ws_port
        await self.public_http.start(self.options.http_host, self.options.public_port)
        log.info("accesshttp (public methods only) listening on http://%s:%d/",
                 self.options.http_host, self.public_http.port)

    async def _stop_marketprice(self) -> None:
        assert self.marketprice is not None
        # a failing storage must not hold the exit up; a state never loaded consumes nothing
        if not self.matchengine.degraded and self.marketprice.is_loaded:
            with contextlib.suppress(TimeoutError):
                await self.marketprice.wait_offset(self.bus.end_offset("deals") - 1, 5)
        await self.marketprice.stop()

    async def start(self) -> None:
        """Start every step; when one fails, those before it are stopped (in reverse) and the
        error is raised: StoreError (the command's "cannot start" line, exit status 3),
        DataDirLocked, or StartupFailed."""
        try:
            await super().start()
        except sqlite3.Error as e:
            raise StartupFailed(f"cannot start: {e}") from None

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        ws = f", WebSocket on ws://{self.options.ws_host}:{self.ws.port}/" if self.ws else ""
        print(f"exchange-server: HTTP JSON-RPC on http://{self.options.http_host}:{self.http.port}/"
              f"{ws} (data in {self.options.data_dir})", flush=True)
        await stop.wait()
        log.info("stopping")
        await self.stop()
