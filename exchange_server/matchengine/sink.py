"""The contract between the matchengine and what it feeds (history writer, message bus).

The service calls ``on_events`` once per durable operation, in operation-id order, with the
events that operation produced.  After a restart it replays the log and calls ``on_events``
again for operations the sink may already have seen: the sink drops every id at or below its
own durable mark, so its output is neither lost nor doubled.
"""

from __future__ import annotations

from typing import Protocol

from exchange_server.matchengine.core.model import Event


class EventSink(Protocol):
    def durable_mark(self) -> int:
        """The highest operation id whose output this sink has durably stored (0 if none).
        Called once, synchronously, before the engine restores its state."""
        ...

    def start_after(self, oper_id: int) -> None:
        """Everything up to ``oper_id`` was output by an original ViaBTC matchengine whose
        database is taken over (matchengine/original.py): make the durable mark at least
        ``oper_id``.  Called before ``durable_mark``, only in that case."""
        ...

    def on_events(self, oper_id: int, events: list[Event]) -> None:
        """Take the events of one operation.  Must not block: queue and write elsewhere."""
        ...

    def overloaded(self) -> bool:
        """True while the sink's backlog is over its bound: the engine then refuses writes
        with error 3 "service unavailable", as the original does."""
        ...
