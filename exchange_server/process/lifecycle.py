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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

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
    OSError becomes :class:`StartupFailed` naming the step."""
    async with AsyncExitStack() as stack:
        for item in steps:
            await _enter(stack, item)
        return stack.pop_all()
