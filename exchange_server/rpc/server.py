"""RPC server: a service's ``call(method, params, req_id) -> bytes`` on the original's binary RPC.

Binds are the original's ``svr.bind`` strings: ``tcp@ip:port``, ``udp@ip:port`` (one packet per
datagram, the reply goes back to the sender) and ``stream@/path`` (unix stream socket; an old
socket file is removed first and the new one made world-writable, as the original does).

Each request body must be a JSON array (the params); anything else makes the server log a
hexdump and close the connection, as the original does.  The request's command number picks
the method (``commands``); the service's reply body is sent in a copy of the request header with
pkg_type = reply.  Requests on one connection are pipelined: each runs as its own task, so
replies may leave in a different order from the requests (the client matches them by
sequence).  Heartbeats (command 0) are answered with an empty body; with ``heartbeat_check``
a connection that sent no heartbeat within its announced timeout (default 3 s) is closed.

Decision (docs/compatibility.md): an unknown command gets the error reply 4 "method not found"
instead of the original's silence (which made the caller wait for its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast

from exchange_server.common import exactjson, jsonfmt
from exchange_server.common.errors import GENERIC_MESSAGES, INTERNAL_ERROR, METHOD_NOT_FOUND
from exchange_server.rpc.addr import SockAddr, bound_addresses, parse_sock_addr
from exchange_server.rpc.protocol import (
    CMD_HEARTBEAT,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TIMEOUT_DEFAULT,
    Decoder,
    Packet,
    ProtocolError,
    decode_datagram,
    hexdump,
    parse_heartbeat_body,
)

log = logging.getLogger("exchange_server.rpc.server")

#: Requests of one connection running at once before the server stops reading from it.
MAX_INFLIGHT = 4096
_SIGN = 1 << 63
_WRAP = 1 << 64


class RpcService(Protocol):
    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes: ...


def signed_req_id(req_id: int) -> int:
    """The header's u64 req_id as the signed integer the original writes into ``"id"``."""
    return req_id - _WRAP if req_id >= _SIGN else req_id


class _Peer:
    """Where replies go: a stream connection or a datagram sender."""

    closed = False
    name = "?"

    def send(self, data: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        pass

    def request_started(self) -> None:
        pass

    def request_done(self) -> None:
        pass


class _StreamConnection(asyncio.Protocol, _Peer):
    def __init__(self, server: RpcServer) -> None:
        self.server = server
        self.decoder = Decoder(server.max_pkg_size)
        self.transport: asyncio.Transport | None = None
        self.last_heartbeat = time.monotonic()
        self.heartbeat_timeout = HEARTBEAT_TIMEOUT_DEFAULT
        self.inflight = 0
        self.closed = False
        self._write_paused = False
        self._read_paused = False
        self.name = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else f"unix:{peer or '?'}"
        self.server._connections.add(self)
        log.debug("%s: new connection from %s", self.server.name, self.name)

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.decoder.feed(data)
        except ProtocolError as e:
            log.error("%s: peer %s: decode msg error: %s", self.server.name, self.name, e)
            self.close()
            return
        on_packet = self.server._on_packet
        for packet in packets:
            if self.closed:
                return
            on_packet(self, packet)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._connections.discard(self)
        log.debug("%s: connection %s closed", self.server.name, self.name)

    def send(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    # flow control: stop reading while too many requests run or the peer does not read replies
    def request_started(self) -> None:
        self.inflight += 1
        if self.inflight >= self.server.max_inflight:
            self._update_reading()

    def request_done(self) -> None:
        self.inflight -= 1
        if self._read_paused:
            self._update_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        if self.transport is None or self.closed:
            return
        if self._read_paused:
            limit = self.server.max_inflight // 2
        else:
            limit = self.server.max_inflight
        pause = self._write_paused or self.inflight >= limit
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()


class _DatagramPeer(_Peer):
    def __init__(self, transport: asyncio.DatagramTransport, addr: Any) -> None:
        self.transport = transport
        self.addr = addr
        self.name = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)

    def send(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.sendto(data, self.addr)


class _DatagramEndpoint(asyncio.DatagramProtocol):
    def __init__(self, server: RpcServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        peer = _DatagramPeer(self.transport, addr)
        try:
            packet = decode_datagram(data, self.server.max_pkg_size)
        except ProtocolError as e:
            log.error("%s: peer %s: decode msg error: %s", self.server.name, peer.name, e)
            return
        self.server._on_packet(peer, packet)

    def error_received(self, exc: Exception) -> None:
        log.error("%s: udp error: %s", self.server.name, exc)


class RpcServer:
    def __init__(self, service: RpcService, commands: Mapping[int, str], max_pkg_size: int = 10240,
                 heartbeat_check: bool = True, name: str = "rpc",
                 max_inflight: int = MAX_INFLIGHT) -> None:
        self.service = service
        self.commands = dict(commands)
        self.max_pkg_size = max_pkg_size
        self.heartbeat_check = heartbeat_check
        self.name = name
        self.max_inflight = max(2, max_inflight)
        self._servers: list[tuple[SockAddr, asyncio.AbstractServer]] = []
        self._endpoints: list[tuple[SockAddr, asyncio.DatagramTransport]] = []
        self._connections: set[_StreamConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unix_paths: list[str] = []
        self._timer: asyncio.Task[None] | None = None
        self.requests = 0

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self, binds: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        try:
            for text in binds:
                addr = parse_sock_addr(text)
                await self._bind(loop, addr)
        except BaseException:
            await self.stop(grace=0)
            raise
        if self.heartbeat_check and self._timer is None:
            self._timer = asyncio.create_task(self._check_heartbeats())

    async def _bind(self, loop: asyncio.AbstractEventLoop, addr: SockAddr) -> None:
        if addr.kind == "tcp":
            server = await loop.create_server(lambda: _StreamConnection(self), addr.host or None,
                                              addr.port, reuse_address=True, backlog=1024)
            self._servers.append((addr, server))
        elif addr.kind == "stream":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(addr.path)
            server = await loop.create_unix_server(lambda: _StreamConnection(self), addr.path,
                                                   backlog=1024)
            self._unix_paths.append(addr.path)
            with contextlib.suppress(OSError):
                os.chmod(addr.path, 0o777)
            self._servers.append((addr, server))
        elif addr.kind == "udp":
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _DatagramEndpoint(self), local_addr=(addr.host, addr.port),
                reuse_port=False)
            self._endpoints.append((addr, transport))
        else:
            raise ValueError(f"{addr}: {addr.kind} binds are not supported by the rpc server")
        log.info("%s: listening on %s", self.name, addr)

    @property
    def addresses(self) -> list[str]:
        """Bound addresses with real ports (tests bind port 0)."""
        return bound_addresses(self._servers, self._endpoints)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let the running requests answer (up to ``grace`` s), then close."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        for _, server in self._servers:
            server.close()
        self._servers.clear()
        if self._tasks and grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._connections):
            conn.close()
        self._connections.clear()
        for _, transport in self._endpoints:
            transport.close()
        self._endpoints.clear()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._unix_paths.clear()
        await asyncio.sleep(0)

    # -- requests -------------------------------------------------------------------------------

    def _on_packet(self, peer: _Peer, packet: Packet) -> None:
        if packet.command == CMD_HEARTBEAT:
            self._on_heartbeat(peer, packet)
            return
        try:
            # exact: integers beyond 64 bits stay integers (they reach the log and history)
            params = exactjson.loads(packet.body, lenient_depth=True)
        except ValueError:
            params = None
        if not isinstance(params, list):
            log.error("%s: connection %s, cmd %d: decode params fail, params data:\n%s",
                      self.name, peer.name, packet.command, hexdump(packet.body))
            peer.close()
            return
        self.requests += 1
        req_id = signed_req_id(packet.req_id)
        method = self.commands.get(packet.command)
        if method is None:
            log.error("%s: from %s unknown command: %d", self.name, peer.name, packet.command)
            body = jsonfmt.error_body(METHOD_NOT_FOUND, GENERIC_MESSAGES[METHOD_NOT_FOUND], req_id)
            peer.send(packet.reply(body))
            return
        peer.request_started()
        task = asyncio.get_running_loop().create_task(self._run(peer, packet, method, params, req_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, peer: _Peer, packet: Packet, method: str, params: list[Any],
                   req_id: int) -> None:
        try:
            try:
                body = await self.service.call(method, params, req_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: %s failed, params %r", self.name, method, params)
                body = jsonfmt.error_body(INTERNAL_ERROR, GENERIC_MESSAGES[INTERNAL_ERROR], req_id)
            peer.send(packet.reply(body))
        finally:
            peer.request_done()

    def _on_heartbeat(self, peer: _Peer, packet: Packet) -> None:
        try:
            timeout = parse_heartbeat_body(packet.body)
        except ProtocolError as e:
            log.error("%s: peer %s: on_heartbeat fail: %s, data: %s", self.name, peer.name, e,
                      packet.body.hex())
            peer.close()
            return
        if isinstance(peer, _StreamConnection):
            peer.last_heartbeat = time.monotonic()
            if timeout is not None and timeout != peer.heartbeat_timeout:
                log.info("%s: peer %s update heartbeat timeout from %s to %s", self.name,
                         peer.name, peer.heartbeat_timeout, timeout)
                peer.heartbeat_timeout = timeout
        peer.send(packet.reply(b""))

    async def _check_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            now = time.monotonic()
            for conn in list(self._connections):
                if now - conn.last_heartbeat > conn.heartbeat_timeout:
                    log.error("%s: peer %s: heartbeat timeout (%.1f s)", self.name, conn.name,
                              conn.heartbeat_timeout)
                    conn.close()
                    self._connections.discard(conn)
