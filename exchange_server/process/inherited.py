"""What a forked helper child (the slice writer) lets go of at once: its parent's listening
sockets and instance locks; and that it dies with its parent.

Why: a child inherits every descriptor of its parent.  When the parent dies (SIGKILL, a crash)
while the child still writes (a slice of a large book takes seconds), a child holding them
would keep (1) the dead engine's ports accepting connections that nobody serves, so gateways
wait for their timeout instead of failing over to the standby at once, and a restarted engine
could not bind its port; (2) the instance locks (the data directory's, ``/tmp/<name>.lock``),
so the restart would be refused as "already running" until the child finished.  A flock
belongs to the open file, so the child closing its copy leaves the parent's lock held.

A child that outlives its parent also goes on working for nothing (a slice of a dead engine is
never published) on a core the restart needs: on Linux the kernel SIGKILLs it when its parent
dies (:func:`die_with_parent`).
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable
from typing import IO, Any

#: Open files only the process that opened them (and a watchdog's worker) may keep.
_PARENT_ONLY: list[IO[Any]] = []


def parent_only(handle: IO[Any]) -> IO[Any]:
    """Register ``handle`` (an instance lock) to be closed in forked helper children."""
    _PARENT_ONLY[:] = [h for h in _PARENT_ONLY if not h.closed]
    _PARENT_ONLY.append(handle)
    return handle


def release_in_child() -> None:
    """In a freshly forked helper child: close the registered handles and every listening
    socket.  Only descriptors are closed (no Python object is finalised, no buffer flushed)."""
    for handle in _PARENT_ONLY:
        if not handle.closed:
            _close(handle.fileno())
    for fd in _listening_sockets():
        _close(fd)


#: prctl(2) option: the signal this process gets when its parent dies
PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` through ctypes; None off Linux or without it.  Looked up in the parent
    (:func:`prepare_die_with_parent`): a forked child must not load libraries, since a lock
    another thread of its parent held at the fork (the dynamic loader's) stays held in it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).prctl
        function.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        return function
    except (OSError, AttributeError):
        return None


def prepare_die_with_parent() -> None:
    """In the parent, before forking a child that will call :func:`die_with_parent`."""
    _prctl()


def die_with_parent(parent: int) -> bool:
    """In a freshly forked helper child: have the kernel SIGKILL this process as soon as its
    parent (pid ``parent``, taken before the fork) dies, so that a SIGKILLed engine leaves no
    child working on; False when the parent is already gone (it died before the request was
    made: the child must exit at once).

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere, or if the call fails, the child lives
    on and only the answer tells it its parent is gone, as the slice writer also checks before
    it publishes.  The signal comes when the *thread* that forked exits: the slice writer is
    forked by the event loop's thread, which lives as long as the engine."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent


def _listening_sockets() -> list[int]:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: nothing to find (the project runs on Linux)
        return []
    found = []
    for fd in fds:
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                found.append(fd)
        except OSError:
            pass
        finally:
            probe.close()
    return found


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
