"""One client connection: what it subscribed to, who it is, and its way out.

Sending never waits.  A frame goes straight to the connection's transport; what the client has
not taken yet stays in the transport's buffer, and once that buffer holds more than
``send_buffer_limit`` bytes the client is too slow (or gone) and the connection is dropped.
So a notification is serialised once, framed once, and written to each subscriber without a
task switch, and a stuck client costs at most its buffer limit and never delays the others.

Dropping only closes the transport; the connection's subscriptions are removed by its handler
when it sees the close (a moment later, never in the middle of a broadcast that is iterating
over subscribers).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from exchange_server.accessws.protocol import text_frame

log = logging.getLogger("exchange_server.accessws")

_ids = itertools.count(1)


class Connection:
    __slots__ = (
        "id", "transport", "remote", "send_limit", "closed", "user_id", "source",
        "kline", "depth", "price", "state", "today", "deals", "orders", "assets",
        "last_active", "tokens", "token_time", "pending", "waiter", "dropped",
    )

    def __init__(self, transport: asyncio.Transport, remote: str, send_limit: int,
                 now: float, burst: float) -> None:
        self.id = next(_ids)
        self.transport = transport
        self.remote = remote
        self.send_limit = send_limit
        self.closed = False
        #: why the server dropped it ("" if it did not)
        self.dropped = ""
        #: 0 until server.auth / server.sign succeeded
        self.user_id = 0
        self.source: str | None = None
        # market-data subscriptions: one key, or a list of markets (None: nothing)
        self.kline: tuple[str, int] | None = None
        self.depth: tuple[str, int, str] | None = None
        self.price: list[str] | None = None
        self.state: list[str] | None = None
        self.today: list[str] | None = None
        self.deals: list[str] | None = None
        # user subscriptions (only while authenticated)
        self.orders: set[str] | None = None
        self.assets: dict[str, None] | None = None
        self.last_active = now
        # request rate limit (token bucket) and requests waiting for a backend
        self.tokens = burst
        self.token_time = now
        self.pending = 0
        self.waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.remote} user {self.user_id}>"

    def send(self, body: bytes) -> None:
        """Send one JSON text message."""
        self.send_frame(text_frame(body))

    def send_frame(self, frame: bytes) -> None:
        """Send an already framed message (shared by every subscriber of a broadcast)."""
        if self.closed:
            return
        transport = self.transport
        if transport.is_closing():
            self.closed = True
            return
        transport.write(frame)
        if transport.get_write_buffer_size() > self.send_limit:
            self.drop("send buffer full (client too slow)")

    def drop(self, reason: str, quiet: bool = False) -> None:
        """Close at once, discarding whatever is not sent yet."""
        if self.closed:
            return
        self.closed = True
        self.dropped = reason
        if not quiet:
            log.info("connection %d from %s dropped: %s", self.id, self.remote, reason)
        self.transport.abort()

    def close(self) -> None:
        """Close after what is buffered has been sent; at once if the client is not taking
        what is buffered (an idle client may be a dead one)."""
        if self.closed:
            return
        self.closed = True
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    # -- requests waiting for a backend -----------------------------------------------------------

    def request_done(self, _: Any = None) -> None:
        self.pending -= 1
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
