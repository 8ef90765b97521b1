"""The internal binary RPC: framing (golden bytes, IEEE CRC-32, streaming decoder) and the
server + client over real TCP / unix / UDP sockets with a tiny fake service."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
import zlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from exchange_server.common import jsonfmt
from exchange_server.common.config import ConfigError, Node
from exchange_server.rpc import protocol as p
from exchange_server.rpc.addr import SockAddr, parse_sock_addr
from exchange_server.rpc.client import RpcClient
from exchange_server.rpc.commands import (
    MARKETPRICE_COMMANDS,
    MATCHENGINE_COMMANDS,
    METHOD_COMMANDS,
    READHISTORY_COMMANDS,
)
from exchange_server.rpc.config import make_client, read_rpc_client, read_rpc_server
from exchange_server.rpc.server import RpcServer, signed_req_id
from tests.support.waiting import wait_until_async

T = TypeVar("T")

# -- CRC-32 (IEEE) and golden bytes ----------------------------------------------------------


def test_crc32_is_ieee_as_the_original() -> None:
    # the original's function is named crc32c, but its table is the IEEE one
    assert p.crc32(b"123456789") == 0xCBF43926  # the IEEE check value
    assert p.crc32(b"") == 0
    assert p.crc32(b"56789", p.crc32(b"1234")) == 0xCBF43926  # incremental
    assert p.crc32(b"123456789") != 0xE3069283  # not CRC-32C (Castagnoli)


def hand_packet(command: int, pkg_type: int, sequence: int, req_id: int, body: bytes,
                ext: bytes = b"") -> bytes:
    """A packet built field by field from the layout in rpc.md 1.3, independently of pack()."""
    def header(crc: int) -> bytes:
        return (struct.pack("<I", 0x70656562) + struct.pack("<I", command)
                + struct.pack("<H", pkg_type) + struct.pack("<I", 0) + struct.pack("<I", crc)
                + struct.pack("<I", sequence) + struct.pack("<Q", req_id)
                + struct.pack("<I", len(body)) + struct.pack("<H", len(ext)))
    zeroed = header(0) + ext + body
    assert len(header(0)) == 36
    return header(zlib.crc32(zeroed)) + ext + body


def test_golden_request_bytes() -> None:
    body = b'[1, "BTC"]'
    packet = p.pack(101, p.TYPE_REQUEST, 1, 7, body)
    assert packet == hand_packet(101, 0, 1, 7, body)
    assert packet.hex() == ("62656570" "65000000" "0000" "00000000" "823a5047" "01000000"
                            "0700000000000000" "0a000000" "0000" + body.hex())
    # the crc field is the IEEE CRC-32 of the packet with the field zeroed
    zeroed = packet[:14] + b"\0\0\0\0" + packet[18:]
    assert struct.unpack_from("<I", packet, 14)[0] == zlib.crc32(zeroed)


def test_golden_with_ext_and_reply() -> None:
    packet = p.pack(206, p.TYPE_REPLY, 0xFFFFFFFF, 2**64 - 1, b'{"error": null}', b"EXT")
    assert packet == hand_packet(206, 1, 0xFFFFFFFF, 2**64 - 1, b'{"error": null}', b"EXT")
    decoded = p.Decoder(1000).feed(packet)[0]
    assert (decoded.command, decoded.pkg_type, decoded.sequence, decoded.req_id) == (
        206, 1, 0xFFFFFFFF, 2**64 - 1)
    assert decoded.ext == b"EXT" and decoded.body == b'{"error": null}'
    # a reply keeps the request header (ext too) with pkg_type = reply
    request = p.Decoder(1000).feed(p.pack(201, 0, 5, 9, b"[]", b"x"))[0]
    reply = p.Decoder(1000).feed(request.reply(b"{}"))[0]
    assert (reply.command, reply.pkg_type, reply.sequence, reply.req_id, reply.ext, reply.body) == (
        201, 1, 5, 9, b"x", b"{}")


def test_negative_req_id_round_trips() -> None:
    packet = p.Decoder(100).feed(p.pack(101, 0, 1, -1, b"[]"))[0]
    assert packet.req_id == 2**64 - 1
    assert signed_req_id(packet.req_id) == -1
    assert signed_req_id(2**63 - 1) == 2**63 - 1
    assert signed_req_id(2**63) == -(2**63)


def test_decoder_partial_reads() -> None:
    packets = [p.pack(100 + i, 0, i, i * 10, orjson.dumps([i, "x" * i])) for i in range(20)]
    stream = b"".join(packets)
    decoder = p.Decoder(10240)
    out: list[p.Packet] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i:i + 1])
    assert [x.sequence for x in out] == list(range(20))
    assert [orjson.loads(x.body) for x in out] == [[i, "x" * i] for i in range(20)]
    assert decoder.pending == 0
    # uneven chunks, several packets per chunk
    decoder = p.Decoder(10240)
    out = []
    for start in range(0, len(stream), 77):
        out += decoder.feed(stream[start:start + 77])
    assert [x.command for x in out] == [100 + i for i in range(20)]


def test_decoder_rejects_bad_magic_crc_and_size() -> None:
    good = p.pack(101, 0, 1, 1, b"[1]")
    with pytest.raises(p.ProtocolError, match="magic"):
        p.Decoder(1000).feed(b"XXXX" + good[4:])
    corrupt = bytearray(good)
    corrupt[-2] ^= 0x01
    with pytest.raises(p.ProtocolError, match="crc"):
        p.Decoder(1000).feed(bytes(corrupt))
    # oversized: refused as soon as the header is in, before the body arrives
    big = p.pack(101, 0, 1, 1, b"[" + b"1," * 100 + b"1]")
    with pytest.raises(p.ProtocolError, match="max_pkg_size"):
        p.Decoder(100).feed(big[:40])
    assert p.Decoder(len(big)).feed(big)[0].body.startswith(b"[1,")  # exactly max is fine
    with pytest.raises(p.ProtocolError):
        p.decode_datagram(good[:-1], 1000)


def test_heartbeat_tlv() -> None:
    assert p.heartbeat_body(3.0) == bytes.fromhex("0100" "0400" "b80b0000")
    assert p.parse_heartbeat_body(p.heartbeat_body(3.0)) == 3.0
    assert p.parse_heartbeat_body(p.heartbeat_body(0.5)) == 2.0  # clamped to 2..600
    assert p.parse_heartbeat_body(p.heartbeat_body(100000)) == 600.0
    assert p.parse_heartbeat_body(b"") is None
    unknown = struct.pack("<HH", 7, 2) + b"ab"
    assert p.parse_heartbeat_body(unknown + p.heartbeat_body(5)) == 5.0
    with pytest.raises(p.ProtocolError):
        p.parse_heartbeat_body(b"\x01\x00\x02\x00\x00\x00")
    with pytest.raises(p.ProtocolError):
        p.parse_heartbeat_body(b"\x01\x00\x04\x00\x00")
    assert p.clamp_heartbeat_timeout(0) == 3.0


def test_sock_addr_parsing() -> None:
    assert parse_sock_addr("tcp@127.0.0.1:7316") == SockAddr("tcp", "127.0.0.1", 7316)
    assert parse_sock_addr("UDP@0.0.0.0:7316") == SockAddr("udp", "0.0.0.0", 7316)
    assert parse_sock_addr("stream@/tmp/x.sock") == SockAddr("stream", path="/tmp/x.sock")
    assert parse_sock_addr("tcp@[::1]:80") == SockAddr("tcp", "::1", 80)
    assert str(parse_sock_addr("tcp@::1:80")) == "tcp@[::1]:80"
    for bad in ("127.0.0.1:1", "foo@1.2.3.4:5", "tcp@1.2.3.4", "tcp@1.2.3.4:x", "stream@"):
        with pytest.raises(ValueError):
            parse_sock_addr(bad)


def test_command_tables_come_from_routes() -> None:
    assert MATCHENGINE_COMMANDS[201] == "order.put_limit"
    assert MATCHENGINE_COMMANDS[206] == "order.depth"
    assert READHISTORY_COMMANDS[208] == "order.finished"
    assert MARKETPRICE_COMMANDS[302] == "market.kline"
    assert METHOD_COMMANDS["market.user_deals"] == 306
    assert not set(MATCHENGINE_COMMANDS) & set(READHISTORY_COMMANDS)
    assert len(METHOD_COMMANDS) == len(MATCHENGINE_COMMANDS) + len(READHISTORY_COMMANDS) + len(
        MARKETPRICE_COMMANDS)


def test_rpc_config_blocks() -> None:
    cfg = read_rpc_client(Node({"name": "matchengine", "addr": ["tcp@127.0.0.1:7316",
                                                               "tcp@127.0.0.1:7317"],
                                "max_pkg_size": 2000000}, "matchengine"))
    assert cfg.addr == ["tcp@127.0.0.1:7316", "tcp@127.0.0.1:7317"]
    assert cfg.heartbeat_timeout == 0.0 and cfg.reconnect_timeout == 0.0
    client = make_client(cfg, timeout=1.0)
    assert client.heartbeat_timeout == 3.0 and client.reconnect_timeout == 1.0
    single = read_rpc_client(Node({"name": "x", "addr": "stream@/tmp/a.sock", "max_pkg_size": 100,
                                   "heartbeat_timeout": 1000}))
    assert single.addr == ["stream@/tmp/a.sock"]
    assert make_client(single).heartbeat_timeout == 600.0
    with pytest.raises(ConfigError, match=r"readhistory\.addr\[1\]"):
        read_rpc_client(Node({"name": "x", "addr": ["tcp@1.2.3.4:1", "tcp@nope"],
                              "max_pkg_size": 100}, "readhistory"))
    with pytest.raises(ConfigError, match="max_pkg_size"):
        read_rpc_client(Node({"name": "x", "addr": "tcp@1.2.3.4:1"}))
    with pytest.raises(ConfigError, match="udp@ is not supported"):
        read_rpc_client(Node({"name": "x", "addr": "udp@1.2.3.4:1", "max_pkg_size": 100}))
    svr = read_rpc_server(Node({"bind": ["tcp@0.0.0.0:7316", "udp@0.0.0.0:7316"],
                                "max_pkg_size": 10240, "heartbeat_check": False}, "svr"))
    assert svr.bind == ["tcp@0.0.0.0:7316", "udp@0.0.0.0:7316"] and not svr.heartbeat_check
    with pytest.raises(ConfigError, match=r"svr\.bind"):
        read_rpc_server(Node({"bind": "tcp@0.0.0.0", "max_pkg_size": 1}, "svr"))


# -- server and client over real sockets -------------------------------------------------------

COMMANDS = {101: "balance.query", 201: "order.put_limit", 206: "order.depth"}


class FakeService:
    """Answers ``{"method", "params"}``; params[0] = seconds to sleep first (if a number),
    ``"block"`` (wait for :attr:`block`) or ``"gate"`` (wait for ``gate(params[1])``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any], int | None]] = []
        self.finished: list[Any] = []
        self.block = asyncio.Event()
        self.gates: dict[Any, asyncio.Event] = {}

    def gate(self, key: Any) -> asyncio.Event:
        """The event the ``["gate", key]`` calls wait for."""
        return self.gates.setdefault(key, asyncio.Event())

    async def call(self, method: str, params: list[Any], req_id: int | None) -> bytes:
        self.calls.append((method, params, req_id))
        if params and params[0] == "block":
            await self.block.wait()
        elif params and params[0] == "gate":
            await self.gate(params[1]).wait()
        elif params and isinstance(params[0], (int, float)) and params[0] > 0:
            await asyncio.sleep(params[0])
        self.finished.append(params[1] if len(params) > 1 else None)
        if method == "order.depth":
            return jsonfmt.error_body(10, "invalid market", req_id)
        if params and params[0] == "big":
            return jsonfmt.reply_body("x" * 5000, req_id)
        if params and params[0] == "raise":
            raise RuntimeError("boom")
        return jsonfmt.reply_body({"method": method, "params": params}, req_id)


async def start_server(service: Any, binds: list[str], **kw: Any) -> RpcServer:
    server = RpcServer(service, COMMANDS, kw.pop("max_pkg_size", 10240),
                       kw.pop("heartbeat_check", False), **kw)
    await server.start(binds)
    return server


async def start_client(addrs: list[str], **kw: Any) -> RpcClient:
    kw.setdefault("commands", {v: k for k, v in COMMANDS.items()})
    client = RpcClient("test", addrs, kw.pop("max_pkg_size", 10240), **kw)
    await client.start()
    return client


def free_port() -> int:
    """A TCP port free now, outside the ephemeral range: no outgoing connection takes it
    meanwhile, and a client retrying it while nothing listens cannot connect to itself."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


#: Deadline of a reply, a connection or a condition: a liveness check only (it never makes a
#: passing test slower), so long enough for a heavily loaded machine.
WAIT = 30.0


async def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    await wait_until_async(predicate, timeout)


async def within(awaitable: Awaitable[T], what: str) -> T:
    """``awaitable``'s result; AssertionError (never TimeoutError, which tests expect from the
    client) if it has not finished within :data:`WAIT`."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=WAIT)
    if not done:
        task.cancel()
        raise AssertionError(f"{what} did not finish within {WAIT}s")
    return task.result()


async def test_call_over_tcp() -> None:
    service = FakeService()
    server = await start_server(service, ["tcp@127.0.0.1:0"])
    client = await start_client(server.addresses)
    try:
        assert await client.wait_connected(WAIT)
        body = await client.call("balance.query", [0, 1, "BTC"], 42)
        assert body == jsonfmt.reply_body({"method": "balance.query", "params": [0, 1, "BTC"]}, 42)
        assert service.calls == [("balance.query", [0, 1, "BTC"], 42)]
        # the error body is passed through unchanged, and a negative id survives the u64 field
        assert await client.call("order.depth", [], -5) == jsonfmt.error_body(
            10, "invalid market", -5)
        # a service exception is answered with "internal error"
        assert orjson.loads(await client.call("balance.query", ["raise"], 1))["error"] == {
            "code": 2, "message": "internal error"}
        # a method the client has no command for
        assert orjson.loads(await client.call("nope.nope", [], 3))["error"]["code"] == 4
    finally:
        await client.close()
        await server.stop()
    assert not client.connected()


async def test_call_over_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "rpc.sock"
    path.write_text("stale")  # an old socket file is replaced
    server = await start_server(FakeService(), [f"stream@{path}"])
    client = await start_client([f"stream@{path}"])
    try:
        assert await client.wait_connected(WAIT)
        body = await client.call("order.put_limit", [0, 1, "BTCBCH"], 9)
        assert orjson.loads(body) == {"error": None, "result": {
            "method": "order.put_limit", "params": [0, 1, "BTCBCH"]}, "id": 9}
    finally:
        await client.close()
        await server.stop()
    assert not path.exists()


async def test_udp_bind_one_packet_per_datagram() -> None:
    server = await start_server(FakeService(), ["udp@127.0.0.1:0"])
    host, port = parse_sock_addr(server.addresses[0]).host, parse_sock_addr(server.addresses[0]).port
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.connect((host, port))
        await loop.sock_sendall(sock, p.pack(101, 0, 77, 5, b"[0, 1]"))
        reply = p.decode_datagram(await asyncio.wait_for(loop.sock_recv(sock, 65536), WAIT), 65536)
        assert (reply.pkg_type, reply.sequence, reply.req_id) == (1, 77, 5)
        assert orjson.loads(reply.body)["result"]["params"] == [0, 1]
        await loop.sock_sendall(sock, p.pack(0, 0, 0, 0, p.heartbeat_body(3)))
        beat = p.decode_datagram(await asyncio.wait_for(loop.sock_recv(sock, 65536), WAIT), 65536)
        assert (beat.command, beat.pkg_type, beat.body) == (0, 1, b"")
    finally:
        sock.close()
        await server.stop()


async def test_pipelining_100_concurrent_calls_one_connection() -> None:
    service = FakeService()
    server = await start_server(service, ["tcp@127.0.0.1:0"])
    client = await start_client(server.addresses)
    try:
        assert await client.wait_connected(WAIT)
        n = 100
        calls = asyncio.gather(*(
            client.call("balance.query", ["gate", i], 1000 + i) for i in range(n)))
        # all n are in the service at once: the calls overlap (serially only one would be)
        await wait_for(lambda: len(service.calls) == n)
        assert service.finished == []
        for i in reversed(range(n)):  # the last request is answered first
            service.gate(i).set()
        bodies = await within(calls, "the pipelined calls")
        for i, body in enumerate(bodies):
            reply = orjson.loads(body)
            assert reply["id"] == 1000 + i and reply["result"]["params"][1] == i
        assert server.connection_count == 1
        assert service.finished[:3] == [n - 1, n - 2, n - 3]  # answered out of order
    finally:
        await client.close()
        await server.stop()


def raw_connect(addr: str) -> socket.socket:
    a = parse_sock_addr(addr)
    sock = socket.create_connection((a.host, a.port), timeout=WAIT)
    return sock


def read_packets(sock: socket.socket, count: int, max_size: int = 1 << 20) -> list[p.Packet]:
    decoder = p.Decoder(max_size)
    out: list[p.Packet] = []
    while len(out) < count:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        out += decoder.feed(data)
    return out


def assert_closed_by_server(sock: socket.socket) -> None:
    sock.settimeout(WAIT)
    try:
        assert sock.recv(1024) == b""
    except ConnectionResetError:
        pass


async def test_raw_pipelined_requests_in_one_write() -> None:
    """A client written from the spec alone: three requests in one write, replies by sequence."""
    server = await start_server(FakeService(), ["tcp@127.0.0.1:0"])
    try:
        def run() -> list[p.Packet]:
            with raw_connect(server.addresses[0]) as sock:
                sock.sendall(hand_packet(101, 0, 11, 1, b"[0.2, 1]")
                             + hand_packet(201, 0, 12, 2, b"[0, 2]")
                             + hand_packet(0, 0, 0, 0, p.heartbeat_body(3))
                             + hand_packet(999, 0, 13, 3, b"[]"))
                return read_packets(sock, 4)
        replies = await asyncio.to_thread(run)
        by_seq = {r.sequence: r for r in replies if r.command != 0}
        assert [r.sequence for r in replies][-1] == 11  # the slow one came last
        assert orjson.loads(by_seq[12].body)["result"]["params"] == [0, 2]
        assert orjson.loads(by_seq[13].body) == {
            "error": {"code": 4, "message": "method not found"}, "result": None, "id": 3}
        assert all(r.pkg_type == p.TYPE_REPLY for r in replies)
    finally:
        await server.stop()


@pytest.mark.parametrize("bad", ["body", "magic", "crc", "size", "heartbeat"])
async def test_server_closes_connection_on_bad_input(bad: str) -> None:
    server = await start_server(FakeService(), ["tcp@127.0.0.1:0"], max_pkg_size=1000)
    try:
        packet = {
            "body": p.pack(101, 0, 1, 1, b'{"not": "an array"}'),
            "magic": b"\x00\x00\x00\x00" + p.pack(101, 0, 1, 1, b"[]")[4:],
            "crc": p.pack(101, 0, 1, 1, b"[1]")[:-2] + b"2]",
            "size": p.pack(101, 0, 1, 1, b"[" + b"0," * 600 + b"0]"),
            "heartbeat": p.pack(0, 0, 0, 0, b"\x01\x00\x04\x00\x01"),
        }[bad]

        def run() -> None:
            with raw_connect(server.addresses[0]) as sock:
                sock.sendall(packet)
                assert_closed_by_server(sock)
        await asyncio.to_thread(run)
    finally:
        await server.stop()


async def test_heartbeat_answered_and_idle_peer_closed() -> None:
    server = await start_server(FakeService(), ["tcp@127.0.0.1:0"], heartbeat_check=True)
    try:
        def run() -> float:
            with raw_connect(server.addresses[0]) as sock:
                # taken before the heartbeat is sent, so before the server's 2 s start: the
                # bound below holds however late this thread or the server runs
                start = time.monotonic()
                sock.sendall(p.pack(0, 0, 0, 0, p.heartbeat_body(2.0)))
                (reply,) = read_packets(sock, 1)
                assert (reply.command, reply.pkg_type, reply.body) == (0, 1, b"")
                assert_closed_by_server(sock)  # no more heartbeats: closed after 2 s
                return time.monotonic() - start
        waited = await asyncio.to_thread(run)
        assert waited >= 2.0  # the announced timeout, not the default 3 s nor at once
    finally:
        await server.stop()


async def test_client_heartbeats_keep_connection_open() -> None:
    server = await start_server(FakeService(), ["tcp@127.0.0.1:0"], heartbeat_check=True)
    client = await start_client(server.addresses, heartbeat_timeout=2.0)
    try:
        assert await client.wait_connected(WAIT)
        # The sleep is the thing under test: nothing may happen during a period longer than
        # the server's timeout (an absence can't be waited on).  Heartbeats kept it alive.
        await asyncio.sleep(3.2)
        assert client.connected() and client.connects == 1
        assert orjson.loads(await client.call("balance.query", [0, 1], 1))["id"] == 1
    finally:
        await client.close()
        await server.stop()


async def test_client_closes_silent_server_on_heartbeat_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while await reader.read(65536):
            pass

    silent_server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = silent_server.sockets[0].getsockname()[1]
    client = await start_client([f"tcp@127.0.0.1:{port}"], heartbeat_timeout=2.0)
    try:
        assert await client.wait_connected(WAIT)
        await wait_for(lambda: client.connects >= 2, WAIT)  # dropped after 2 s, reconnected
        assert len(accepted) >= 2
    finally:
        await client.close()
        silent_server.close()
        for w in accepted:
            w.close()


async def test_request_timeout_and_late_reply_dropped() -> None:
    service = FakeService()
    server = await start_server(service, ["tcp@127.0.0.1:0"])
    client = await start_client(server.addresses, timeout=0.2)
    try:
        assert await client.wait_connected(WAIT)
        # blocked in the service: only the client's own timeout can end these calls
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(client.call("balance.query", ["block", 1], 1), "the timed-out call")
        assert time.monotonic() - started >= 0.2
        # the caller's own asyncio.wait_for works too, and leaves nothing pending
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.request(101, b'["block", 2]', 2, timeout=None), 0.1)
        service.block.set()
        await wait_for(lambda: len(service.finished) == 2)
        # the late replies were sent before this one on the connection: read and dropped first
        assert orjson.loads(await client.call("balance.query", [0, 3], 3))["id"] == 3
        assert client._conn is not None and client._conn.pending == {}
    finally:
        await client.close()
        await server.stop()


async def test_in_flight_requests_fail_when_connection_drops() -> None:
    service = FakeService()
    server = await start_server(service, ["tcp@127.0.0.1:0"])
    client = await start_client(server.addresses)
    try:
        assert await client.wait_connected(WAIT)
        calls = [asyncio.ensure_future(client.call("balance.query", ["block", i], i))
                 for i in range(5)]
        await wait_for(lambda: len(service.calls) == 5)
        await server.stop(grace=0)
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results)
        await wait_for(lambda: not client.connected())
        with pytest.raises(ConnectionError):
            await client.call("balance.query", [0, 1], 1)
    finally:
        await client.close()


class SleepLog:
    """The client module's ``asyncio``, recording the seconds of each ``sleep`` (its reconnect
    back-off and heartbeat interval): the back-off is checked without timing anything."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(delay)


async def test_reconnect_after_server_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange_server.rpc import client as client_module

    sleeps = SleepLog()
    monkeypatch.setattr(client_module, "asyncio", sleeps)
    port = free_port()
    addr = f"tcp@127.0.0.1:{port}"
    server = await start_server(FakeService(), [addr])
    client = await start_client([addr])
    try:
        assert await client.wait_connected(WAIT)
        await server.stop()
        await wait_for(lambda: not client.connected())
        sleeps.delays.clear()
        # down for a while: the client keeps retrying, its back-off doubling up to the cap
        await wait_for(lambda: client.reconnect_timeout in sleeps.delays)
        assert max(sleeps.delays) == client.reconnect_timeout
        assert all(b in (2 * a, client.reconnect_timeout)
                   for a, b in zip(sleeps.delays, sleeps.delays[1:], strict=False))
        server = await start_server(FakeService(), [addr])
        await wait_for(client.connected)
        assert orjson.loads(await client.call("balance.query", [0, 1], 8))["id"] == 8
        assert client.connects == 2
    finally:
        await client.close()
        await server.stop()


async def test_failover_round_robin_across_addresses() -> None:
    first, second = f"tcp@127.0.0.1:{free_port()}", f"tcp@127.0.0.1:{free_port()}"
    server_b = await start_server(FakeService(), [second])
    client = await start_client([first, second])  # the first address is down
    server_a: RpcServer | None = None
    try:
        assert await client.wait_connected(WAIT)
        assert client.peer == second
        assert orjson.loads(await client.call("balance.query", [0, 1], 1))["id"] == 1
        # the second goes away and the first comes up: the client moves over
        server_a = await start_server(FakeService(), [first])
        await server_b.stop()
        await wait_for(lambda: client.peer == first)
        assert orjson.loads(await client.call("balance.query", [0, 2], 2))["id"] == 2
    finally:
        await client.close()
        await server_b.stop()
        if server_a is not None:
            await server_a.stop()


async def test_reply_larger_than_client_max_pkg_size_drops_connection() -> None:
    server = await start_server(FakeService(), ["tcp@127.0.0.1:0"])
    client = await start_client(server.addresses, max_pkg_size=1000)
    try:
        assert await client.wait_connected(WAIT)
        with pytest.raises(ConnectionError):
            await client.call("balance.query", ["big"], 1)
        await wait_for(client.connected, WAIT)  # and it reconnects
    finally:
        await client.close()
        await server.stop()


async def test_many_requests_flow_control() -> None:
    """More requests in flight than the server runs at once: it pauses reading, none lost."""
    server = await start_server(FakeService(), ["tcp@127.0.0.1:0"], max_inflight=16)
    client = await start_client(server.addresses)
    try:
        assert await client.wait_connected(WAIT)
        bodies = await asyncio.gather(*(client.call("balance.query", [0.01, i], i)
                                        for i in range(300)))
        assert [orjson.loads(b)["id"] for b in bodies] == list(range(300))
    finally:
        await client.close()
        await server.stop()
