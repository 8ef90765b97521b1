"""HttpProtocol._respond: a keep-alive JSON reply (every order placed) is written from a head
made once a second (``_DateCache.head``); its bytes are those of the general path."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from exchange_server.accesshttp import server
from exchange_server.accesshttp.server import AccessHttp, HttpProtocol


class Kept(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = b""

    def write(self, data: Any) -> None:
        self.data += bytes(data)

    def writelines(self, list_of_data: Any) -> None:
        self.data += b"".join(list_of_data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None


def general(status: int, body: bytes, close: bool, content_type: bytes) -> bytes:
    """What the general path writes (the text before the fast path was added)."""
    head = b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %d\r\n" % (
        status, server.REASONS[status], server._date.get(), len(body))
    if body:
        head += b"Content-Type: %s\r\n" % content_type
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


@pytest.mark.parametrize(("status", "body", "close", "content_type"), [
    (200, b'{"error": null, "result": {}, "id": 1}', False, b"application/json"),
    (504, b'{"error": {"code": 5}, "id": 2}', False, b"application/json"),
    (200, b'{"error": null, "result": {}, "id": 1}', True, b"application/json"),
    (200, b"", False, b"application/json"),
    (200, b"<html></html>", False, b"text/html"),
])
async def test_replies_are_the_general_paths_bytes(status: int, body: bytes, close: bool,
                                                   content_type: bytes) -> None:
    protocol = HttpProtocol(AccessHttp({}))
    transport = Kept()
    protocol.transport = transport
    for _ in range(2):  # the head made, then the head remembered
        transport.data = b""
        protocol._closing = False
        protocol._respond(status, body, close=close, content_type=content_type)
        assert transport.data == general(status, body, close, content_type)


async def test_the_remembered_heads_follow_the_date() -> None:
    cache = server._DateCache()
    cache.second = 0  # a second long gone: the next read makes every text again
    cache.heads = {200: b"HTTP/1.1 200 OK\r\nDate: Thu, 01 January 1970 00:00:00 GMT\r\n"}
    assert cache.head(200) == b"HTTP/1.1 200 OK\r\nDate: %s\r\n" % cache.get()
    assert cache.head(504) == b"HTTP/1.1 504 Gateway Timeout\r\nDate: %s\r\n" % cache.get()
