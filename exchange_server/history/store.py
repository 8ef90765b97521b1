"""What the history writer needs from a database backend (SQLite or MySQL).

A batch is a list of operations ``(oper_id, rows)`` in increasing id order.  ``write`` stores
all their rows and sets the stored mark (the ``history_offset`` row) to the last id, in ONE
transaction, after skipping every operation at or below the mark already stored.  That makes a
retry of a batch whose COMMIT outcome was lost (connection dropped after sending it) harmless,
and gives exactly-once rows across crashes: rows and mark are never stored one without the
other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from exchange_server.matchengine.core.model import Event

#: (table kind, row): a row as MySQL's ``rows_of`` gives it
StoreRow = tuple[str, tuple[Any, ...]]
#: One operation's rows in the form its store's ``rows_of`` gives them (MySQL: a list of
#: StoreRow; SQLite: ``rows.StoredRows``, its values per table), or an empty list for none
#: in any store (a mark raised past rows written by someone else)
StoreRows = Any
Operation = tuple[int, StoreRows]


class HistoryStoreError(Exception):
    """The history database cannot be used (the writer logs it and retries)."""


class HistoryStore(Protocol):
    def rows_of(self, events: list[Event]) -> StoreRows:
        """One operation's events -> the rows ``write`` takes: ``rows.rows_of``'s rows, in the
        form the store writes fastest (each table's in ``rows_of``'s order).  Pure, and safe in
        any thread."""
        ...

    def open(self) -> None:
        """Make sure the tables exist (creating them if needed)."""
        ...

    def read_mark(self) -> int:
        """The stored mark: highest operation id whose rows are stored (0 if none).  Uses its
        own connection, so it may be called from any thread."""
        ...

    def write(self, batch: Sequence[Operation]) -> int:
        """Store the batch (one transaction, see the module doc); returns the number of rows
        written.  Called from one thread at a time."""
        ...

    def close(self) -> None:
        ...


def skip_stored(batch: Sequence[Operation], mark: int) -> Sequence[Operation]:
    """The operations of ``batch`` above ``mark`` (batches are in increasing id order)."""
    if not batch or batch[0][0] > mark:
        return batch
    return [op for op in batch if op[0] > mark]
