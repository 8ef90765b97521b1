"""``process.file_limit`` / ``process.core_limit``: raise RLIMIT_NOFILE / RLIMIT_CORE."""

from __future__ import annotations

import resource

from exchange_server.process.settings import ProcessConfig


def raise_limit(which: int, limit: int) -> None:
    """Raise soft and hard limits to ``limit`` unless the soft limit is already there (0 = leave).

    An unprivileged process that cannot raise the hard limit gets the soft limit raised as far
    as the hard limit allows."""
    if limit <= 0:
        return
    soft, hard = resource.getrlimit(which)
    if soft == resource.RLIM_INFINITY or soft >= limit:
        return
    try:
        resource.setrlimit(which, (limit, max(limit, hard) if hard != resource.RLIM_INFINITY
                                   else hard))
    except (ValueError, OSError):
        if hard == resource.RLIM_INFINITY or hard > soft:
            new = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
            resource.setrlimit(which, (new, hard))
        else:
            raise


def apply_limits(cfg: ProcessConfig) -> None:
    raise_limit(resource.RLIMIT_NOFILE, cfg.file_limit)
    raise_limit(resource.RLIMIT_CORE, cfg.core_limit)
