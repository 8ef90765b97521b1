"""Keep fork() away from threads that are inside SQLite.

The matchengine forks a child to write its slices.  If another thread (log writer, history
writer, readhistory worker) is inside a SQLite call at that instant, the child inherits SQLite's
internal mutexes locked by a thread that does not exist there, and its own SQLite calls
deadlock.  Every thread wraps its SQLite work in ``FORK_GUARD.using()``; the ``before`` fork
hook waits until no such call is running and holds new ones off until the fork is done.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ForkGuard:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._forking = False

    @contextmanager
    def using(self) -> Iterator[None]:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    def before_fork(self) -> None:
        with self._cond:
            self._forking = True
            while self._active:
                self._cond.wait()

    def after_fork_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_child(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._forking = False


FORK_GUARD = ForkGuard()
os.register_at_fork(before=FORK_GUARD.before_fork, after_in_parent=FORK_GUARD.after_fork_parent,
                    after_in_child=FORK_GUARD.after_fork_child)
