"""Running one service as its own process, the way the original's ``*_main.c`` do.

``run_service(name, config_path, build)``:

1. read the JSON config and its ``process`` / ``log`` / ``alert`` / ``monitor`` blocks (and
   run ``validate(config)`` if given) while the terminal is still attached: a bad config is
   reported on stderr with exit status 2;
2. take the single-instance lock ``/tmp/<name>.lock`` -> "process: <name> exist", status 1;
3. apply ``process.file_limit`` / ``core_limit``; open the log files (and the alert sender);
4. with ``daemon``: detach; with ``watchdog`` (default: same as ``daemon``): fork the worker
   under the watchdog, which restarts it when it dies by a signal;
5. in the worker: an event loop (uvloop), the signal handlers, ``service = await build(config)``,
   ``await service.start()``, the ``monitor`` and ``metrics`` listeners if configured (one
   stack, process/lifecycle.py: stopped in the reverse order, and what started is stopped when
   a later step fails); then wait for SIGTERM / SIGQUIT (or ``service.finished()`` returning,
   if the service has that method) and stop the stack.

The exit status is 0 after a graceful stop, 1 when the service failed to start or stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import IO, Any, Protocol

from exchange_server.common.config import ConfigError, read_json
from exchange_server.common.metrics import MetricsServer, gauges
from exchange_server.common.names import Service
from exchange_server.process.daemon import RESTART_DELAY, daemonize, watchdog
from exchange_server.process.lifecycle import StartupFailed, Step, start_steps, step
from exchange_server.process.limits import apply_limits
from exchange_server.process.lock import ProcessExists, acquire_process_lock, write_pid
from exchange_server.process.logsetup import LoggingSetup, setup_logging
from exchange_server.process.monitor import MonitorServer
from exchange_server.process.settings import ProcessSettings, read_process_settings
from exchange_server.process.signals import ProcessSignals
from exchange_server.rpc.addr import parse_sock_addr
from exchange_server.status.page import local_status
from exchange_server.status.page import routes as status_routes

log = logging.getLogger("exchange_server.process")

__all__ = ["StartupFailed", "run_service", "run_loop"]


class ManagedService(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


Build = Callable[[dict[str, Any]], Awaitable[ManagedService]]


def run_service(name: str, config_path: str, build: Build, *, daemon: bool = False,
                watchdog_enabled: bool | None = None, lock_dir: str | None = None,
                alert_required: bool | None = None,
                validate: Callable[[dict[str, Any]], object] | None = None,
                restart_delay: float = RESTART_DELAY, log_stderr: bool = False,
                stop_timeout: float = 120.0) -> int:
    """Run service ``name`` from ``config_path``; returns the process exit status."""
    try:
        data = read_json(config_path)
        if alert_required is None:
            alert_required = name != Service.ALERTCENTER
        settings = read_process_settings(data, alert_required=alert_required)
        if validate is not None:
            validate(data)
    except ConfigError as e:
        print(f"{name}: invalid config: {e}", file=sys.stderr)
        return 2
    try:
        lock = acquire_process_lock(name, lock_dir)
    except ProcessExists:
        print(f"process: {name} exist", flush=True)
        return 1
    try:
        apply_limits(settings.process)
    except (OSError, ValueError) as e:
        print(f"{name}: init process fail: {e}", file=sys.stderr)
        return 1
    try:
        logging_setup = setup_logging(settings.log, settings.alert, stderr=log_stderr and not daemon)
    except OSError as e:
        print(f"{name}: init log fail: {e}", file=sys.stderr)
        return 1
    return _run(name, data, build, settings, logging_setup, lock, daemon,
                daemon if watchdog_enabled is None else watchdog_enabled, restart_delay,
                stop_timeout)


def _run(name: str, data: dict[str, Any], build: Build, settings: ProcessSettings,
         logging_setup: LoggingSetup, lock: IO[str], daemon: bool, use_watchdog: bool,
         restart_delay: float, stop_timeout: float) -> int:
    if daemon:
        daemonize()
    write_pid(lock)
    if use_watchdog:
        code = watchdog(name, restart_delay, daemon=daemon,
                        on_fork=lambda is_worker: logging_setup.after_fork(shared=not is_worker))
        if code is not None:
            log.warning("watchdog: %s stopped (status %d)", name, code)
            return code
    code = run_loop(_worker(name, data, build, settings, logging_setup, daemon, stop_timeout))
    logging.shutdown()
    return code


def run_loop(coro: Awaitable[int]) -> int:
    """Run ``coro`` on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(coro)  # type: ignore[arg-type]
    return int(uvloop.run(coro))  # type: ignore[arg-type]


async def _worker(name: str, data: dict[str, Any], build: Build, settings: ProcessSettings,
                  logging_setup: LoggingSetup, daemon: bool, stop_timeout: float) -> int:
    signals = ProcessSignals(logging_setup.levels, daemon).install()
    try:
        return await _serve(name, data, build, settings, signals, daemon, stop_timeout)
    finally:
        signals.uninstall()


async def _serve(name: str, data: dict[str, Any], build: Build, settings: ProcessSettings,
                 signals: ProcessSignals, daemon: bool, stop_timeout: float) -> int:
    """Start the service, then its monitor and metrics listeners (one stack: stopped in the
    reverse order, and what started is stopped when a later step fails); wait for a signal."""
    try:
        service = await build(data)
        stack = await start_steps([_service_step(name, service, stop_timeout)])
    except Exception as e:
        log.critical("%s: init server fail: %s", name, e, exc_info=not isinstance(e, StartupFailed))
        if not daemon:
            print(f"{name}: init server fail: {e}", file=sys.stderr)
        return 1
    code = 0
    try:
        stack.push_async_exit(await start_steps(_listener_steps(name, settings)))
        log.warning("server start: %s (pid %d)", name, os.getpid())
        if not await _wait(service, signals):
            # a service may end by itself on purpose and say with which status (a deposed
            # matchengine asks its watchdog for a fresh worker, daemon.RESTART_STATUS)
            code = getattr(service, "exit_status", None) or 1
            if code == 1:
                log.critical("%s: service ended by itself", name)
    except Exception as e:
        log.critical("%s: %s", name, e, exc_info=not isinstance(e, StartupFailed))
        code = 1
    log.warning("server stop: %s", name)
    try:
        await stack.aclose()
    except Exception as e:
        log.critical("%s: stop failed: %s", name, e, exc_info=True)
        code = 1
    return code


def _service_step(name: str, service: ManagedService, stop_timeout: float) -> Step:
    return step(name, service.start, lambda: asyncio.wait_for(service.stop(), stop_timeout))


def _listener_steps(name: str, settings: ProcessSettings) -> list[Step]:
    steps: list[Step] = []
    if settings.monitor is not None:
        monitor, bind = MonitorServer(), settings.monitor.bind
        steps.append(step("monitor", lambda: monitor.start(bind), monitor.stop))
    if settings.metrics is not None:
        gauges(name)  # exchange_service_up{service=name}
        for text in settings.metrics.bind:
            addr = parse_sock_addr(text)
            server = MetricsServer(name, status_routes(local_status(name)))
            steps.append(step(f"metrics {text}", partial(server.start, addr.host, addr.port),
                              server.stop))
    return steps


async def _wait(service: ManagedService, signals: ProcessSignals) -> bool:
    """Until a stop signal (True) or the service's ``finished()`` returning (False)."""
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(signals.stop.wait())]
    finished = getattr(service, "finished", None)
    if callable(finished):
        waiters.append(asyncio.ensure_future(finished()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return signals.stop.is_set()
