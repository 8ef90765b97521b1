"""The marketprice store's SQLite worker is held off a slice fork, like every SQLite thread.

Why: in embedded mode (``exchange-server run``) marketprice's worker thread runs SQLite in the
matchengine's process.  A ``fork()`` for a slice while that thread was inside SQLite left the
child blocked forever on SQLite's mutex in its first ``connect`` (seen in bench_kill_restart:
the child hung, and no slice was taken after it).  ``FORK_GUARD.before_fork`` must wait while
a store call runs.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from exchange_server.marketprice.store_sqlite import SqliteStore
from exchange_server.storage.forkguard import FORK_GUARD
from tests.support.waiting import wait_until


async def test_a_fork_waits_for_a_running_store_call(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    await store.open()
    inside, release = threading.Event(), threading.Event()

    def slow() -> int:
        inside.set()
        release.wait(30)
        return 1

    call = asyncio.ensure_future(store._run(slow))
    await asyncio.to_thread(inside.wait, 30)
    forked = threading.Event()

    def fork() -> None:
        FORK_GUARD.before_fork()
        forked.set()
        FORK_GUARD.after_fork_parent()

    forker = threading.Thread(target=fork)
    forker.start()
    # the fork hook has begun and waits: it can only pass once the store call is over
    await asyncio.to_thread(wait_until, lambda: FORK_GUARD._forking, 30, 0.01, "the fork hook")
    assert not forked.is_set()
    release.set()
    assert await call == 1
    await asyncio.to_thread(wait_until, forked.is_set, 30, 0.01, "the fork to proceed")
    forker.join(30)
    await store.close()
