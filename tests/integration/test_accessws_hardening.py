"""accessws against hostile clients, on a real ``exchange-server run``.

Why: each case here was found by an attacker.  A TCP connection that never finished its HTTP
upgrade was held forever; a client could open connections without bound; an unmasked client
frame (forbidden by RFC 6455 section 5.1) was accepted; params nested hundreds of levels deep
in a cached query (``depth.query``, ``kline.query``) answered code 2 with a traceback in the
log (the cache key could not be built).  The server is configured with a 1 s handshake timeout
and a limit of 3 connections so that the bounds are reached quickly; every wait polls a
condition until a generous deadline.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.accessws_support import RawWs
from tests.support.server import ServerProcess
from tests.support.waiting import wait_until_async

HANDSHAKE_TIMEOUT = 1.0
MAX_CONNECTIONS = 3
#: Generous deadline for anything the server does by itself (closing, answering).
DEADLINE = 30.0


def _start(base: Path, ws_config: dict[str, Any]) -> ServerProcess:
    path = base / "accessws.json"
    path.write_text(json.dumps(ws_config))
    return ServerProcess(base / "data", extra=["--ws-config", str(path)]).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = _start(tmp_path_factory.mktemp("hardening"),
                  {"handshake_timeout": HANDSHAKE_TIMEOUT, "max_connections": MAX_CONNECTIONS})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def patient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Same limit, but a handshake timeout far longer than any test."""
    proc = _start(tmp_path_factory.mktemp("patient"),
                  {"handshake_timeout": 3600, "max_connections": MAX_CONNECTIONS})
    try:
        yield proc
    finally:
        proc.stop()


async def _connected(port: int) -> RawWs | None:
    try:
        raw, head = await RawWs.open(port, RawWs.handshake())
    except OSError:
        return None
    if not head.startswith(b"HTTP/1.1 101"):
        raw.close()
        return None
    return raw


@pytest.fixture
async def ws(server: ServerProcess) -> AsyncIterator[RawWs]:
    """An upgraded connection (retried until the server has room: earlier tests' connections
    are closed asynchronously)."""
    raw = await wait_until_async(lambda: _connected(server.ws_port), DEADLINE,
                                 interval=0.1, message="an upgraded connection")
    try:
        yield raw
    finally:
        raw.close()


async def _reply(raw: RawWs) -> dict[str, Any]:
    frame = await raw.read_frame(DEADLINE)
    assert frame is not None and frame[0] == 1, frame
    reply: dict[str, Any] = json.loads(frame[1])
    return reply


async def _call(raw: RawWs, body: str) -> dict[str, Any]:
    raw.send_frame(body.encode())
    return await _reply(raw)


async def _eof(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (whatever it sent before)."""
    try:
        while await asyncio.wait_for(reader.read(4096), DEADLINE):
            pass
    except ConnectionError:
        pass
    return True


# -- handshake timeout ----------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: web"],
                         ids=["nothing", "half-a-request"])
async def test_half_done_handshake_is_closed(server: ServerProcess, ws: RawWs,
                                             sent: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ws_port)
    try:
        writer.write(sent)
        await writer.drain()
        # closed by the server (within DEADLINE, far more than the 1 s configured)
        assert await _eof(reader)
        assert await reader.read() == b""
    finally:
        writer.close()
    # a connection that completed its upgrade earlier is not subject to the timeout
    reply = await _call(ws, '{"method": "server.ping", "params": [], "id": 7}')
    assert reply == {"error": None, "result": "pong", "id": 7}


async def test_slow_but_complete_handshake_upgrades(server: ServerProcess) -> None:
    raw = await wait_until_async(lambda: _connected(server.ws_port), DEADLINE, interval=0.1,
                                 message="an upgraded connection")
    try:
        reply = await _call(raw, '{"method": "server.ping", "params": [], "id": 1}')
        assert reply["result"] == "pong"
    finally:
        raw.close()


# -- connection limit -----------------------------------------------------------------------------


async def test_connections_past_the_limit_are_closed(server: ServerProcess) -> None:
    held: list[RawWs] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            held.append(await wait_until_async(lambda: _connected(server.ws_port), DEADLINE,
                                               interval=0.1, message="a connection slot"))
        # one more TCP connection is closed right after the accept, without an HTTP answer
        extra, head = await RawWs.open(server.ws_port, RawWs.handshake())
        assert head == b""
        extra.close()
        # the ones held still work
        for i, raw in enumerate(held):
            reply = await _call(raw, f'{{"method": "server.ping", "params": [], "id": {i}}}')
            assert reply["result"] == "pong"
    finally:
        for raw in held:
            raw.close()
    # once they are gone, there is room again
    again = await wait_until_async(lambda: _connected(server.ws_port), DEADLINE, interval=0.1,
                                   message="room after closing")
    again.close()


async def test_half_done_handshakes_count_towards_the_limit(patient_server: ServerProcess) -> None:
    port = patient_server.ws_port
    ready = await wait_until_async(lambda: _connected(port), DEADLINE, interval=0.1,
                                   message="the server listening")
    ready.close()
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
    try:
        # three TCP connections that sent nothing fill the process: a fourth is closed at once,
        # once the server has accepted the three (on a loaded machine they may still wait in
        # the kernel's backlog when the fourth arrives, which is then served and retried; and
        # one of them may have been refused while the readiness probe was still counted: the
        # server closed it, so it is replaced)
        async def fourth_refused() -> bool:
            for i, (reader, writer) in enumerate(idle):
                if reader.at_eof():
                    writer.close()
                    idle[i] = await asyncio.open_connection("127.0.0.1", port)
            extra, head = await RawWs.open(port, RawWs.handshake())
            extra.close()
            return head == b""

        await wait_until_async(fourth_refused, DEADLINE, interval=0.1,
                               message="a connection past the limit was served")
    finally:
        for _, writer in idle:
            writer.close()
    again = await wait_until_async(lambda: _connected(port), DEADLINE, interval=0.1,
                                   message="room after closing")
    again.close()


# -- unmasked frames ------------------------------------------------------------------------------


def _unmasked(payload: bytes) -> bytes:
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, len(payload)) + payload


async def test_unmasked_frame_is_closed_with_1002(ws: RawWs) -> None:
    # a masked request is answered, then an unmasked one closes the connection
    assert (await _call(ws, '{"method": "server.ping", "params": [], "id": 1}'))["id"] == 1
    ws.writer.write(_unmasked(b'{"method": "server.ping", "params": [], "id": 2}'))
    await ws.writer.drain()
    frame = await ws.read_frame(DEADLINE)
    assert frame == (8, (1002).to_bytes(2, "big"))
    assert await ws.read_frame(DEADLINE) is None  # and the TCP connection is closed


async def test_unmasked_frame_split_across_writes(ws: RawWs) -> None:
    frame = _unmasked(b'{"method": "server.ping", "params": [], "id": 3}')
    ws.writer.write(frame[:1])
    await ws.writer.drain()
    ws.writer.write(frame[1:])
    await ws.writer.drain()
    assert await ws.read_frame(DEADLINE) == (8, (1002).to_bytes(2, "big"))
    assert await ws.read_frame(DEADLINE) is None


async def test_masked_frames_of_every_length_still_work(ws: RawWs) -> None:
    # 7-bit, 16-bit and 64-bit payload lengths: the guard follows the frame boundaries
    for i, pad in enumerate((0, 200, 70000)):
        params = json.dumps(["x" * pad])
        reply = await _call(ws, f'{{"method": "server.ping", "params": {params}, "id": {i}}}')
        assert reply == {"error": None, "result": "pong", "id": i}


# -- params nested too deep -----------------------------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("method, params", [
    ("depth.query", '["BTCBCH", 10, "0", {deep}]'),
    ("kline.query", '["BTCBCH", 1, 2, 60, {deep}]'),
    ("price.query", '[{deep}]'),
    ("server.ping", '[{deep}]'),
    ("order.query", '[{deep}, 0, 10]'),
])
@pytest.mark.parametrize("depth", [33, 300])
async def test_too_deep_params_answer_code_1(ws: RawWs, method: str, params: str,
                                             depth: int) -> None:
    body = f'{{"method": "{method}", "params": {params.format(deep=_nested(depth))}, "id": 5}}'
    reply = await _call(ws, body)
    assert reply["id"] == 5 and reply["result"] is None
    assert reply["error"]["code"] == 1
    assert "nested deeper than 32" in reply["error"]["message"]
    # the connection and the server carry on
    assert (await _call(ws, '{"method": "server.ping", "params": [], "id": 6}'))["result"] == \
        "pong"


async def test_params_32_deep_are_not_refused_for_depth(ws: RawWs) -> None:
    reply = await _call(ws, f'{{"method": "server.ping", "params": [{_nested(32)}], "id": 9}}')
    assert reply == {"error": None, "result": "pong", "id": 9}


# -- the guard's frame boundaries, byte by byte ---------------------------------------------------


class _Reader:
    def __init__(self) -> None:
        self.data = b""
        self.eof = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.data += data
        return False, b""

    def feed_eof(self) -> None:
        self.eof = True


class _Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True


def _masked(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload  # a zero mask leaves the payload as is


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_guard_follows_frames_in_any_chunking(chunk: int) -> None:
    from exchange_server.accessws.listener import CLOSE_PROTOCOL_ERROR, MaskGuard

    # frames whose payloads look like unmasked headers: only real headers may count
    good = b"".join(_masked(p) for p in (b"", b"\x81\x05", b"x" * 200, b"\x01" * 70000, b"y"))
    stream = good + _unmasked(b"bad") + _masked(b"after")
    reader, transport = _Reader(), _Transport()
    unmasked: list[int] = []
    guard = MaskGuard(reader, transport, lambda: unmasked.append(1))  # type: ignore[arg-type]
    results = [guard.feed_data(stream[i:i + chunk]) for i in range(0, len(stream), chunk)]
    # every frame before the unmasked one reached the reader; of the unmasked one at most its
    # first byte (when it came alone, before the mask bit could be seen), nothing after it
    assert stream.startswith(reader.data) and len(good) <= len(reader.data) <= len(good) + 1
    assert reader.eof and unmasked == [1]
    assert transport.written == CLOSE_PROTOCOL_ERROR and transport.closing
    assert results[-1] == (True, b"")


# -- configuration --------------------------------------------------------------------------------


def test_bounds_are_configurable_with_safe_defaults() -> None:
    from exchange_server.accessws.config import AccessWsConfig, load_accessws
    from exchange_server.common.config import ConfigError

    default = load_accessws({}, embedded=True)
    assert (default.handshake_timeout, default.max_connections) == (10.0, 10000)
    assert (AccessWsConfig().handshake_timeout, AccessWsConfig().max_connections) == (10.0, 10000)
    custom = load_accessws({"handshake_timeout": 2.5, "max_connections": 0}, embedded=True)
    assert (custom.handshake_timeout, custom.max_connections) == (2.5, 0)
    for bad in ({"handshake_timeout": -1}, {"handshake_timeout": "10"},
                {"max_connections": -1}, {"max_connections": 1.5}):
        with pytest.raises(ConfigError):
            load_accessws(bad, embedded=True)
