"""What a forked helper child (the slice writer) lets go of at once: its parent's listening
sockets and instance locks.

Why: a child inherits every descriptor of its parent.  When the parent dies (SIGKILL, a crash)
while the child still writes (a slice of a large book takes seconds), a child holding them
would keep (1) the dead engine's ports accepting connections that nobody serves, so gateways
wait for their timeout instead of failing over to the standby at once, and a restarted engine
could not bind its port; (2) the instance locks (the data directory's, ``/tmp/<name>.lock``),
so the restart would be refused as "already running" until the child finished.  A flock
belongs to the open file, so the child closing its copy leaves the parent's lock held.
"""

from __future__ import annotations

import os
import socket
import stat
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
