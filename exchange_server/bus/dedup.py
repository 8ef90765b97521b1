"""Dropping the bus messages a consumer has already handled, by their operation id.

Why: the publisher is at-least-once.  After a restart, a failover to a standby matchengine or a
rebuilt Kafka producer it publishes again from its durable mark, which may be below what was
already delivered (bus/mark.py); consumers must not push or count those messages twice.
marketprice skips deals by deal id (marketprice/state.py); accessws's order and balance
pushes have no such id, so they go through a :class:`ReplayFilter` per topic.

The rule, for one topic read in order: operation ids only grow, and an operation's messages on
one topic are published together and are pairwise different (each names its own order, deal
or balance change).  So a message is a repeat when its operation id is below the newest one
seen, or equal to it with a body already seen for that operation.  Only the newest
operation's bodies are kept.  Messages without an id (published by an original ViaBTC
matchengine) always pass.

Messages of the in-process bus (those carrying their event, whose body is written only when
read: ``bus.messages.LazyMessage``) are told apart by offset instead: that bus's offsets are
stable (a message published again gets back the offset it had, bus/memory.py), so a repeat is
a message at an offset already seen; comparing bodies would write every body.
"""

from __future__ import annotations

from exchange_server.bus.base import Message


class ReplayFilter:
    def __init__(self) -> None:
        #: the newest operation id seen (0: none yet)
        self.last_oper_id = 0
        self._bodies: set[bytes] = set()
        #: the newest offset seen of a message carrying its event (in-process bus)
        self.last_offset = -1
        #: messages dropped as repeats since start
        self.duplicates = 0

    def fresh(self, batch: list[Message]) -> list[Message]:
        """The messages of ``batch`` not seen before, in order."""
        if batch:
            first, last = batch[0], batch[-1]
            if (first.event is not None and first.offset > self.last_offset
                    and last.oper_id is not None):
                # in-process, all after the newest offset seen (offsets ascend in a batch):
                # the usual case, without a look at each message
                self._passed_at(last.offset, last.oper_id)
                return batch
        out: list[Message] = []
        for msg in batch:
            if self._is_new(msg):
                out.append(msg)
            else:
                self.duplicates += 1
        return out

    def _is_new(self, msg: Message) -> bool:
        oper_id = msg.oper_id
        if oper_id is None:
            return True
        if msg.event is not None:
            if msg.offset <= self.last_offset:
                return False
            self._passed_at(msg.offset, oper_id)
            return True
        if oper_id > self.last_oper_id:
            self.last_oper_id = oper_id
            self._bodies = {msg.value}
            return True
        if oper_id < self.last_oper_id or msg.value in self._bodies:
            return False
        self._bodies.add(msg.value)
        return True

    def _passed_at(self, offset: int, oper_id: int) -> None:
        """An in-process message (told by offset) passed at ``offset``: the newest seen."""
        self.last_offset = offset
        if oper_id > self.last_oper_id:
            self.last_oper_id = oper_id
            self._bodies = set()
