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

GEN0_THRESHOLD = 100_000
GEN1_THRESHOLD = 50
GEN2_THRESHOLD = 100


def tune() -> None:
    """Raise the collection thresholds (call once, early)."""
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)


def freeze_startup_state() -> None:
    """Move everything alive now (e.g. the restored engine state) out of the collector's
    reach, so full collections no longer walk it."""
    gc.collect()
    gc.freeze()
