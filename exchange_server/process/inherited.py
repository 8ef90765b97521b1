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

import os
import signal
import socket
import stat
import sys
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


def die_with_parent(parent: int) -> bool:
    """In a freshly forked helper child: have the kernel SIGKILL this process as soon as its
    parent (pid ``parent``, taken before the fork) dies, so that a SIGKILLed engine leaves no
    child working on; False when the parent is already gone (it died before the request was
    made: the child must exit at once).

    Linux only (``prctl(PR_SET_PDEATHSIG)``, through ctypes); elsewhere, or if the call fails,
    the child lives on and only the answer tells it its parent is gone, as the slice writer
    also checks before it publishes.  The signal comes when the *thread* that forked exits: the
    slice writer is forked by the event loop's thread, which lives as long as the engine."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0))
        except (OSError, AttributeError):
            pass  # no prctl: the checks of the parent's pid remain
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
