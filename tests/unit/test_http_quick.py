"""HttpProtocol's quick parse (_QuickReader): a short slice of plain calls is read without
the URL and header callbacks, and what the connection does is exactly what the full parser
alone makes it do: the same bytes written, the same calls made, the same closes, limits,
timers and state, for any input and any way it is cut into reads."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange_server.accesshttp import server
from exchange_server.accesshttp.limits import HttpLimits
from exchange_server.accesshttp.server import AccessHttp, AdminHttpProtocol, HttpProtocol


class Wire(asyncio.Transport):
    """A socket: keeps what is written and what the protocol did to it."""

    def __init__(self) -> None:
        super().__init__()
        self.data = b""
        self.events: list[str] = []

    def write(self, data: Any) -> None:
        self.data += bytes(data)

    def writelines(self, list_of_data: Any) -> None:
        self.data += b"".join(list_of_data)

    def is_closing(self) -> bool:
        return "close" in self.events or "abort" in self.events

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.events.append("eof")

    def pause_reading(self) -> None:
        self.events.append("pause")

    def resume_reading(self) -> None:
        self.events.append("resume")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def get_write_buffer_size(self) -> int:
        return 0



class PausingWire(Wire):
    """A socket whose send buffer fills: past ``high_water`` buffered bytes writing is paused
    (pause_writing), and the client takes it all three loop turns later (resume_writing)."""

    def __init__(self, protocol: HttpProtocol, high_water: int) -> None:
        super().__init__()
        self.protocol = protocol
        self.high_water = high_water
        self.buffered = 0

    def write(self, data: Any) -> None:
        super().write(data)
        self._grow(len(data))

    def writelines(self, list_of_data: Any) -> None:
        parts = list(list_of_data)
        super().writelines(parts)
        self._grow(sum(map(len, parts)))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def _grow(self, size: int) -> None:
        paused = self.buffered > self.high_water
        self.buffered += size
        if not paused and self.buffered > self.high_water:
            self.events.append("paused")
            self.protocol.pause_writing()
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, loop.call_soon, self._drain)

    def _drain(self) -> None:
        self.buffered = 0
        if not self.is_closing():
            self.events.append("drained")
            self.protocol.resume_writing()

class Engine:
    """A matchengine-like backend: ``asset.list`` is answered at once, other calls on the next
    loop turn (as a write once durable); every call is recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, int | None]] = []

    def connected(self) -> bool:
        return True

    def _body(self, req_id: int | None) -> bytes:
        return b'{"error": null, "result": %d, "id": %d}' % (len(self.calls), req_id or 0)

    def call_nowait(self, method: str, params: Any, req_id: int, reply: Any) -> bytes | None:
        self.calls.append((method, params, req_id))
        body = self._body(req_id)
        if method == "asset.list":
            return body
        asyncio.get_running_loop().call_soon(reply, body)
        return None

    async def call(self, method: str, params: Any, req_id: int | None) -> bytes:
        self.calls.append((method, params, req_id))
        return self._body(req_id)


LIMITS = HttpLimits(max_url_size=256, max_header_size=1024, max_body_size=400,
                    max_pipeline=4)
#: each of the URL, header and body limits in turn the one that bounds a quick read
ALL_LIMITS = [
    LIMITS,
    HttpLimits(max_url_size=1024, max_header_size=300, max_body_size=400, max_pipeline=4),
    HttpLimits(max_url_size=1024, max_header_size=1024, max_body_size=50, max_pipeline=4),
]

_DATE = re.compile(rb"Date: [^\r]*\r\n")


def _call(method: str, req_id: int, extra: bytes = b"", version: bytes = b"1.1",
          body: bytes | None = None) -> bytes:
    if body is None:
        body = b'{"method": "%s", "params": [], "id": %d}' % (method.encode(), req_id)
    return (b"POST / HTTP/%s\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
            % (version, extra, len(body), body))


#: Requests, well and badly formed, that the quick parse takes or must leave to the full one.
REQUESTS = [
    _call("asset.list", 1),
    _call("order.put_limit", 2),
    _call("market.last", 3, extra=b"Connection: close\r\n"),
    _call("asset.list", 4, version=b"1.0"),
    _call("asset.list", 5, version=b"1.0", extra=b"Connection: keep-alive\r\n"),
    _call("asset.list", 6, body=b'[{"method": "asset.list", "params": [], "id": 6}]'),
    _call("asset.list", 6, body=b'[' + b', '.join([b'{"method": "asset.list", "params": [], '
                                                   b'"id": 6}'] * 5) + b']'),
    _call("asset.list", 6, version=b"1.0", extra=b"Connection: keep-alive\r\n",
          body=b'[{"method": "asset.list", "params": [], "id": 6}]'),
    _call("asset.list", 7, body=b" {}"),
    _call("asset.list", 8, body=b"{not json"),
    _call("asset.list", 9, body=b'{"method": "no.such", "params": [], "id": 9}'),
    _call("asset.list", 10, body=b""),
    _call("asset.list", 11, body=b"{}"),
    _call("asset.list", 12, extra=b"Content-Length: 5000\r\n"),
    _call("asset.list", 13, extra=b"a:\r\n" * 40),
    _call("asset.list", 13, extra=b"a:\r\n" * 70),
    _call("asset.list", 13, extra=b"x-long: %s\r\n" % (b"v" * 200)),
    _call("asset.list", 15, body=b'{"method": "asset.list", "params": [%s], "id": 15}'
          % b", ".join([b"1"] * 30)),
    _call("asset.list", 16).replace(b"POST", b"PUT"),
    _call("asset.list", 17).replace(b"POST", b"GET"),
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\n{\"met\r\n2d\r\nhod\": \"asset.list\", \"params\": [], \"id\": 14}\r\n0\r\nT: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 999\r\n\r\n{",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /nothing HTTP/1.1\r\n\r\n",
    b"PUT / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"\r\n\r\n",
    b"POST /" + b"u" * 300 + b" HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
]



def _chunked(body: bytes, trailer: bytes = b"", extension: bytes = b"") -> bytes:
    return (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%x%s\r\n%s\r\n0\r\n%s\r\n"
            % (len(body), extension, body, trailer))


_PLAIN = b'{"method": "asset.list", "params": [], "id": 20}'
#: Hostile shapes (smuggling, framing the parser reads without a callback, other protocols,
#: bodies that look like a call and are not), short enough for the quick parse to try them.
SHAPES = [
    _chunked(_PLAIN, trailer=b"Content-Length: 99999\r\n"),  # a trailer the limits read
    _chunked(_PLAIN, trailer=b"Host: y\r\n"),
    _chunked(_PLAIN, extension=b";a=b"),
    _call("asset.list", 21, extra=b"Upgrade: websocket\r\nConnection: Upgrade\r\n"),
    _call("asset.list", 22, extra=b"Upgrade: websocket\r\n"),
    _call("asset.list", 23, extra=b"Expect: 100-continue\r\n"),
    _call("asset.list", 24, extra=b"X: a\r\n b\r\n"),  # obs-fold
    _call("asset.list", 25).replace(b"\r\n", b"\n"),  # bare LF
    _call("asset.list", 26, extra=b"Content-Length: 45\r\n"),  # a second, equal length
    _call("asset.list", 27, extra=b"Transfer-Encoding: chunked\r\n"),
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (len(_PLAIN), _PLAIN),
    _call("asset.list", 28, version=b"0.9"),
    _call("asset.list", 29, version=b"2.0"),
    _call("asset.list", 30, extra=b"connection: CLOSE\r\n"),
    _call("asset.list", 31, extra=b"Connection: keep-alive, close\r\n"),
    _call("asset.list", 32, version=b"1.0", extra=b"Connection: keep-alive\r\n"
          b"Connection: close\r\n"),
    _call("asset.list", 33).replace(b"POST /", b"POST http://a/b?c"),
    _call("asset.list", 34).replace(b"POST /", b"CONNECT a:1"),
    _call("asset.list", 35).replace(b"POST", b"GET"),
    _call("asset.list", 36, body=b"{" * 40),
    _call("asset.list", 37, body=b'{"method": "asset.list", "params": %s, "id": 37}'
          % (b"[" * 60 + b"]" * 60)),
    _call("asset.list", 38, body=b'{"method": "asset.list", "params": [%s], "id": 38}'
          % (b"9" * 60)),
    _call("asset.list", 39, body=b'{"method": "asset.list", "params": [], "id": %s}' % (b"9" * 30)),
    _call("asset.list", 40, body=b'{"method": "asset.list\xff", "params": [], "id": 40}'),
    _call("asset.list", 41).replace(b"Content-Length: ", b"Content-Length : "),
    _call("asset.list", 42).replace(b"Content-Length: ", b"Content-Length: 000"),
    b"\r\n\r\n" + _call("asset.list", 43) + b"\r\n",
    _call("asset.list", 44) + b"\r",
    _call("asset.list", 45) + b"\x00",
]

def _queued(protocol: HttpProtocol) -> list[tuple[Any, ...]]:
    return [(r.status, r.data, r.keep_alive, r.page is None, r.grant, r.weight, r.http10)
            for r in protocol._queue]


def _read_timeout(protocol: HttpProtocol) -> str:
    """Which time limit reading is under: none, the idle one or a request's."""
    deadline = protocol._read_deadline
    if deadline is None:
        return "none"
    limits = protocol.limits
    left = deadline - protocol.loop.time()
    return "keep_alive" if left > (limits.keep_alive + limits.request_timeout) / 2 else "request"

async def _run(reads: list[bytes], quick: bool, admin: bool = False,
               limits: HttpLimits = LIMITS, wait: bool = True,
               high_water: int | None = None) -> tuple[Any, ...]:
    """What a connection does with ``reads`` (the loop turning between them when ``wait``):
    the requests queued after each read, the bytes written (Date lines dropped), what it did
    to its socket, the calls made, and its state after."""
    queued = []
    engine = Engine()
    app = AccessHttp({"matchengine": engine}, timeout=1e6, limits=limits)
    protocol = (AdminHttpProtocol if admin else HttpProtocol)(app)
    if not quick:
        protocol._quick_max = -1
    wire = Wire() if high_water is None else PausingWire(protocol, high_water)
    protocol.connection_made(wire)
    for data in reads:
        protocol.data_received(data)
        queued.append(_queued(protocol))
        for _ in range(8 if wait else 0):  # replies on the next turns, then the worker's
            await asyncio.sleep(0)
    for _ in range(16):
        await asyncio.sleep(0)
    state = (protocol._closing, protocol._refused, protocol._lingering, protocol._reading,
             protocol._in_message, protocol._in_head, protocol._stray, protocol._pending,
             len(protocol._queue), _read_timeout(protocol), protocol._limit_status,
             protocol._unparsed is not None, protocol._write_paused,
             protocol._writable.is_set(), protocol._worker is None, protocol._read_timer is None,
             protocol._write_timer is None, protocol._peer_timer is None)
    protocol.connection_lost(None)
    return queued, _DATE.sub(b"", wire.data), wire.events, engine.calls, state


def _both(reads: list[bytes], admin: bool = False) -> None:
    async def both() -> None:
        for limits in ALL_LIMITS:
            for wait in (True, False):
                assert (await _run(reads, True, admin, limits, wait)
                        == await _run(reads, False, admin, limits, wait))
    asyncio.run(both())


def test_each_request_alone_and_behind_a_plain_call() -> None:
    for request in REQUESTS:
        _both([request])
        _both([REQUESTS[0] + request])
        _both([REQUESTS[1], request + REQUESTS[0]])
        _both([request, REQUESTS[0]])
        _both([request[:-1], request[-1:] + REQUESTS[0]])



def test_hostile_shapes_alone_behind_plain_calls_and_cut_anywhere() -> None:
    for shape in SHAPES:
        _both([shape])
        _both([REQUESTS[0] + shape + REQUESTS[1]])
        _both([REQUESTS[1], shape, REQUESTS[0]])

    async def cut_everywhere() -> None:
        for shape in SHAPES:
            stream = REQUESTS[0] + shape + REQUESTS[0]
            for cut in range(1, len(stream)):
                reads = [stream[:cut], stream[cut:]]
                assert (await _run(reads, True, wait=False)
                        == await _run(reads, False, wait=False)), (shape, cut)
    asyncio.run(cut_everywhere())


@pytest.mark.parametrize("high_water", [40, 150, 400])
def test_streams_under_write_pauses_get_what_the_full_parser_gives(high_water: int) -> None:
    """Replies that fill the send buffer pause writing between (and within) reads: no call is
    made inline while paused, the same replies go out in the same order.  Each run on a loop
    of its own (callbacks a run leaves must not shift the other's turns)."""
    requests = [REQUESTS[0], REQUESTS[1], REQUESTS[0], SHAPES[2], REQUESTS[4], REQUESTS[1],
                REQUESTS[8], REQUESTS[0], REQUESTS[0], REQUESTS[2], REQUESTS[0]]
    stream = b"".join(requests)
    cases = [[b"".join(requests[i:i + n]) for i in range(0, len(requests), n)] for n in (1, 2)]
    cases += [[stream[:cut], stream[cut:cut + 200], stream[cut + 200:]]
              for cut in range(0, len(stream), 37)]
    for reads in cases:
        for wait in (True, False):
            runs = [asyncio.run(_run([r for r in reads if r], quick, wait=wait,
                                     high_water=high_water)) for quick in (True, False)]
            assert runs[0] == runs[1], (reads, wait)

@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=6), st.data())
def test_any_stream_cut_anywhere_gets_what_the_full_parser_gives(requests: list[bytes],
                                                                   data: st.DataObject) -> None:
    stream = b"".join(requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    _both([r for r in reads if r])


class Counted(HttpProtocol):
    """Counts the full parser's URL callbacks (one per request it reads, at least)."""

    urls = 0

    def on_url(self, url: bytes) -> None:
        Counted.urls += 1
        super().on_url(url)


async def test_plain_calls_in_whole_reads_skip_the_full_parser() -> None:
    engine = Engine()
    protocol = Counted(AccessHttp({"matchengine": engine}, limits=LIMITS))
    wire = Wire()
    protocol.connection_made(wire)
    protocol.data_received(_call("asset.list", 1) + _call("asset.list", 2))
    protocol.data_received(_call("asset.list", 3))
    assert Counted.urls == 0
    assert [c[2] for c in engine.calls] == [1, 2, 3]
    assert wire.data.count(b"HTTP/1.1 200 OK") == 3
    protocol.data_received(_call("asset.list", 4)[:20])  # a request not ended: the full parser
    protocol.data_received(_call("asset.list", 4)[20:])
    assert Counted.urls == 1 and wire.data.count(b"HTTP/1.1 200 OK") == 4
    protocol.data_received(REQUESTS[5])  # a batch: read again in full
    await asyncio.sleep(0)
    protocol.data_received(_call("asset.list", 7))  # then quickly again
    assert Counted.urls == 2 and wire.data.count(b"HTTP/1.1 200 OK") == 6
    protocol.connection_lost(None)


async def test_reads_longer_than_the_limits_allow_are_not_read_quickly() -> None:
    sizes = [HttpProtocol(AccessHttp({}, limits=limits))._quick_max for limits in ALL_LIMITS]
    assert sizes == [256, 150, 50]  # the URL limit, half the header limit, the body limit
    assert AdminHttpProtocol(AccessHttp({}, admin_token="t"))._quick_max == -1  # reads headers


def test_an_admin_connection_reads_every_request_in_full() -> None:
    _both([REQUESTS[0] + REQUESTS[1]], admin=True)


def test_a_request_whose_answering_fails_is_refused_as_from_the_full_parser(
        monkeypatch: pytest.MonkeyPatch) -> None:
    parse = server.parse_body

    def failing(body: bytes) -> Any:
        if b'"id": 2' in body:
            raise RuntimeError("a bug")
        return parse(body)

    monkeypatch.setattr(server, "parse_body", failing)
    _both([REQUESTS[0] + REQUESTS[1] + REQUESTS[0]])
    _both([REQUESTS[1], REQUESTS[0]])


async def test_no_call_is_made_inline_while_writing_is_paused() -> None:
    engine = Engine()
    protocol = HttpProtocol(AccessHttp({"matchengine": engine}, limits=LIMITS))
    wire = Wire()
    protocol.connection_made(wire)
    protocol.pause_writing()
    protocol.data_received(_call("asset.list", 1))
    assert engine.calls == [] and protocol._worker is not None  # it waits for the client
    protocol.resume_writing()
    for _ in range(8):
        await asyncio.sleep(0)
    assert [c[2] for c in engine.calls] == [1] and wire.data.count(b"200 OK") == 1
    protocol.data_received(_call("asset.list", 2))  # inline again: answered at once
    assert [c[2] for c in engine.calls] == [1, 2] and wire.data.count(b"200 OK") == 2
    protocol.connection_lost(None)
