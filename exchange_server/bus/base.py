"""The message bus's vocabulary: topics, messages, and the two adapter interfaces.

A *transport* is the producer side of an adapter: it takes encoded messages in order and later
reports, per topic and in order, how many of them are acknowledged (durably stored by Kafka, or
committed by every durable in-process consumer).  A *reader* is the consumer side: it opens
subscriptions that yield ``Message(offset, value, oper_id)`` from a given offset.

Both adapters (Kafka in production, in-process in embedded mode) implement both interfaces, so
the publisher and the consumers (marketprice, accessws) never know which one they talk to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple, Protocol

DEALS = "deals"
ORDERS = "orders"
BALANCES = "balances"
#: The original's three topics.
TOPICS: tuple[str, str, str] = (DEALS, ORDERS, BALANCES)
#: The CoinEx fork's topic of stop orders placed, fired and cancelled (bus/messages.py).
STOPS = "stops"
#: Every topic the publisher writes, in a fixed order (index = position in per-topic tuples).
ALL_TOPICS: tuple[str, ...] = (*TOPICS, STOPS)

#: Kafka message header carrying the matchengine operation id (ASCII decimal).  Message bodies
#: stay byte-identical to the original's; consumers that care about duplicates read the header.
OPER_ID_HEADER = "oper_id"


class Message(NamedTuple):
    """One message of a topic.  ``oper_id`` is None for messages without the header (e.g.
    produced by the original C matchengine).  ``event``: on the in-process bus, the engine
    event ``value`` was written from (bus.messages), so a consumer in the same process can read
    its fields without parsing the text; None from Kafka.  There ``value`` is written from the
    event only when read (``bus.messages.LazyMessage``)."""

    offset: int
    value: bytes
    oper_id: int | None
    event: Any = None


def encode_oper_id(oper_id: int) -> bytes:
    return str(oper_id).encode()


def decode_oper_id(raw: bytes | str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


#: on_acked(topic, count): the next ``count`` messages sent on ``topic`` are acknowledged.
AckCallback = Callable[[str, int], None]
#: on_reset(): the transport lost everything in flight; the publisher must resend every
#: unacknowledged message, in order (duplicates are possible: at-least-once).
ResetCallback = Callable[[], None]


class Transport(Protocol):
    """Producer side of an adapter.  One that always takes every message may also offer
    ``send_all(topic, messages)`` (``send`` for each (oper_id, value, event), in order, the
    event being what the value was written from); the publisher then hands a topic's waiting
    messages over in one call (the in-process bus)."""

    #: True when offsets survive a restart only through the publisher's durable mark (the
    #: in-process adapter); the publisher then stores each topic's next offset with the mark.
    stable_offsets: bool

    def open(self, on_acked: AckCallback, on_reset: ResetCallback) -> None:
        """Start; called once from the event loop before the first send."""
        ...

    def send(self, topic: str, value: bytes, oper_id: int) -> bool:
        """Queue one message after every message sent before on that topic.  False means
        "cannot take it now" (local queue full, reconnecting): the caller retries later."""
        ...

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` for acknowledgements, then release resources."""
        ...


class Subscription(Protocol):
    """Messages of one topic from a start offset, oldest first."""

    def __aiter__(self) -> AsyncIterator[Message]:
        ...

    async def next_batch(self, max_messages: int = 1000) -> list[Message]:
        """Wait for at least one message, then return what is available (at most max); an
        empty list only once the subscription is closed."""
        ...

    def commit(self, offset: int) -> None:
        """The consumer has durably processed every message up to ``offset`` (inclusive).
        The in-process adapter acknowledges messages to the publisher only once every durable
        consumer committed them; for Kafka it is a no-op (consumers keep their own offsets)."""
        ...

    async def close(self) -> None:
        ...


class BusReader(Protocol):
    """Consumer side of an adapter."""

    def subscribe(self, topic: str, from_offset: int | None = None,
                  durable: str | None = None) -> Subscription:
        """Messages of ``topic`` from ``from_offset`` (None: only new messages).

        ``durable`` names a consumer whose commits hold back acknowledgement (in-process
        adapter), so a message is never forgotten before that consumer stored its effect."""
        ...


class BatchIterator:
    """``async for`` over a subscription's ``next_batch`` (shared by both adapters)."""

    _buffer: list[Message]
    _index: int

    async def next_batch(self, max_messages: int = 1000) -> list[Message]:
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self._index >= len(self._buffer):
            self._buffer = await self.next_batch()
            self._index = 0
            if not self._buffer:
                raise StopAsyncIteration
        message = self._buffer[self._index]
        self._index += 1
        return message
