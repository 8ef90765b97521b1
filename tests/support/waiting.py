"""Waiting on a condition instead of sleeping: one helper for every test (no tests here).

Why: a fixed sleep is either too long (a slow suite) or too short on a loaded machine (a red
CI run that blocks a landing).  Polling a condition until a generous deadline is as fast as
the machine allows and only fails when the condition really never holds.  The timeouts are
deadlines, never measurements: no test asserts how long something took.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Default deadline: long enough for a 2-core machine shared by several suites (CI is busier
#: still: things may take 10x longer there than here).
DEFAULT_TIMEOUT = 60.0
#: Pause between two polls.
INTERVAL = 0.02


def wait_until(condition: Callable[[], T], timeout: float = DEFAULT_TIMEOUT,
               interval: float = INTERVAL, message: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; return it.  AssertionError
    (naming ``message``) if it has not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        time.sleep(interval)


async def wait_until_async(condition: Callable[[], T | Awaitable[T]],
                           timeout: float = DEFAULT_TIMEOUT, interval: float = INTERVAL,
                           message: str = "condition") -> T:
    """:func:`wait_until` for coroutines: ``condition`` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        await asyncio.sleep(interval)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections at ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = DEFAULT_TIMEOUT, what: str = "") -> None:
    """Wait until something listens on ``port`` (127.0.0.1)."""
    wait_until(lambda: listening(port), timeout, 0.05,
               f"something listening on {port} {what}".rstrip())
