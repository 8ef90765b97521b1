"""Accepting a WebSocket connection the way the original does (websocket.md 1).

Why apart from the server: these are pure checks on a request (and one socket option), with no
state of the gateway, so they are read and tested on their own.  A handshake that fails any
check is not answered: the server closes the TCP connection without an HTTP response, as the
original does.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket

from aiohttp import web

from exchange_server.accessws.config import WsSvrConfig

log = logging.getLogger("exchange_server.accessws")

_PROTOCOL_SPLIT = re.compile(r"[,\s]+")

#: Proxy headers that carry the client's address, in the order they are believed.
_PROXY_HEADERS = ("X-Connecting-IP", "X-Forwarded-For", "X-Proxy-IP", "X-Real-IP")


def client_ip(request: web.BaseRequest) -> str:
    """The client's address as the original logs it (proxy headers first)."""
    headers = request.headers
    for name in _PROXY_HEADERS:
        value = headers.get(name)
        if value:
            return value.split(",")[0].strip()
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and peer:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "?")


def handshake_ok(request: web.BaseRequest, ws: web.WebSocketResponse, svr: WsSvrConfig) -> bool:
    """Whether to upgrade; sets the answer's ``Sec-WebSocket-Protocol`` when one was offered."""
    if request.method != "GET" or request.version < (1, 1):
        return False
    headers = request.headers
    if not headers.get("Host"):
        return False
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return False
    if svr.origin and not headers.get("Origin", "").endswith(svr.origin):
        return False
    offered = headers.get("Sec-WebSocket-Protocol")
    if offered is not None:
        if svr.protocol not in _PROTOCOL_SPLIT.split(offered.strip()):
            return False
        ws.headers["Sec-WebSocket-Protocol"] = svr.protocol
    return bool(ws.can_prepare(request).ok)


def set_buffer_sizes(transport: asyncio.BaseTransport, svr: WsSvrConfig) -> None:
    """SO_RCVBUF / SO_SNDBUF from ``svr.read_mem`` / ``svr.write_mem`` (0: the system's)."""
    if not (svr.read_mem or svr.write_mem):
        return
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        if svr.read_mem:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, svr.read_mem)
        if svr.write_mem:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, svr.write_mem)
    except OSError as e:
        log.warning("cannot set socket buffer sizes: %s", e)
