"""Request throttling per connection: a token bucket and a cap on requests in flight.

Why: a client must not be able to keep the gateway (or the backends behind it) busy at the
others' expense.  Each connection may send ``rate_limit`` requests per second with bursts of
``rate_burst``, and may have at most ``max_pending`` requests waiting for a backend or the auth
server.  Nothing is refused: the connection's reader just waits before reading on, so the
kernel's and aiohttp's bounded buffers push back on the client.

The bucket's state lives on the :class:`Connection` (slots, no per-connection object).
"""

from __future__ import annotations

import asyncio

from exchange_server.accessws.session import Connection


class RateLimit:
    def __init__(self, rate: float, burst: float, max_pending: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_pending = max_pending

    def take(self, conn: Connection, now: float) -> float:
        """Take one token for a request read at ``now``: seconds to wait first (0.0: none)."""
        elapsed = max(0.0, now - conn.token_time)  # token_time may be a wake-up time ahead
        tokens = min(self.burst, conn.tokens + elapsed * self.rate)
        if tokens >= 1.0:
            conn.tokens = tokens - 1.0
            conn.token_time = now
            return 0.0
        delay = (1.0 - tokens) / self.rate
        # the token that arrives after the delay is spent at once
        conn.tokens = 0.0
        conn.token_time = now + delay
        return delay

    async def slot(self, conn: Connection) -> None:
        """Wait until the connection has fewer than ``max_pending`` requests in flight (or is
        closed); :meth:`Connection.request_done` wakes it."""
        if conn.pending < self.max_pending:
            return
        loop = asyncio.get_running_loop()
        while conn.pending >= self.max_pending and not conn.closed:
            conn.waiter = loop.create_future()
            await conn.waiter

    async def admit(self, conn: Connection, now: float) -> None:
        """Both limits, for a request read at ``now``."""
        delay = self.take(conn, now)
        if delay:
            await asyncio.sleep(delay)
        await self.slot(conn)
