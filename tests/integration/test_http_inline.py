"""The gateway's inline path (AccessHttp.call_inline): a call to a backend that answers without a
task is made as soon as it is read and its reply written when the backend gives it.  What it
must keep from the task path, over a real socket: pipelined replies in request order, 504
with code 5 after the timeout (and the late reply dropped), keep-alive after either."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from exchange_server.accesshttp.limits import HttpLimits
from exchange_server.accesshttp.server import AccessHttp
from tests.support.waiting import wait_until_async


class HeldBackend:
    """Answers reads at once and holds writes (``order.*``) until released, like the engine
    holding a reply until its operation is durable."""

    def __init__(self) -> None:
        self.held: list[tuple[int | None, Callable[[bytes], None]]] = []
        self.calls: list[int | None] = []

    def connected(self) -> bool:
        return True

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        """The task path (a pipelined request waiting behind another is answered by it)."""
        self.calls.append(req_id)
        return body(req_id)

    def call_nowait(self, method: str, params: list[Any], req_id: int | None,
                    reply: Callable[[bytes], None]) -> bytes | None:
        self.calls.append(req_id)
        if not method.startswith("order."):
            return body(req_id)
        self.held.append((req_id, reply))
        return None

    def release(self) -> None:
        held, self.held = self.held, []
        for req_id, reply in held:
            reply(body(req_id))


def body(req_id: int | None) -> bytes:
    return json.dumps({"error": None, "result": "ok", "id": req_id}).encode()


def request(method: str, req_id: int) -> bytes:
    data = json.dumps({"method": method, "params": [], "id": req_id}).encode()
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    return status, await asyncio.wait_for(reader.readexactly(length), 10)


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[AccessHttp, HeldBackend]]:
    backend = HeldBackend()
    app = AccessHttp({"matchengine": backend}, timeout=0.3)
    await app.start("127.0.0.1", 0)
    try:
        yield app, backend
    finally:
        await app.stop()


async def test_pipelined_replies_keep_request_order(
        gateway: tuple[AccessHttp, HeldBackend]) -> None:
    app, backend = gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
    try:
        # a held write, then a read that could be answered at once: it must wait its turn
        writer.write(request("order.put_limit", 1) + request("asset.list", 2))
        await wait_until_async(lambda: backend.held)
        assert backend.calls == [1]  # the read is not made before the write is answered
        backend.release()
        assert await read_reply(reader) == (200, body(1))
        assert await read_reply(reader) == (200, body(2))
        assert backend.calls == [1, 2]
    finally:
        writer.close()


async def test_unanswered_call_is_504_and_its_late_reply_dropped(
        gateway: tuple[AccessHttp, HeldBackend]) -> None:
    app, backend = gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
    try:
        writer.write(request("order.put_limit", 7))
        assert await read_reply(reader) == (
            504, b'{"error": {"code": 5, "message": "service timeout"}, "result": null, "id": 7}')
        backend.release()  # the backend answers after all: nothing more is sent
        writer.write(request("asset.list", 8))  # and the connection is still usable
        assert await read_reply(reader) == (200, body(8))
    finally:
        writer.close()


async def test_many_connections_each_answered_once(
        gateway: tuple[AccessHttp, HeldBackend]) -> None:
    app, backend = gateway
    conns = [await asyncio.open_connection("127.0.0.1", app.port) for _ in range(8)]
    try:
        for i, (_, writer) in enumerate(conns):
            writer.write(request("order.put_limit", i))
        await wait_until_async(lambda: len(backend.held) == len(conns))
        backend.release()
        for i, (reader, _) in enumerate(conns):
            assert await read_reply(reader) == (200, body(i))
        assert app.requests == len(conns)
    finally:
        for _, writer in conns:
            writer.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection within ``seconds`` (what it sends first is
    read and dropped)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(("keep_alive", "request_timeout", "stall"), [
    (3600.0, 0.3, True),   # a slow second request: its request timeout, not the keep-alive
    (0.3, 3600.0, False),  # idle after a reply: its keep-alive, not the request timeout
])
async def test_read_timeouts_after_a_reply(keep_alive: float, request_timeout: float,
                                           stall: bool) -> None:
    """The read timer is re-armed lazily (HttpProtocol._arm_read): whichever limit applies
    now closes the connection, however the other one was armed before."""
    backend = HeldBackend()
    app = AccessHttp({"matchengine": backend}, timeout=5,
                     limits=HttpLimits(keep_alive=keep_alive, request_timeout=request_timeout))
    await app.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        writer.write(request("asset.list", 1))
        assert await read_reply(reader) == (200, body(1))
        if stall:
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert await closed_within(reader, 20)
        writer.close()
    finally:
        await app.stop()


class BrokenBackend(HeldBackend):
    def call_nowait(self, method: str, params: list[Any], req_id: int | None,
                    reply: Callable[[bytes], None]) -> bytes | None:
        raise RuntimeError("a bug in the backend")


async def test_a_failing_inline_call_is_500_and_closed() -> None:
    """As on the task path (_answer): 500 with no body, then the connection is closed."""
    app = AccessHttp({"matchengine": BrokenBackend()}, timeout=5)
    await app.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        writer.write(request("asset.list", 1))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert b"Content-Length: 0\r\n" in head and b"Connection: close\r\n" in head
        assert await closed_within(reader, 20)
        writer.close()
    finally:
        await app.stop()


async def test_a_request_trickled_in_is_timed_from_its_start() -> None:
    """The read timer of a request is armed once, when the slice it began in is parsed
    (HttpProtocol._feed_piece), not again at each later read: a client sending a byte at a
    time is closed after ``request_timeout``, however often it sends."""
    app = AccessHttp({"matchengine": HeldBackend()}, timeout=5,
                     limits=HttpLimits(keep_alive=3600.0, request_timeout=0.5))
    await app.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ")

        async def trickle() -> None:
            for _ in range(400):  # 40 s of a byte every 0.1 s, if never closed
                writer.write(b"a")
                await asyncio.sleep(0.1)

        sending = asyncio.create_task(trickle())
        try:
            assert await closed_within(reader, 20)
        finally:
            sending.cancel()
        writer.close()
    finally:
        await app.stop()
