"""Start components in one declared order, stop them in the reverse, clean up a failed start.

Why: a service is a stack of components (storage, replica, publisher, listeners); each one that
started must be stopped, last started first, and when step N fails to start, steps 1..N-1 must
be stopped before the error is reported -- or a follower process, a listener or a lock outlives
the failed start.  :class:`contextlib.AsyncExitStack` does exactly that, so a process is
described as a list of :class:`Step` (a name and an async context manager) and
:func:`start_steps` enters them (the pattern of starlette's lifespan, httpx's
``AsyncClient.__aenter__`` and aiokafka's start/stop + ``async with``).

Components keep their ``start()`` / ``stop()``; :class:`Lifecycle` makes one with argument-less
start and stop an async context manager, and :func:`step` turns any start/stop pair (a listener
that takes its address, a synchronous open/close) into a step.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

log = logging.getLogger("exchange_server")

#: Steps that start faster than this are left out of the start-up timing line.
TIMING_FLOOR = 0.005

#: A start or stop action: a plain call or a coroutine function.
Action = Callable[[], Awaitable[Any] | Any]


class StartupFailed(RuntimeError):
    """A service cannot start for a reason the operator must fix (damaged operation log, full
    disk, unreachable database, a port already taken): reported as one line, without a
    traceback."""


class Lifecycle:
    """``async with component:`` = ``await start()`` ... ``await stop()``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


class Composite(Lifecycle):
    """A component made of steps: ``start()`` starts :meth:`steps` in order (stopping those
    started when one fails), ``stop()`` stops them in the reverse order."""

    _running: AsyncExitStack | None = None

    def steps(self) -> list[Step]:
        raise NotImplementedError

    async def start(self) -> None:
        self._running = await start_steps(self.steps())

    async def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            await running.aclose()


@dataclass(frozen=True)
class Step:
    """One component of a start order: its name (for the error line) and its context."""

    name: str
    context: Callable[[], AbstractAsyncContextManager[Any]]


async def _call(action: Action) -> None:
    result = action()
    if inspect.isawaitable(result):
        await result


@asynccontextmanager
async def _pair(start: Action, stop: Action | None) -> AsyncIterator[None]:
    await _call(start)
    try:
        yield
    finally:
        if stop is not None:
            await _call(stop)


def _nothing() -> None:
    return None


def step(name: str, start: Action = _nothing, stop: Action | None = None) -> Step:
    """A step from a start action and its undo (None: nothing to undo)."""
    return Step(name, lambda: _pair(start, stop))


async def _enter(stack: AsyncExitStack, item: Step) -> None:
    try:
        await stack.enter_async_context(item.context())
    except OSError as e:  # a port taken, a directory not writable: the operator's to fix
        text = str(e) if str(e).startswith(f"{item.name}: ") else f"{item.name}: {e}"
        raise StartupFailed(f"cannot start: {text}") from None


async def start_steps(steps: Iterable[Step]) -> AsyncExitStack:
    """Start each step in order; returns the stack whose ``aclose()`` stops them in reverse.

    When step N fails, steps 1..N-1 are stopped (in reverse) before its error propagates; an
    OSError becomes :class:`StartupFailed` naming the step.  Once all have started, one line
    says how long the start took and which steps took it (where a restart's seconds go)."""
    timings: list[tuple[str, float]] = []
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        for item in steps:
            begun = time.perf_counter()
            await _enter(stack, item)
            timings.append((item.name, time.perf_counter() - begun))
        log.info("%s", timing_line(time.perf_counter() - started, timings, process_age()))
        return stack.pop_all()


def process_age() -> float | None:
    """Seconds since this process was created (Linux ``/proc``, 10 ms steps); None elsewhere.
    Why: a restart's time starts at exec, before the first import, which no step sees."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def timing_line(total: float, timings: Iterable[tuple[str, float]],
                age: float | None = None) -> str:
    """``started in 1.52 s (2.01 s after exec): restore 1.20 s, gc freeze 0.08 s, ...``: the
    steps that took at least :data:`TIMING_FLOOR`, slowest first."""
    slow = sorted((t for t in timings if t[1] >= TIMING_FLOOR), key=lambda t: -t[1])
    parts = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in slow)
    after = f" ({age:.2f} s after exec)" if age is not None else ""
    return f"started in {total:.3f} s{after}" + (f": {parts}" if parts else "")
