"""accesshttp on the wire: statuses, empty bodies, connection handling, batches, bad input."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("http") / "data").start()
    yield srv
    assert srv.stop() == 0


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes, read until the server closes the connection (or times out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)) + extra + b"\r\n" + body


def test_success_shape(server: ServerProcess) -> None:
    status, body = server.raw('{"method": "asset.list", "params": [], "id": 5}')
    assert status == 200
    assert body.startswith(b'{"error": null, "result": [{"name": "BCH", "prec": 8}')
    assert body.endswith(b', "id": 5}')


@pytest.mark.parametrize("body", [
    b"not json", b"{}", b"[]", b"1", b'"x"', b"null",
    b'{"method": "asset.list", "params": [], "id": "1"}',
    b'{"method": "asset.list", "params": [], "id": 1.5}',
    b'{"method": "asset.list", "params": [], "id": true}',
    b'{"method": "asset.list", "params": {}, "id": 1}',
    b'{"method": 5, "params": [], "id": 1}',
    b'{"params": [], "id": 1}',
    b'{"method": "asset.list", "id": 1}',
    b'{"method": "asset.list", "params": []}',
    b'{"method": "asset.list", "params": [], "id": 99999999999999999999999}',
    b'\xff\xfe',
    b'[{"method": "asset.list", "params": [], "id": 1}, 5]',
])
def test_malformed_is_400_empty_and_closed(server: ServerProcess, body: bytes) -> None:
    reply = raw_exchange(server.port, post(body) + post(b'{"method":"asset.list","params":[],"id":1}'))
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"Content-Length: 0" in head
    assert rest == b""  # nothing more: the connection was closed after the 400


def test_get_and_empty_body_are_400(server: ServerProcess) -> None:
    # GET / is the index page (tests/integration/test_pages.py); a GET of any other path is the original's 400
    reply = raw_exchange(server.port, b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request") and b"Content-Length: 0" in reply
    assert server.raw(b"", method="POST") == (400, b"")


def test_unknown_method_404(server: ServerProcess) -> None:
    status, body = server.raw('{"method": "nope.nope", "params": [], "id": 3}')
    assert status == 404
    assert body == b'{"error": {"code": 4, "message": "method not found"}, "result": null, "id": 3}'


def test_backend_not_running_is_500(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra=["--disable", "marketprice"]).start()
    try:
        assert srv.raw('{"method": "market.last", "params": ["BTCBCH"], "id": 3}') == (500, b"")
        batch = json.dumps([{"method": "market.last", "params": ["BTCBCH"], "id": 4}])
        assert json.loads(srv.raw(batch)[1])[0]["error"] == {"code": 3,
                                                             "message": "service unavailable"}
    finally:
        assert srv.stop() == 0


def test_oversized_body(server: ServerProcess) -> None:
    big = json.dumps({"method": "asset.list", "params": ["x" * 200_000], "id": 1}).encode()
    reply = raw_exchange(server.port, post(big))
    assert reply.startswith(b"HTTP/1.1 413")
    # the server is still fine
    assert server.raw('{"method": "asset.list", "params": [], "id": 1}')[0] == 200


def test_keep_alive_and_pipelining(server: ServerProcess) -> None:
    requests = b"".join(post(b'{"method": "asset.list", "params": [], "id": %d}' % i) for i in range(20))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(requests)
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < 20 or not data.endswith(b', "id": 19}'):
            chunk = s.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
    ids = [int(part.rsplit(b'"id": ', 1)[1].rstrip(b"}")) for part in data.split(b"HTTP/1.1 ")[1:]]
    assert ids == list(range(20))


def test_date_header_uses_full_month_name(server: ServerProcess) -> None:
    reply = raw_exchange(server.port, post(b'{"method":"asset.list","params":[],"id":1}',
                                           b"Connection: close\r\n"))
    date = [line for line in reply.split(b"\r\n") if line.startswith(b"Date: ")][0]
    months = [b"January", b"February", b"March", b"April", b"May", b"June", b"July", b"August",
              b"September", b"October", b"November", b"December"]
    assert any(m in date for m in months) and date.endswith(b" GMT")


def test_batch_extension(server: ServerProcess) -> None:
    batch = [
        {"method": "asset.list", "params": [], "id": 1},
        {"method": "nope", "params": [], "id": 2},
        {"method": "balance.query", "params": [], "id": 3},
        {"method": "market.last", "params": ["BTCBCH"], "id": 4},
    ]
    status, body = server.raw(json.dumps(batch))
    assert status == 200
    replies = json.loads(body)
    assert [r["id"] for r in replies] == [1, 2, 3, 4]
    assert replies[0]["error"] is None
    assert replies[1]["error"] == {"code": 4, "message": "method not found"}
    assert replies[2]["error"] == {"code": 1, "message": "invalid argument"}
    assert replies[3] == {"error": None, "result": "0", "id": 4}  # marketprice: never traded
    assert server.raw(json.dumps([{"method": "asset.list", "params": [], "id": 1}] * 1001))[0] == 400


def test_bad_input_never_changes_state(server: ServerProcess) -> None:
    before = server.call("balance.query", 42)
    for params in ([42, "BTC", "deposit", 1, "1e999999", {}], [42, "BTC", "deposit", 1, "-0", {}],
                   [42, "BTC", "deposit", 1, "0x10", {}], [42, "BTC", "deposit", 2**64, "1", {}]):
        status, _ = server.raw(json.dumps({"method": "balance.update", "params": params, "id": 1}))
        assert status == 200
    after = server.call("balance.query", 42)
    # "-0" is a valid zero change (accepted), nothing else is
    assert after == before


def test_data_dir_lock(server: ServerProcess, tmp_path: Path) -> None:
    second = ServerProcess(server.data_dir)
    with pytest.raises(RuntimeError, match="another exchange-server"):
        second.start(timeout=20)
