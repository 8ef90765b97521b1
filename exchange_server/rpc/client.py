"""RPC client: a :class:`~exchange_server.common.backend.Backend` reaching a service's process.

One persistent connection at a time (``tcp@ip:port`` or ``stream@/path``).  Requests are
pipelined: each gets the next sequence number, is written at once, and its reply is matched by
sequence, in whatever order the server answers.  ``call`` gives the reply body bytes, which the
gateways pass through unchanged.

As the original's rpc client does:

* a heartbeat (command 0, TLV body with the heartbeat timeout) goes out every second; if
  nothing was heard from the server for ``heartbeat_timeout`` (default 3 s, clamped 2..600) the
  connection is closed and re-opened;
* with several addresses, a closed or failed connection moves on to the next address at once;
  after a whole round of addresses (or with a single address) it waits before trying again.
  The wait starts at 0.1 s and doubles on each failed round up to ``reconnect_timeout``
  (default 1 s, the original's fixed delay), so a restarted service is found again quickly;
* ``connected()`` is False while no connection is up (the gateway answers without calling);
* sequence numbers come from one counter per process (1, 2, ... wrapping to 1 after 2**32 - 1),
  shared by every client: the original's accesshttp numbers the requests of a worker with one
  counter whatever service they go to, so the packets it sends (and ours) carry the same
  header fields.  A client may be given its own :class:`SequenceCounter`.

Requests in flight when the connection drops fail with :class:`ConnectionError`.  A request
with no reply within ``timeout`` (if one is set; callers may also wrap ``call`` in
``asyncio.wait_for``) raises :class:`TimeoutError` and its late reply is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from exchange_server.common import exactjson, jsonfmt
from exchange_server.common.errors import GENERIC_MESSAGES, INVALID_ARGUMENT, METHOD_NOT_FOUND
from exchange_server.rpc.addr import SockAddr, parse_sock_addr
from exchange_server.rpc.commands import METHOD_COMMANDS
from exchange_server.rpc.protocol import (
    CMD_HEARTBEAT,
    HEARTBEAT_INTERVAL,
    TYPE_PUSH,
    TYPE_REQUEST,
    Decoder,
    ProtocolError,
    clamp_heartbeat_timeout,
    heartbeat_body,
    pack,
)

log = logging.getLogger("exchange_server.rpc.client")

#: First wait after a failed round of addresses; doubles up to reconnect_timeout.
RECONNECT_MIN_DELAY = 0.1
DEFAULT_RECONNECT_TIMEOUT = 1.0
_SEQ_MAX = 0xFFFFFFFF
_UNSET: Any = object()


class SequenceCounter:
    """Request sequence numbers: 1, 2, ..., 2**32 - 1, then 1 again (0 is the heartbeat's)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        value = self.value
        self.value = value = 1 if value >= _SEQ_MAX else value + 1
        return value


#: The process's counter, shared by every client that is not given its own.
PROCESS_SEQUENCE = SequenceCounter()


class _Connection(asyncio.Protocol):
    def __init__(self, client: RpcClient, addr: SockAddr) -> None:
        self.client = client
        self.addr = addr
        self.decoder = Decoder(client.max_pkg_size)
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_heard = time.monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.last_heard = time.monotonic()
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, tuple) and sockname == transport.get_extra_info("peername"):
            # TCP self-connect (a local port in the ephemeral range with nothing listening)
            log.error("%s: %s: connected to itself, closing", self.client.name, self.addr)
            self.abort()

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.decoder.feed(data)
        except ProtocolError as e:
            log.error("%s: peer %s: decode msg error: %s", self.client.name, self.addr, e)
            self.abort()
            return
        self.last_heard = time.monotonic()
        pending = self.pending
        for packet in packets:
            if packet.command == CMD_HEARTBEAT:
                continue
            if packet.pkg_type == TYPE_REQUEST:
                continue  # not a reply (a peer that echoes what it gets)
            if packet.pkg_type == TYPE_PUSH:
                log.debug("%s: push packet, command %d ignored", self.client.name, packet.command)
                continue
            fut = pending.pop(packet.sequence, None)
            if fut is not None and not fut.done():
                fut.set_result(packet.body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        pending, self.pending = self.pending, {}
        if pending:
            error = ConnectionError(f"{self.client.name}: connection to {self.addr} lost")
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()


class RpcClient:
    def __init__(self, name: str, addrs: list[str], max_pkg_size: int = 10240,
                 timeout: float | None = None, heartbeat_timeout: float = 0.0,
                 reconnect_timeout: float = 0.0, commands: Mapping[str, int] | None = None,
                 connect_timeout: float | None = None,
                 sequence: SequenceCounter | None = None) -> None:
        if not addrs:
            raise ValueError(f"{name}: at least one address is required")
        self.name = name
        self.addrs = [parse_sock_addr(a) for a in addrs]
        for addr in self.addrs:
            if addr.kind not in ("tcp", "stream"):
                raise ValueError(f"{name}: {addr}: the rpc client connects to tcp@ or stream@ only")
        self.max_pkg_size = max_pkg_size
        self.timeout = timeout
        self.heartbeat_timeout = clamp_heartbeat_timeout(heartbeat_timeout)
        self.reconnect_timeout = reconnect_timeout if reconnect_timeout > 0 else DEFAULT_RECONNECT_TIMEOUT
        self.connect_timeout = connect_timeout if connect_timeout else max(self.reconnect_timeout, 1.0)
        self.commands = dict(commands) if commands is not None else dict(METHOD_COMMANDS)
        self._conn: _Connection | None = None
        self._sequence = sequence if sequence is not None else PROCESS_SEQUENCE
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._connected_event: asyncio.Event | None = None
        self._heartbeat = heartbeat_body(self.heartbeat_timeout)
        #: how many connections were made (tests, metrics)
        self.connects = 0

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background (returns at once)."""
        if self._runner is None:
            self._closing = False
            self._connected_event = asyncio.Event()
            self._runner = asyncio.create_task(self._run(), name=f"rpc-client-{self.name}")

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until a connection is up; False if none came within ``timeout``."""
        if self.connected():
            return True
        assert self._connected_event is not None, "start() first"
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError:
            return False
        return self.connected()

    async def close(self) -> None:
        self._closing = True
        runner, self._runner = self._runner, None
        conn = self._conn
        if conn is not None:
            conn.abort()
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._conn = None

    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed

    @property
    def peer(self) -> str | None:
        """The address of the current connection."""
        conn = self._conn
        return str(conn.addr) if conn is not None and not conn.closed else None

    # -- requests -------------------------------------------------------------------------------

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        """The Backend protocol: the service's reply body for ``method``."""
        command = self.commands.get(method)
        if command is None:
            return jsonfmt.error_body(METHOD_NOT_FOUND, GENERIC_MESSAGES[METHOD_NOT_FOUND], req_id)
        try:
            body = exactjson.dumps(params)
        except ValueError:
            # nested deeper than any service accepts (or not JSON): refused like there
            return jsonfmt.error_body(INVALID_ARGUMENT, GENERIC_MESSAGES[INVALID_ARGUMENT], req_id)
        return await self.request(command, body, req_id or 0)

    async def request(self, command: int, body: bytes, req_id: int = 0,
                      timeout: float | None = _UNSET) -> bytes:
        """Send one request packet and wait for its reply body."""
        conn = self._conn
        if conn is None or conn.closed:
            raise ConnectionError(f"{self.name}: not connected")
        pending = conn.pending
        seq = self._sequence.next()
        while seq in pending:
            seq = self._sequence.next()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        pending[seq] = fut
        if timeout is _UNSET:
            timeout = self.timeout
        handle = loop.call_later(timeout, _expire, fut) if timeout is not None else None
        try:
            conn.write(pack(command, TYPE_REQUEST, seq, req_id, body))
            return await fut
        finally:
            if handle is not None:
                handle.cancel()
            if pending.get(seq) is fut:
                del pending[seq]

    # -- connection management ------------------------------------------------------------------

    async def _open(self, addr: SockAddr) -> _Connection:
        loop = asyncio.get_running_loop()
        if addr.kind == "tcp":
            _, proto = await loop.create_connection(lambda: _Connection(self, addr), addr.host,
                                                    addr.port)
        else:
            _, proto = await loop.create_unix_connection(lambda: _Connection(self, addr),
                                                         addr.path)
        return proto

    async def _run(self) -> None:
        count = len(self.addrs)
        index = 0
        delay = RECONNECT_MIN_DELAY
        quiet: set[int] = set()
        while not self._closing:
            addr = self.addrs[index]
            try:
                conn = await asyncio.wait_for(self._open(addr), self.connect_timeout)
            except Exception as e:  # refused, unreachable, timed out, bad path...
                if index not in quiet:
                    log.error("%s: connect to %s failed: %s", self.name, addr, e or "timeout")
                    quiet.add(index)
                conn = None
            if conn is not None:
                quiet.discard(index)
                delay = RECONNECT_MIN_DELAY
                await self._serve(conn)
                if self._closing:
                    break
                log.error("connection %s -> %s close", self.name, addr)
            if count > 1:
                index = (index + 1) % count
                if index != 0:
                    continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_timeout)

    async def _serve(self, conn: _Connection) -> None:
        self._conn = conn
        self.connects += 1
        log.info("%s: connected to %s", self.name, conn.addr)
        assert self._connected_event is not None
        self._connected_event.set()
        beat = asyncio.create_task(self._heartbeats(conn))
        try:
            await asyncio.shield(conn.lost)
        except asyncio.CancelledError:
            conn.abort()
            raise
        finally:
            beat.cancel()
            self._connected_event.clear()
            if self._conn is conn:
                self._conn = None

    async def _heartbeats(self, conn: _Connection) -> None:
        heartbeat = pack(CMD_HEARTBEAT, TYPE_REQUEST, 0, 0, self._heartbeat)
        while not conn.closed:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            if conn.closed:
                return
            if time.monotonic() - conn.last_heard > self.heartbeat_timeout:
                log.error("%s: peer %s: heartbeat timeout", self.name, conn.addr)
                conn.abort()
                return
            conn.write(heartbeat)


def _expire(fut: asyncio.Future[bytes]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())
