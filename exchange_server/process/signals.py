"""Signals of a worker process, on its asyncio loop (config.md 2).

* SIGTERM, SIGQUIT: graceful stop (:attr:`ProcessSignals.stop` is set; the runner then stops
  the service);
* SIGINT: ignored when daemonised; a graceful stop in the foreground (Ctrl-C);
* SIGPIPE: ignored (Python's default);
* SIGTTIN / SIGTTOU: enable / disable one more log level;
* SIGUSR1: sets :attr:`ProcessSignals.reload` (nothing reloads yet, as in the original).

Decision: SIGCHLD keeps its default disposition (the original ignores it) because the
matchengine reaps its slice children with waitpid.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from exchange_server.process.logsetup import LevelControl

log = logging.getLogger("exchange_server.process")


class ProcessSignals:
    def __init__(self, levels: LevelControl | None = None, daemon: bool = False) -> None:
        self.stop = asyncio.Event()
        self.reload = False
        self.levels = levels
        self.daemon = daemon
        self.stop_signal: int | None = None
        self._installed: list[int] = []

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> ProcessSignals:
        loop = loop or asyncio.get_running_loop()
        for signo in (signal.SIGTERM, signal.SIGQUIT):
            loop.add_signal_handler(signo, self._on_stop, signo)
            self._installed.append(signo)
        if self.daemon:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            loop.add_signal_handler(signal.SIGINT, self._on_stop, signal.SIGINT)
            self._installed.append(signal.SIGINT)
        loop.add_signal_handler(signal.SIGTTIN, self._on_level, True)
        loop.add_signal_handler(signal.SIGTTOU, self._on_level, False)
        loop.add_signal_handler(signal.SIGUSR1, self._on_reload)
        self._installed += [signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1]
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        return self

    def uninstall(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        loop = loop or asyncio.get_running_loop()
        for signo in self._installed:
            loop.remove_signal_handler(signo)
        self._installed.clear()

    def request_stop(self) -> None:
        """What SIGTERM does, for callers that want to stop the service themselves."""
        self.stop.set()

    def _on_stop(self, signo: int) -> None:
        log.warning("[%d]signal: %d (%s) received, exiting", os.getpid(), signo,
                    signal.Signals(signo).name)
        self.stop_signal = signo
        self.stop.set()

    def _on_level(self, up: bool) -> None:
        if self.levels is None:
            return
        if up:
            self.levels.level_up()
        else:
            self.levels.level_down()
        log.warning("[%d]signal: %s received, logging level %s: %s", os.getpid(),
                    "SIGTTIN" if up else "SIGTTOU", "up" if up else "down", self.levels.describe())

    def _on_reload(self) -> None:
        log.warning("[%d]signal: %d (SIGUSR1) received", os.getpid(), signal.SIGUSR1)
        self.reload = True
