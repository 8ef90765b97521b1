"""What aiohttp leaves open on accessws's listener: half-done handshakes, too many connections,
and unmasked client frames.

Why: aiohttp's defaults suit a web site, not a public WebSocket gateway.  A TCP connection that
never completes its HTTP upgrade is held for aiohttp's keep-alive time (an hour); nothing bounds
how many connections a process holds (each costs a file descriptor and buffers); and aiohttp's
frame reader unmasks a frame when the client masked it but accepts unmasked ones, which
RFC 6455 section 5.1 forbids ("a server MUST close the connection upon receiving a frame that is
not masked", status 1002).  So:

* ``LimitedServer`` is aiohttp's low-level server with two bounds: a connection over
  ``max_connections`` (counted from the TCP accept, handshakes under way included) is closed at
  once, and one that has not sent its complete upgrade request within ``handshake_timeout``
  seconds is closed (aiohttp's first-request keep-alive timer, which runs until a complete
  request has arrived however slowly its bytes trickle in).
* ``MaskGuard`` sits in front of aiohttp's frame reader.  It follows frame boundaries (headers
  only, payloads are skipped) and, at the first unmasked frame, sends a close frame with 1002
  and closes the connection at once (frames that came before it in the same read are handed
  to the reader, but their answers may not be sent any more).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import WSCloseCode, web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("exchange_server.accessws")

#: Close frame with status 1002 (protocol error): the answer to an unmasked client frame.
CLOSE_PROTOCOL_ERROR = bytes((0x88, 2)) + int(WSCloseCode.PROTOCOL_ERROR).to_bytes(2, "big")

#: Size of the extended payload length after the second header byte, by its 7-bit length.
_EXTENDED = {126: 2, 127: 8}


class FrameReader(Protocol):
    """What aiohttp's protocol calls on a WebSocket payload parser."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


class LimitedServer(web.Server):
    """aiohttp's low-level server, closing connections past ``max_connections`` (0: no limit)
    right after the TCP accept; ``handshake_timeout`` (0: none) bounds the upgrade request."""

    def __init__(self, handler: Any, *, max_connections: int, handshake_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(handler, keepalive_timeout=handshake_timeout, **kwargs)
        self.max_connections = max_connections
        #: connections closed because the process already held ``max_connections``
        self.refused = 0

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if self.max_connections and len(self._connections) > self.max_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("connection limit (%d) reached: %d connections refused so far",
                            self.max_connections, self.refused)
            transport.close()


class MaskGuard:
    """Feeds aiohttp's frame reader up to the first unmasked frame, then closes with 1002."""

    __slots__ = ("_inner", "_transport", "_header", "_skip", "_failed", "_on_unmasked")

    def __init__(self, inner: FrameReader, transport: asyncio.Transport,
                 on_unmasked: Callable[[], None] | None = None) -> None:
        self._inner = inner
        self._transport = transport
        self._header = bytearray()  # the current frame's header bytes seen so far
        self._skip = 0  # payload bytes of the current frame still to come
        self._failed = False
        self._on_unmasked = on_unmasked  # called once, when an unmasked frame arrives

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._failed:
            return True, b""
        bad = self._scan(data)
        if bad is None:
            return self._inner.feed_data(data)
        self._failed = True
        if bad:
            self._inner.feed_data(data[:bad])
        if self._on_unmasked is not None:
            self._on_unmasked()
        if not self._transport.is_closing():
            self._transport.write(CLOSE_PROTOCOL_ERROR)
            self._transport.close()
        self._inner.feed_eof()
        return True, b""

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def _scan(self, data: bytes) -> int | None:
        """Where in ``data`` the first unmasked frame starts (0 if it started in an earlier
        chunk), or None when every frame header in it is masked."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            start = pos - len(self._header)
            header = self._header
            while pos < end and len(header) < 2:
                header.append(data[pos])
                pos += 1
            if len(header) < 2:
                return None
            if not header[1] & 0x80:
                return max(start, 0)
            length = header[1] & 0x7F
            need = 2 + _EXTENDED.get(length, 0) + 4
            take = min(need - len(header), end - pos)
            header += data[pos:pos + take]
            pos += take
            if len(header) < need:
                return None
            if length in _EXTENDED:
                length = int.from_bytes(header[2:2 + _EXTENDED[length]], "big")
            self._skip = length
            header.clear()
        return None


class GuardedResponse(web.WebSocketResponse):
    """A WebSocketResponse whose frame reader is behind a :class:`MaskGuard`.

    aiohttp offers no hook here: this relies on ``_post_start`` and on the request handler's
    ``_message_tail`` / ``_payload_parser`` (as in aiohttp 3.14).  tests/integration/test_accessws_hardening
    fails if an aiohttp upgrade changes them."""

    def __init__(self, *, on_unmasked: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_unmasked = on_unmasked

    def _post_start(self, request: web.BaseRequest, protocol: str | None,
                    writer: Any) -> None:
        handler = request.protocol
        # bytes that came with the upgrade request: fed through the guard, not around it
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        assert request.transport is not None
        guard = MaskGuard(handler._payload_parser, request.transport, self._on_unmasked)
        handler._payload_parser = guard
        if tail:
            eof, _ = guard.feed_data(tail)
            if eof:
                handler.close()
