"""Embedded mode: every service in one process, SQLite files under a data directory.

This is what ``exchange-server run`` starts.  The services are the same objects that run alone
in production; only the adapters differ (SQLite instead of MySQL, in-process calls instead of
the binary RPC).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from exchange_server.accesshttp.server import AccessHttp
from exchange_server.common.backend import Backend, LocalBackend
from exchange_server.common.config import ConfigError, MatchEngineConfig
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import EngineStore
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchengine.store_sqlite import SqliteEngineStore

log = logging.getLogger("exchange_server")


@dataclass
class EmbeddedOptions:
    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    http_timeout: float = 1.0
    #: "sqlite" (files under data_dir) or "mysql" (the config's ``db_log``).
    storage: str = "sqlite"


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
    return handle


def make_engine_store(config: MatchEngineConfig, options: EmbeddedOptions) -> EngineStore:
    if options.storage == "sqlite":
        return SqliteEngineStore(options.data_dir)
    if options.storage == "mysql":
        if config.db_log is None:
            raise ConfigError("db_log: required field is missing (needed by --storage mysql)")
        return MysqlEngineStore(config.db_log)
    raise ConfigError(f"unknown storage {options.storage!r}")


class EmbeddedSystem:
    def __init__(self, config: MatchEngineConfig, options: EmbeddedOptions) -> None:
        self.config = config
        self.options = options
        self.store = make_engine_store(config, options)
        self.matchengine = MatchEngineService(config, self.store)
        backends: dict[str, Backend] = {"matchengine": LocalBackend(self.matchengine)}
        self.http = AccessHttp(backends, timeout=options.http_timeout)
        self._lock: IO[str] | None = None

    async def start(self) -> None:
        self._lock = lock_data_dir(self.options.data_dir)
        self.store.open()
        self.matchengine.restore()
        await self.matchengine.start()
        await self.http.start(self.options.http_host, self.options.http_port)
        log.info("accesshttp listening on http://%s:%d/", self.options.http_host, self.http.port)

    async def stop(self) -> None:
        await self.http.stop()
        await self.matchengine.stop()
        self.store.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        print(f"exchange-server: HTTP JSON-RPC on http://{self.options.http_host}:{self.http.port}/ "
              f"(data in {self.options.data_dir})", flush=True)
        await stop.wait()
        log.info("stopping")
        await self.stop()
