"""The original's internal RPC on the wire: packets captured between the original's C
accesshttp and its matchengine / readhistory (tests/data/rpc/) against this project.

Why: operators migrate one service at a time, so a C accesshttp must be able to talk to this
project's matchengine and readhistory, and this project's accesshttp to the C services.  The
checks: every captured packet carries a valid IEEE CRC-32 and repacks byte for byte; every
captured request sent to this project's services (production processes on MariaDB, in the
captured order, so the state matches) is answered with the captured reply's header fields, a
valid CRC and the same JSON body (clock fields aside); this project's rpc client packs the same
calls with the same header fields and params; heartbeats are the captured ones; and this
project's client and servers talk to each other both ways.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from exchange_server.rpc import protocol as p
from exchange_server.rpc.client import RpcClient, SequenceCounter
from exchange_server.rpc.commands import MATCHENGINE_COMMANDS, READHISTORY_COMMANDS
from exchange_server.rpc.server import signed_req_id
from tests.support import rpc_capture as cap
from tests.support.topology import Topology

ME_PAIRS = cap.exchanges(cap.MATCHENGINE)
RH_PAIRS = cap.exchanges(cap.READHISTORY)


# -- the captured packets themselves -----------------------------------------------------------


def _repack(packet: p.Packet) -> bytes:
    """``packet`` on the wire again, through the public packer."""
    return p.pack(packet.command, packet.pkg_type, packet.sequence, packet.req_id, packet.body,
                  packet.ext, packet.result)


def test_capture_is_complete() -> None:
    assert len(cap.load(cap.MATCHENGINE)) == 164
    assert len(cap.load(cap.READHISTORY)) == 18
    assert len(ME_PAIRS) == 78 and len(RH_PAIRS) == 5


@pytest.mark.parametrize("path", [cap.MATCHENGINE, cap.READHISTORY], ids=lambda x: x.stem)
def test_every_captured_packet_has_an_ieee_crc_and_repacks_byte_for_byte(path: Path) -> None:
    for c in cap.load(path):
        assert cap.crc_ok(c.raw)
        assert _repack(c.packet) == c.raw
        assert p.Decoder(1 << 24).feed(c.raw)[0].body == c.packet.body


def test_captured_replies_repeat_the_request_header() -> None:
    for request, reply in ME_PAIRS + RH_PAIRS:
        assert reply.packet.pkg_type == p.TYPE_REPLY
        assert request.packet.reply(reply.packet.body) == reply.raw


# -- this project's client ---------------------------------------------------------------------


class _Recorder(asyncio.Protocol):
    """A peer that records the packets it gets and answers each with an empty object."""

    def __init__(self, raw: list[bytes]) -> None:
        self.raw = raw
        self.decoder = p.Decoder(1 << 24)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for packet in self.decoder.feed(data):
            self.raw.append(_repack(packet))
            if packet.command:
                self.transport.write(packet.reply(b"{}"))


async def _recorder() -> tuple[asyncio.AbstractServer, int, list[bytes]]:
    raw: list[bytes] = []
    server = await asyncio.get_running_loop().create_server(lambda: _Recorder(raw),
                                                            "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], raw


async def test_client_packs_the_captured_requests() -> None:
    """One counter per captured connection (an accesshttp worker) shared by its matchengine
    and readhistory clients, as the original's worker numbers its requests."""
    me_server, me_port, me_raw = await _recorder()
    rh_server, rh_port, rh_raw = await _recorder()
    calls: list[tuple[str, cap.Captured]] = [("me", r) for r, _ in ME_PAIRS]
    calls += [("rh", r) for r, _ in RH_PAIRS]
    clients: dict[tuple[str, int], RpcClient] = {}
    counters: dict[int, SequenceCounter] = {}
    try:
        for service, request in calls:
            key = (service, request.conn)
            if key not in clients:
                counter = counters.setdefault(request.conn, SequenceCounter())
                port = me_port if service == "me" else rh_port
                clients[key] = RpcClient(f"{service}{request.conn}", [f"tcp@127.0.0.1:{port}"],
                                         max_pkg_size=1 << 20, sequence=counter)
                await clients[key].start()
                assert await clients[key].wait_connected(10)
            table = MATCHENGINE_COMMANDS if service == "me" else READHISTORY_COMMANDS
            params = orjson.loads(request.packet.body)
            body = await clients[key].call(table[request.packet.command], params,
                                           signed_req_id(request.packet.req_id))
            assert body == b"{}"
    finally:
        for client in clients.values():
            await client.close()
        me_server.close()
        rh_server.close()
    sent = [c for c in me_raw + rh_raw if p.HEADER.unpack_from(c)[1] != p.CMD_HEARTBEAT]
    assert len(sent) == len(calls)
    for (_, request), raw in zip(calls, sent, strict=True):
        ours = cap.Captured(request.conn, "req", raw, p.decode_datagram(raw, 1 << 24))
        assert cap.crc_ok(raw)
        assert ours.header == request.header
        assert orjson.loads(ours.packet.body) == orjson.loads(request.packet.body)


async def test_client_heartbeat_is_the_captured_one() -> None:
    captured = {c.raw for c in cap.load(cap.MATCHENGINE) + cap.load(cap.READHISTORY)
                if c.packet.command == p.CMD_HEARTBEAT and c.direction == "req"}
    assert len(captured) == 1
    server, port, raw = await _recorder()
    client = RpcClient("hb", [f"tcp@127.0.0.1:{port}"], max_pkg_size=10240)
    await client.start()
    try:
        assert await client.wait_connected(10)
        deadline = time.monotonic() + 60
        while not raw:
            assert time.monotonic() < deadline, "no heartbeat"
            await asyncio.sleep(0.05)
    finally:
        await client.close()
        server.close()
    assert raw[0] in captured


# -- this project's services, production processes ---------------------------------------------


@pytest.fixture
def services(tmp_path: Path, mysql_config: Any) -> Iterator[Topology]:
    topo = Topology(tmp_path, mysql_config("test_rpcorig_log"),
                    mysql_config("test_rpcorig_history"), 8,
                    topic_prefix=f"rpcorig{uuid.uuid4().hex[:8]}_")
    try:
        topo.start("matchengine")
        topo.start("readhistory")
        yield topo
    finally:
        topo.stop("readhistory")
        topo.stop("matchengine")


def _connect(port: int, timeout: float = 30.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            return sock
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def _exchange(sock: socket.socket, raw: bytes) -> bytes:
    """Send one packet, read exactly one packet back (raw bytes)."""
    sock.sendall(raw)
    data = b""
    while len(data) < p.HEADER_SIZE:
        chunk = sock.recv(65536)
        assert chunk, "connection closed by the service"
        data += chunk
    fields = p.HEADER.unpack_from(data)
    size = p.HEADER_SIZE + fields[7] + fields[8]
    while len(data) < size:
        chunk = sock.recv(65536)
        assert chunk, "connection closed by the service"
        data += chunk
    assert len(data) == size, "more than one packet came back"
    return data


def _assert_same_reply(request: cap.Captured, expected: cap.Captured, raw: bytes) -> None:
    assert cap.crc_ok(raw), f"req_id {request.packet.req_id}: bad crc"
    got = cap.Captured(request.conn, "rep", raw, p.decode_datagram(raw, 1 << 24))
    assert got.header == expected.header
    # same keys in the same order, same values; clock fields aside
    assert (orjson.dumps(cap.without_clock(orjson.loads(got.packet.body)))
            == orjson.dumps(cap.without_clock(orjson.loads(expected.packet.body)))), (
        request.packet.body, got.packet.body, expected.packet.body)


def _replay(port: int, pairs: list[tuple[cap.Captured, cap.Captured]]) -> None:
    socks: dict[int, socket.socket] = {}
    try:
        for request, expected in pairs:
            sock = socks.get(request.conn) or socks.setdefault(request.conn, _connect(port))
            raw = _exchange(sock, request.raw)
            if cap.is_stale(request):
                assert cap.crc_ok(raw)  # the current book, not the original's cached one
                continue
            _assert_same_reply(request, expected, raw)
    finally:
        for sock in socks.values():
            sock.close()


def _replay_history(port: int, timeout: float = 60.0) -> None:
    """The history is written after the matchengine's reply: ask again until it is there."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _replay(port, RH_PAIRS)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _heartbeats(port: int, path: Path) -> None:
    packets = cap.load(path)
    request = next(c for c in packets if c.packet.command == 0 and c.direction == "req")
    reply = next(c for c in packets if c.packet.command == 0 and c.direction == "rep")
    sock = _connect(port)
    try:
        assert _exchange(sock, request.raw) == reply.raw
    finally:
        sock.close()


@pytest.mark.mysql
def test_captured_requests_to_our_matchengine_and_readhistory(services: Topology) -> None:
    me_port, rh_port = services.ports["matchengine"], services.ports["readhistory"]
    _heartbeats(me_port, cap.MATCHENGINE)
    _heartbeats(rh_port, cap.READHISTORY)
    _replay(me_port, ME_PAIRS)
    _replay_history(rh_port)

    # project to project, both ways: our client to our services gets what the C client got
    async def ours() -> None:
        me = RpcClient("me", [f"tcp@127.0.0.1:{me_port}"], max_pkg_size=1 << 20, timeout=30)
        rh = RpcClient("rh", [f"tcp@127.0.0.1:{rh_port}"], max_pkg_size=1 << 20, timeout=30)
        await me.start()
        await rh.start()
        try:
            assert await me.wait_connected(10) and await rh.wait_connected(10)
            # calls whose answer does not depend on when in the transcript they came
            checks = [(me, MATCHENGINE_COMMANDS, pair) for pair in ME_PAIRS[:2] + ME_PAIRS[-1:]]
            checks += [(rh, READHISTORY_COMMANDS, pair) for pair in RH_PAIRS]
            for client, table, (request, expected) in checks:
                body = await client.call(table[request.packet.command],
                                         orjson.loads(request.packet.body),
                                         signed_req_id(request.packet.req_id))
                assert (cap.without_clock(orjson.loads(body))
                        == cap.without_clock(orjson.loads(expected.packet.body)))
        finally:
            await me.close()
            await rh.close()

    asyncio.run(ours())
