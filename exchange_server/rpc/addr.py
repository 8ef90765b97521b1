"""Socket addresses in the original's config syntax (nw_sock_cfg_parse).

``tcp@ip:port``, ``udp@ip:port``, ``stream@/unix/path``, ``dgram@/unix/path``,
``seqpacket@/unix/path``.  The type is case-insensitive.  IPv6 hosts may be written bare
(``tcp@::1:7316``, split at the last colon) or bracketed (``tcp@[::1]:7316``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: kind -> (family, socket type)
KINDS = {
    "tcp": ("inet", "stream"),
    "udp": ("inet", "dgram"),
    "stream": ("unix", "stream"),
    "dgram": ("unix", "dgram"),
    "seqpacket": ("unix", "seqpacket"),
}


@dataclass(frozen=True)
class SockAddr:
    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return KINDS[self.kind][0] == "unix"

    def __str__(self) -> str:
        if self.is_unix:
            return f"{self.kind}@{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}@{host}:{self.port}"


def parse_sock_addr(text: str) -> SockAddr:
    """Parse ``kind@address``; raises ValueError with a readable message."""
    kind, sep, rest = text.partition("@")
    if not sep:
        raise ValueError(f"{text!r}: expected type@address (tcp@ip:port, stream@/path, ...)")
    kind = kind.lower()
    if kind not in KINDS:
        raise ValueError(f"{text!r}: unknown socket type {kind!r}")
    if KINDS[kind][0] == "unix":
        if not rest or len(rest.encode()) >= 108:
            raise ValueError(f"{text!r}: bad unix socket path")
        return SockAddr(kind, path=rest)
    host, port = parse_host_port(rest, text)
    return SockAddr(kind, host=host, port=port)


def parse_host_port(rest: str, text: str | None = None) -> tuple[str, int]:
    """``ip:port`` (or ``[ipv6]:port``) -> (host, port)."""
    shown = text if text is not None else rest
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{shown!r}: expected ip:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{shown!r}: port out of range")
    return host, port


def bound_addresses(servers: Iterable[tuple[SockAddr, Any]],
                    endpoints: Iterable[tuple[SockAddr, Any]] = ()) -> list[str]:
    """The addresses listeners are bound to, with the real port where the config said 0
    (``servers``: (addr, asyncio Server); ``endpoints``: (addr, datagram transport))."""
    result = []
    for addr, server in servers:
        sockets = getattr(server, "sockets", None)
        if addr.kind == "tcp" and sockets:
            host, port = sockets[0].getsockname()[:2]
            result.append(str(SockAddr("tcp", host, port)))
        else:
            result.append(str(addr))
    for _, transport in endpoints:
        host, port = transport.get_extra_info("sockname")[:2]
        result.append(str(SockAddr("udp", host, port)))
    return result
