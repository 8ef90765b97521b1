"""Garbage-collector settings for long-running services with large in-memory state.

The engine holds millions of long-lived objects (orders, balances, book levels) and creates
many short-lived containers per command.  With CPython's default thresholds the cyclic
collector runs every 700 allocations and regularly walks the whole heap, which measured as the
largest single cost of replaying a log (5x slower).  Our state holds no reference cycles worth
collecting often, so young collections are made rarer, and what exists after start-up is
frozen out of future collections.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GEN0_THRESHOLD = 100_000
GEN1_THRESHOLD = 50
GEN2_THRESHOLD = 100


def tune() -> None:
    """Raise the collection thresholds (call once, early)."""
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)


def freeze_startup_state() -> None:
    """Move everything alive now (e.g. the restored engine state) out of the collector's
    reach, so full collections no longer walk it.

    No full collection first: after restoring 100,000 open orders it walked the whole new heap
    for 0.1-0.4 s of the restart (cache misses over hundreds of MB) and found nothing to free
    (0 unreachable objects: a restore builds no reference cycles; the replay's own
    collections ran meanwhile).  Whatever cyclic garbage a restore might leave is at most what
    accumulated since its last collection, frozen once."""
    gc.freeze()


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block.  For a slice load: it allocates hundreds of
    thousands of long-lived objects (orders, decimals, book levels) and almost no garbage, so
    the collections it would trigger only walk the new state again (10-15% of the load)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
