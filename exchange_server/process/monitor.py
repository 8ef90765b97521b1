"""The ``monitor`` listener: accepts connections and ignores what they send (a health probe)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable

from exchange_server.rpc.addr import SockAddr, bound_addresses, parse_sock_addr

log = logging.getLogger("exchange_server.process")


class _Discard(asyncio.Protocol):
    def __init__(self, owner: MonitorServer) -> None:
        self.owner = owner
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.owner._conns.add(self)

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._conns.discard(self)


class MonitorServer:
    def __init__(self) -> None:
        self._servers: list[tuple[SockAddr, asyncio.AbstractServer]] = []
        self._paths: list[str] = []
        self._conns: set[_Discard] = set()

    async def start(self, binds: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        for text in binds:
            addr = parse_sock_addr(text)
            if addr.kind == "tcp":
                server = await loop.create_server(lambda: _Discard(self), addr.host or None, addr.port,
                                                  reuse_address=True)
            elif addr.kind == "stream":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(addr.path)
                server = await loop.create_unix_server(lambda: _Discard(self), addr.path)
                self._paths.append(addr.path)
            else:
                raise ValueError(f"{addr}: the monitor listens on tcp@ or stream@ only")
            self._servers.append((addr, server))
            log.info("monitor: listening on %s", addr)

    @property
    def addresses(self) -> list[str]:
        """Bound addresses with real ports (tests bind port 0)."""
        return bound_addresses(self._servers)

    async def stop(self) -> None:
        for _, server in self._servers:
            server.close()
        self._servers.clear()
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.close()
        self._conns.clear()
        for path in self._paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._paths.clear()
