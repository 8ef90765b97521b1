"""alertcenter: collects the services' FATAL alert lines into the Redis list ``alert:message``.

Alerts arrive on the ``svr.bind`` addresses (UDP datagrams, TCP or unix stream connections) as
lines: the 20-byte magic ``373d26968a5a2b698045``, the text ``<host>: <message>``, ``\\n``.  A
CR before the LF is stripped and the magic removed; the text is RPUSHed to ``alert:message``
(storage.md 4).

As the original: on a stream connection, a line of 20 bytes or less, a line without the magic
or more than ``max_pkg_size`` bytes without a newline closes the connection.  Decisions: every
line of a datagram is taken (the original reads only the first), bad lines in a datagram are
dropped with a log line, and a datagram larger than ``max_pkg_size`` is dropped.

Unlike the original (which connects to Redis for each alert and loses it when Redis is down),
alerts wait in a bounded in-memory queue (``buffer_limit``, oldest dropped first) and are
pushed in order, in batches, retried with back-off while Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from exchange_server.alertcenter.config import AlertCenterConfig, RedisConfig
from exchange_server.rpc.addr import SockAddr, bound_addresses, parse_sock_addr

log = logging.getLogger("exchange_server.alertcenter")

MAGIC = b"373d26968a5a2b698045"
ALERT_KEY = "alert:message"
BATCH = 100
RETRY_MIN = 0.2
RETRY_MAX = 5.0
REDIS_TIMEOUT = 2.0


class AlertLineError(ValueError):
    """A line that is not an alert (the stream it came on is closed)."""


def parse_line(line: bytes) -> bytes:
    """One line including its ``\\n`` -> the alert text."""
    if len(line) <= len(MAGIC):
        raise AlertLineError("line too short")
    if not line.startswith(MAGIC):
        raise AlertLineError("bad magic")
    text = line[len(MAGIC):-1]
    if text.endswith(b"\r"):
        text = text[:-1]
    return text


class LineSplitter:
    """Stream decoder: complete alert lines out of arbitrary chunks."""

    def __init__(self, max_pkg_size: int) -> None:
        self.buf = bytearray()
        self.max_pkg_size = max_pkg_size

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        buf += data
        texts = []
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            texts.append(parse_line(bytes(buf[start:end + 1])))
            start = end + 1
        if start:
            del buf[:start]
        if len(buf) >= self.max_pkg_size:
            raise AlertLineError(f"no newline within max_pkg_size ({self.max_pkg_size}) bytes")
        return texts


def make_redis(cfg: RedisConfig, timeout: float = REDIS_TIMEOUT) -> aioredis.Redis:
    """A client for the configured Redis: directly, or the Sentinel master ``cfg.name``.

    One immediate retry (a pooled connection that the server dropped); longer outages are
    the push loop's business (it keeps the alerts and backs off)."""
    if cfg.name is not None:
        sentinel = Sentinel(cfg.addr, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cast(aioredis.Redis, sentinel.master_for(
            cfg.name, db=cfg.db, password=cfg.password, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)))
    host, port = cfg.addr[0]
    return aioredis.Redis(host=host, port=port, db=cfg.db, password=cfg.password,
                          socket_timeout=timeout, socket_connect_timeout=timeout,
                          retry=Retry(NoBackoff(), 1))


class _StreamConn(asyncio.Protocol):
    def __init__(self, center: AlertCenter) -> None:
        self.center = center
        self.splitter = LineSplitter(center.max_pkg_size)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else f"unix:{peer or '?'}"
        self.center._conns.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            texts = self.splitter.feed(data)
        except AlertLineError as e:
            log.error("peer: %s error: decode msg error: %s", self.peer, e)
            assert self.transport is not None
            self.transport.abort()
            return
        for text in texts:
            self.center.submit(text)

    def connection_lost(self, exc: Exception | None) -> None:
        self.center._conns.discard(self)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, center: AlertCenter) -> None:
        self.center = center

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) > self.center.max_pkg_size:
            log.error("peer: %s error: datagram of %d bytes exceeds max_pkg_size", addr, len(data))
            return
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                log.error("peer: %s error: alert without newline dropped", addr)
                continue
            try:
                self.center.submit(parse_line(line))
            except AlertLineError as e:
                log.error("peer: %s error: decode msg error: %s", addr, e)

    def error_received(self, exc: Exception) -> None:
        log.error("udp error: %s", exc)


class AlertCenter:
    def __init__(self, binds: Iterable[str], max_pkg_size: int, redis_client: aioredis.Redis,
                 buffer_limit: int = 10_000, key: str = ALERT_KEY) -> None:
        self.binds = [parse_sock_addr(b) for b in binds]
        for addr in self.binds:
            if addr.kind not in ("tcp", "udp", "stream"):
                raise ValueError(f"{addr}: not supported by the alertcenter")
        self.max_pkg_size = max_pkg_size
        self.redis = redis_client
        self.buffer_limit = max(1, buffer_limit)
        self.key = key
        self.queue: deque[bytes] = deque()
        self._inflight: list[bytes] = []
        self.received = 0
        self.pushed = 0
        self.dropped = 0
        self._wakeup = asyncio.Event()
        self._pusher: asyncio.Task[None] | None = None
        self._servers: list[tuple[SockAddr, asyncio.AbstractServer]] = []
        self._endpoints: list[tuple[SockAddr, asyncio.DatagramTransport]] = []
        self._conns: set[_StreamConn] = set()
        self._paths: list[str] = []
        self._redis_down_since: float | None = None
        self._drop_logged = 0.0

    @classmethod
    def from_config(cls, cfg: AlertCenterConfig) -> AlertCenter:
        return cls(cfg.svr.bind, cfg.svr.max_pkg_size, make_redis(cfg.redis), cfg.buffer_limit)

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for addr in self.binds:
                if addr.kind == "tcp":
                    server = await loop.create_server(lambda: _StreamConn(self), addr.host or None,
                                                      addr.port, reuse_address=True)
                    self._servers.append((addr, server))
                elif addr.kind == "stream":
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(addr.path)
                    server = await loop.create_unix_server(lambda: _StreamConn(self), addr.path)
                    with contextlib.suppress(OSError):
                        os.chmod(addr.path, 0o777)
                    self._paths.append(addr.path)
                    self._servers.append((addr, server))
                else:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _Datagrams(self), local_addr=(addr.host, addr.port))
                    self._endpoints.append((addr, transport))
                log.info("alertcenter: listening on %s", addr)
        except BaseException:
            await self._close_listeners()
            raise
        self._pusher = asyncio.create_task(self._push_loop())

    @property
    def addresses(self) -> list[str]:
        """Bound addresses with real ports (tests bind port 0)."""
        return bound_addresses(self._servers, self._endpoints)

    async def _close_listeners(self) -> None:
        for _, server in self._servers:
            server.close()
        self._servers.clear()
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.close()
        for _, transport in self._endpoints:
            transport.close()
        self._endpoints.clear()
        for path in self._paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._paths.clear()

    async def stop(self, flush_timeout: float = 3.0) -> None:
        """Stop listening, push what is queued (for up to ``flush_timeout`` s), close Redis."""
        await self._close_listeners()
        if self.queue and self._pusher is not None and not self._pusher.done():
            deadline = time.monotonic() + flush_timeout
            while self.queue and time.monotonic() < deadline:
                self._wakeup.set()
                await asyncio.sleep(0.05)
        if self.queue:
            log.error("alertcenter: %d alerts not pushed at stop", len(self.queue))
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
            self._pusher = None
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    # -- alerts ---------------------------------------------------------------------------------

    @property
    def redis_down(self) -> bool:
        """True from a failed push until the next successful one."""
        return self._redis_down_since is not None

    def backlog(self) -> list[bytes]:
        """Alerts not yet in Redis, oldest first (the batch being pushed, then the queue)."""
        return self._inflight + list(self.queue)

    def submit(self, text: bytes) -> None:
        log.info("alert message: %s", text.decode("utf-8", "replace"))
        self.received += 1
        self.queue.append(text)
        self._trim()
        self._wakeup.set()

    def _trim(self) -> None:
        over = len(self.queue) - self.buffer_limit
        if over > 0:
            for _ in range(over):
                self.queue.popleft()
            self.dropped += over
            now = time.monotonic()
            if now - self._drop_logged >= 10.0:
                self._drop_logged = now
                log.error("alertcenter: buffer full (%d alerts): oldest dropped, %d in all",
                          self.buffer_limit, self.dropped)

    async def _push_loop(self) -> None:
        delay = RETRY_MIN
        while True:
            if not self.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))]
            self._inflight = batch
            error: Exception | None = None
            try:
                await self.redis.rpush(self.key, *batch)
            except (RedisError, OSError, TimeoutError) as e:
                error = e
            finally:
                self._inflight = []
                if sys.exc_info()[0] is not None or error is not None:
                    self.queue.extendleft(reversed(batch))
            if error is not None:
                self._trim()
                if self._redis_down_since is None:
                    self._redis_down_since = time.monotonic()
                    log.error("alertcenter: RPUSH %s failed, alerts kept in memory: %s",
                              self.key, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self._redis_down_since is not None:
                log.warning("alertcenter: Redis reachable again after %.1f s",
                            time.monotonic() - self._redis_down_since)
                self._redis_down_since = None
            delay = RETRY_MIN
            self.pushed += len(batch)
