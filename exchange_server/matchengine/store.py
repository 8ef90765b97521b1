"""Durable storage of the matchengine: the operation log and the snapshots ("slices").

One interface, two backends: SQLite files under the data directory (embedded mode) and
MySQL/MariaDB with the original's ``trade_log`` layout (production).  The service only talks to
:class:`EngineStore`; the backends live in ``store_sqlite`` and ``store_mysql``.

Threading: a store object is used by one thread at a time.  Appends run in the log writer's
thread; start-up reads run before it starts.  After ``fork()`` the child must not touch the
parent's connection: it calls :meth:`EngineStore.clone` and uses the fresh copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from exchange_server.matchengine.engine import EngineState


@dataclass(frozen=True)
class OperRecord:
    """One logged operation: the original's operlog row.

    ``method`` is the log name (``update_balance``, ``limit_order``, ``market_order``,
    ``cancel_order``) and ``params`` the request params exactly as received.  ``time`` is the
    command's time, which replay feeds back to the engine, so restored orders keep their times.
    """

    id: int
    time: float
    method: str
    params: list[Any]


@dataclass(frozen=True)
class SliceInfo:
    """A row of ``slice_history``: the slice taken at ``time`` covers operations up to
    ``end_oper_id`` and the id counters at that point."""

    time: int
    end_oper_id: int
    end_order_id: int
    end_deals_id: int


class StoreError(Exception):
    """The store cannot be used (corrupt log, gap in ids, unreachable database)."""


class EngineStore(ABC):
    @abstractmethod
    def open(self) -> None:
        """Connect and create the schema if it is missing (idempotent)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def clone(self) -> EngineStore:
        """A new, unopened store with the same settings (for a forked child)."""

    def takeover_point(self) -> int:
        """The last operation written by an original ViaBTC matchengine whose database this
        store took over (records at or below it follow the original's integer rules on replay,
        matchengine/original.py); 0 when there is none."""
        return 0

    # -- operation log ---------------------------------------------------------------------------

    @abstractmethod
    def append(self, records: Sequence[OperRecord]) -> None:
        """Write the records in one transaction; they are durable when this returns."""

    @abstractmethod
    def last_oper_id(self) -> int:
        """The highest logged id, 0 when the log is empty."""

    @abstractmethod
    def read_operlog(self, after_id: int) -> Iterator[OperRecord]:
        """Every record with id > after_id in id order."""

    # -- slices -----------------------------------------------------------------------------------

    @abstractmethod
    def latest_slice(self) -> SliceInfo | None:
        """The newest published slice."""

    @abstractmethod
    def list_slices(self) -> list[SliceInfo]:
        """All published slices, oldest first."""

    @abstractmethod
    def read_slice(self, info: SliceInfo) -> EngineState:
        """Load a published slice's orders, balances and dedup entries (counters from info)."""

    @abstractmethod
    def write_slice_data(self, info: SliceInfo, state: EngineState) -> None:
        """Write the slice's tables (replacing any half-written one of the same time).  The
        slice is not visible to ``latest_slice`` until :meth:`publish_slice`."""

    @abstractmethod
    def publish_slice(self, info: SliceInfo) -> None:
        """Insert the ``slice_history`` row, making the slice the newest one."""

    @abstractmethod
    def delete_slice(self, info: SliceInfo) -> None:
        """Drop a slice's tables and its history row."""

    def delete_old_slices(self, now: int, keeptime: int) -> None:
        """The original's retention: once a slice at least as new as ``now - keeptime`` exists,
        every older slice is removed."""
        slices = self.list_slices()
        limit = now - keeptime
        if not any(s.time >= limit for s in slices):
            return
        for s in slices:
            if s.time < limit:
                self.delete_slice(s)
