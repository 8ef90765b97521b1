"""Detaching from the terminal, and the watchdog that keeps the worker process alive.

:func:`daemonize` is a double fork with ``setsid`` in between; the working directory is kept
(the original's ``daemon(1, 1)``, so relative paths in the config keep working) and standard
input/output/error go to ``/dev/null``.

:func:`watchdog` forks the worker and waits for it, as the original's process_keepalive:

* worker exits normally (any exit status but :data:`RESTART_STATUS`) -> the watchdog exits
  with that status;
* worker exits with :data:`RESTART_STATUS` (a matchengine that lost its leadership and steps
  down, matchprocess/leader.py) -> a new worker after ``restart_delay``, without an alert;
* worker killed by a signal -> a FATAL log line (which also becomes an alert) and a new worker
  after ``restart_delay`` (0.5 s: the restart is due within 1 s);
* SIGTERM / SIGQUIT to the watchdog are passed on to the worker, and the watchdog exits when
  the worker has stopped (it does not restart it).  SIGUSR1 / SIGTTIN / SIGTTOU are passed on
  too, so the one pid in the lock file controls the service.  SIGINT is passed on (stop) in the
  foreground and ignored when daemonised.

The watchdog must be entered before any event loop or thread exists (fork).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("exchange_server.process")

RESTART_DELAY = 0.5
#: Exit status by which a worker asks for a fresh worker (not an error: no alert).
RESTART_STATUS = 76
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGQUIT)
_FORWARDED = (signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU)


def daemonize() -> None:
    """Detach: fork, setsid, fork again; stdio to /dev/null.  Returns in the grandchild."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


def _reset_signals() -> None:
    for signo in _FORWARDED:
        signal.signal(signo, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def watchdog(name: str, restart_delay: float = RESTART_DELAY, daemon: bool = True,
             on_fork: Callable[[bool], None] | None = None) -> int | None:
    """Run the watchdog loop.

    Returns None in the worker process (which goes on to run the service) and the exit status
    in the watchdog process once it is done.  ``on_fork(is_worker)`` runs in each process
    after every fork (re-open log files, ...).
    """
    state = {"stopping": False, "child": 0}

    def forward(signo: int, frame: FrameType | None) -> None:
        if signo in _STOP_SIGNALS or signo == signal.SIGINT:
            state["stopping"] = True
        child = state["child"]
        if child:
            try:
                os.kill(child, signal.SIGTERM if signo == signal.SIGINT else signo)
            except ProcessLookupError:
                pass

    for signo in _FORWARDED:
        signal.signal(signo, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN if daemon else forward)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    while True:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _reset_signals()
            if daemon:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            if on_fork is not None:
                on_fork(True)
            return None
        state["child"] = pid
        if on_fork is not None:
            on_fork(False)
        if state["stopping"]:
            forward(signal.SIGTERM, None)
        log.info("watchdog: worker %d started", pid)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except ChildProcessError:
                log.error("watchdog: waitpid %d: no such child", pid)
                return 1
        state["child"] = 0
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            log.info("watchdog: worker %d exited with status %d", pid, code)
            if code != RESTART_STATUS or state["stopping"]:
                return code
            log.warning("watchdog: worker %d asked for a restart", pid)
            time.sleep(restart_delay)
            if state["stopping"]:
                return 0
            continue
        if not os.WIFSIGNALED(status):  # pragma: no cover - stopped/continued are not waited for
            log.error("watchdog: worker %d terminated, waitpid status %d", pid, status)
            return 1
        killer = os.WTERMSIG(status)
        if state["stopping"]:
            log.warning("watchdog: worker %d terminated by signal %s while stopping", pid,
                        signal.strsignal(killer))
            return 128 + killer
        log.critical("process: %d, name: %s terminated by signal: '%s'", pid, name,
                     signal.strsignal(killer))
        deadline = time.monotonic() + restart_delay
        while not state["stopping"]:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.05))
        if state["stopping"]:
            return 0
