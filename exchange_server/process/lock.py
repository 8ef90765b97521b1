"""One instance per host and service: an exclusive non-blocking flock on ``/tmp/<name>.lock``.

The directory is ``/tmp`` as in the original, or ``$EXCHANGE_LOCK_DIR`` / the ``lock_dir``
argument (tests, several test topologies on one host).  The lock file holds the pid of the
process that took it (the watchdog when daemonised), so ``kill $(cat /tmp/<name>.lock)``
stops the service.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from exchange_server.process.inherited import parent_only

LOCK_DIR_ENV = "EXCHANGE_LOCK_DIR"


class ProcessExists(RuntimeError):
    """Another process of this service holds the lock."""


def lock_path(name: str, lock_dir: str | os.PathLike[str] | None = None) -> Path:
    directory = lock_dir if lock_dir is not None else os.environ.get(LOCK_DIR_ENV) or "/tmp"
    return Path(directory) / f"{name}.lock"


def acquire_process_lock(name: str, lock_dir: str | os.PathLike[str] | None = None) -> IO[str]:
    """Take the lock (held until every process that inherited the file has exited)."""
    path = lock_path(name, lock_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ProcessExists(f"process: {name} exist") from None
    write_pid(handle)
    return parent_only(handle)


def write_pid(handle: IO[str], pid: int | None = None) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(f"{pid if pid is not None else os.getpid()}\n")
    handle.flush()
