"""accesshttp's limits against a real server: what one client may cost it (limits.py).

Each finding has its regression test: long request lines, headers and bodies are refused
before they are read in full; idle, mid-header and mid-body connections are closed after a
small configured keep-alive / request timeout; connections beyond a small configured maximum
are closed at once; a client pipelining without reading its replies does not grow the server
and does not stop it answering others; a batch of 1,000 and a kline over a week are answered.
Waits poll with generous timeouts: nothing here asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import resource
import select
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange_server.accesshttp.limits import HttpLimits
from exchange_server.accesshttp.standalone import load_accesshttp
from exchange_server.common.config import ConfigError
from exchange_server.common.limits import KLINE_MAX_ROWS
from tests.support.server import ServerProcess, free_port

#: the configured limits of the servers below (small, so that the tests wait little)
KEEP_ALIVE = 1.0
REQUEST_TIMEOUT = 1.0
MAX_CONNECTIONS = 24
MAX_BODY = 102400
GENEROUS = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    extra = ["--http-keep-alive", str(KEEP_ALIVE), "--http-request-timeout", str(REQUEST_TIMEOUT),
             "--http-max-pipeline", "16"]
    srv = ServerProcess(tmp_path_factory.mktemp("limits") / "data", extra=extra).start()
    yield srv
    assert srv.stop() == 0


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)) + extra + b"\r\n" + body


def read_until_closed(s: socket.socket, timeout: float = GENEROUS) -> bytes:
    """What the server sends until it closes the connection (a reset counts as closed)."""
    s.settimeout(timeout)
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def stream_until_answered(s: socket.socket, first: bytes, filler: bytes, total: int) -> tuple[bytes, int]:
    """Send ``first`` then ``filler`` repeatedly, up to ``total`` bytes, until the server
    answers; return (the answer, bytes sent)."""
    s.sendall(first)
    sent = len(first)
    while sent < total:
        readable, _, _ = select.select([s], [], [], 0)
        if readable:
            break
        try:
            s.sendall(filler)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(filler)
    return read_until_closed(s), sent


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:100]
    return int(reply[9:12])


def assert_alive(server: ServerProcess) -> None:
    assert server.call("market.list") is not None


# -- configuration --------------------------------------------------------------------------------


def accesshttp_config(**svr: Any) -> dict[str, Any]:
    def client(name: str, port: int) -> dict[str, Any]:
        return {"name": name, "addr": f"tcp@127.0.0.1:{port}", "max_pkg_size": 2000000}

    return {"svr": {"bind": "tcp@0.0.0.0:8080", "max_pkg_size": 102400, **svr},
            "matchengine": client("matchengine", 7316), "marketprice": client("marketprice", 7416),
            "readhistory": client("readhistory", 7424)}


def test_limits_come_from_the_svr_block() -> None:
    assert load_accesshttp(accesshttp_config()).limits == HttpLimits()
    config = load_accesshttp(accesshttp_config(
        keep_alive=60, request_timeout=5.5, max_connections=100, max_pipeline=8,
        max_url_size=4096, max_header_size=8192, max_pkg_size=5000))
    assert config.limits == HttpLimits(max_url_size=4096, max_header_size=8192, max_body_size=5000,
                                       keep_alive=60.0, request_timeout=5.5, max_connections=100,
                                       max_pipeline=8)
    for bad in ({"keep_alive": 0}, {"max_connections": 0}, {"max_pipeline": "x"}):
        with pytest.raises(ConfigError):
            load_accesshttp(accesshttp_config(**bad))


# -- sizes ------------------------------------------------------------------------------------------


def test_long_url_is_414_before_it_is_read(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        reply, sent = stream_until_answered(s, b"GET /", b"a" * 65536, 100 * 1024 * 1024)
    assert status_of(reply) == 414
    assert b"Connection: close" in reply
    assert sent < 100 * 1024 * 1024
    assert_alive(server)


def test_url_at_the_limit_is_read(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_of(read_until_closed(s)) != 414


def test_headers_over_16k_are_431(server: ServerProcess) -> None:
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
    body = b'{"method": "market.list", "params": [], "id": 1}'
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post(body, headers))
        assert status_of(read_until_closed(s)) == 431
    with socket.create_connection(("127.0.0.1", server.port)) as s:  # under the limit: fine
        s.sendall(post(body, headers[: 10 * 1000] + b"\r\nConnection: close\r\n"))
        assert status_of(read_until_closed(s)) == 200


@pytest.mark.parametrize("which", ["server", "small_server"])  # the second has an admin token
def test_one_endless_header_is_431_before_it_is_read(request: pytest.FixtureRequest,
                                                     which: str) -> None:
    server: ServerProcess = request.getfixturevalue(which)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        reply, sent = stream_until_answered(s, head, b"t" * 65536, 100 * 1024 * 1024)
    assert status_of(reply) == 431
    assert sent < 100 * 1024 * 1024
    assert_alive(server)


def test_body_over_max_is_413_from_content_length_before_the_body(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        # only the head: the answer must come without a byte of the body
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        reply = read_until_closed(s)
    assert status_of(reply) == 413
    assert b"Connection: close" in reply


def test_chunked_body_over_max_is_413_while_read(server: ServerProcess) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        reply, sent = stream_until_answered(s, head, chunk, 100 * 1024 * 1024)
    assert status_of(reply) == 413
    assert sent < 100 * 1024 * 1024


CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(("first", "filler", "status"), [
    (CHUNKED_HEAD + b"0\r\n", b"X-T: y\r\n" * 8192, 431),  # many trailers
    (CHUNKED_HEAD + b"0\r\nX-T: ", b"y" * 65536, 400),  # one endless trailer
    (b"", b"\r\n" * 32768, 400),  # empty lines before a request line
    (CHUNKED_HEAD + b"1;", b"a" * 65536, 400),  # an endless chunk extension
    (CHUNKED_HEAD, b"0" * 65536, 400),  # an endless chunk size
    (CHUNKED_HEAD + b"5\r\nhello\r\n1;", b"a" * 65536, 400),  # the same after some body
])
def test_floods_without_a_callback_are_refused(server: ServerProcess, first: bytes,
                                                 filler: bytes, status: int) -> None:
    """What the parser reads without telling (trailers, line ends between requests, chunk
    size lines) counts against the head limits: refused after a few KiB, never read until a
    timeout; others are answered meanwhile."""
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(first)
        assert_alive(server)
        reply, sent = stream_until_answered(s, b"", filler, 100 * 1024 * 1024)
    assert status_of(reply) == status
    assert b"Connection: close" in reply
    assert sent < 10 * 1024 * 1024
    assert_alive(server)


def test_what_stays_under_the_stray_limits_is_answered(server: ServerProcess) -> None:
    body = b'{"method": "market.list", "params": [], "id": 7}'
    one_byte_chunks = b"".join(b"1;ext=%d\r\n%c\r\n" % (i, c) for i, c in enumerate(body))
    request = (b"\r\n" * 100 + CHUNKED_HEAD[:-2] + b"Connection: close\r\n\r\n" + one_byte_chunks
               + b"0\r\n" + b"".join(b"X-T-%d: %s\r\n" % (i, b"v" * 100) for i in range(50))
               + b"\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(request)
        reply = read_until_closed(s)
    assert status_of(reply) == 200 and reply.endswith(b', "id": 7}')


def test_body_at_max_is_answered(server: ServerProcess) -> None:
    body = json.dumps({"method": "market.list", "params": [], "id": 1}).encode()
    body += b" " * (MAX_BODY - len(body))
    status, reply = server.raw(body)
    assert status == 200 and json.loads(reply)["error"] is None


# -- time -------------------------------------------------------------------------------------------


def test_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    body = b'{"method": "market.list", "params": [], "id": 1}'
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(post(body))
        reply = read_until_closed(s)  # answered, then closed once idle for keep_alive
    assert status_of(reply) == 200 and b"Connection: close" not in reply
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        assert read_until_closed(s) == b""  # never sent anything: closed too


def test_slowloris_mid_header_is_closed(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert read_until_closed(s) == b""


def test_slowloris_mid_body_is_closed(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"method\"")
        assert read_until_closed(s) == b""


def test_slowloris_dripping_header_is_closed(server: ServerProcess) -> None:
    """A byte now and then does not extend the request timeout."""
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        deadline = time.monotonic() + GENEROUS
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                s.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            readable, _, _ = select.select([s], [], [], REQUEST_TIMEOUT / 4)
            if readable:
                closed = read_until_closed(s) == b""
        assert closed


# -- connections ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    extra = ["--http-max-connections", str(MAX_CONNECTIONS), "--admin-token", "secret",
             "--public-port", str(free_port())]
    srv = ServerProcess(tmp_path_factory.mktemp("conns") / "data", extra=extra).start()
    yield srv
    assert srv.stop() == 0


def answered(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as s:
            s.sendall(post(b'{"method": "market.list", "params": [], "id": 1}',
                           b"Connection: close\r\n"))
            reply = read_until_closed(s)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_maximum_are_closed_at_once(small_server: ServerProcess) -> None:
    """The maximum holds for the main and the public listener together."""
    public = int(small_server.extra[small_server.extra.index("--public-port") + 1])
    held = []
    try:
        while len(held) < MAX_CONNECTIONS:
            port = small_server.port if len(held) % 2 else public
            held.append(socket.create_connection(("127.0.0.1", port)))
        # every one of them is served (each answers a request and stays open)
        for s in held:
            s.sendall(post(b'{"method": "market.list", "params": [], "id": 1}'))
            s.settimeout(GENEROUS)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        # one more on either: closed without an answer
        assert not answered(small_server.port)
        assert not answered(public)
        held.pop(0).close()  # a public one
        deadline = time.monotonic() + GENEROUS
        while not answered(small_server.port):
            assert time.monotonic() < deadline, "a freed slot was never reused"
    finally:
        for s in held:
            s.close()
    assert "max_connections" in small_server.log()


def test_running_out_of_file_descriptors_does_not_stop_accepting(tmp_path: Path) -> None:
    """With the open-file limit below max_connections, 400 idle sockets exhaust the server's
    descriptors: connections beyond are dropped, and once they go it accepts again."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))  # inherited by the server only
    try:
        srv = ServerProcess(tmp_path / "data", extra=["--http-max-connections", "1000"])
        srv.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    held = []
    try:
        for _ in range(400):
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", srv.port), timeout=GENEROUS))
        for s in held:
            s.close()
        held = []
        deadline = time.monotonic() + GENEROUS
        while not answered(srv.port):
            assert time.monotonic() < deadline, "the server stopped accepting"
        assert "open-file limit" in srv.log()
    finally:
        for s in held:
            s.close()
        assert srv.stop() == 0


# -- pipelines and expensive requests ---------------------------------------------------------------


def server_rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fill_book(server: ServerProcess, orders: int) -> None:
    server.call("balance.update", 1, "BTC", "deposit", 1, "1000000", {})
    for i in range(orders):
        server.call("order.put_limit", 1, "BTCBCH", 1, "0.01", str(1000 + i), "0.002", "0.001", "t")


def test_unread_pipeline_keeps_memory_bounded_and_others_answered(server: ServerProcess) -> None:
    fill_book(server, 100)
    request = post(b'{"method": "order.book", "params": ["BTCBCH", 1, 0, 100], "id": 1}')
    pipeline = request * 100_000
    before = server_rss_kib(server)
    with socket.create_connection(("127.0.0.1", server.port)) as attacker:
        attacker.setblocking(False)
        sent = 0
        # send until the server stops reading (its replies are never read)
        while sent < len(pipeline):
            _, writable, _ = select.select([], [attacker], [], 1.0)
            if not writable:
                break
            try:
                sent += attacker.send(pipeline[sent:sent + 65536])
            except BlockingIOError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                break  # closed: it took no reply for request_timeout
        assert sent < len(pipeline), "the server read 100,000 requests nobody takes answers to"
        print(f"sent {sent} of {len(pipeline)} bytes before the server stopped reading")
        assert_alive(server)
        grown = server_rss_kib(server) - before
        print(f"server RSS {before} KiB, +{grown} KiB")
        assert grown < 64 * 1024, f"RSS grew by {grown} KiB"
    assert_alive(server)
    assert server_rss_kib(server) - before < 64 * 1024


def gauge(server: ServerProcess, name: str, service: str = "accesshttp") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=GENEROUS) as response:
        text = response.read().decode()
    match = re.search(rf'^{re.escape(name)}\{{service="{service}"\}} (\S+)$', text, re.M)
    assert match, f"no {name} in the metrics"
    return float(match.group(1))


def order_book_batch(n: int, limit: int) -> bytes:
    return json.dumps([{"method": "order.book", "params": ["BTCBCH", 1, 0, limit], "id": i}
                       for i in range(n)]).encode()


def test_unread_batch_replies_keep_memory_bounded_and_closed_clients_cost_nothing(
        tmp_path: Path) -> None:
    """20 clients each send two batches of 1,000 order.book (about 30 MB of replies each)
    and read nothing: the server holds a bounded part of each reply (it stops calling while
    the client does not take what was sent) and answers others; once they close, their
    connections go (nothing waits for request_timeout, 600 s here) and nothing is built for
    them any more."""
    srv = ServerProcess(tmp_path / "data", extra=["--http-request-timeout", "600"]).start()
    clients: list[socket.socket] = []
    try:
        fill_book(srv, 100)
        request = post(order_book_batch(1000, 101)) * 2
        before = server_rss_kib(srv)
        for _ in range(20):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(request)
            clients.append(s)
        deadline = time.monotonic() + GENEROUS
        waiting = list(clients)
        while waiting:  # every one was sent part of its first reply
            assert time.monotonic() < deadline, "no reply started"
            readable, _, _ = select.select(waiting, [], [], 1.0)
            waiting = [s for s in waiting if s not in readable]
        assert_alive(srv)
        grown = server_rss_kib(srv) - before
        print(f"server RSS {before} KiB, +{grown} KiB with 20 clients not reading")
        assert grown < 150 * 1024, f"RSS grew by {grown} KiB"
        for s in clients:
            s.close()
        clients = []
        deadline = time.monotonic() + GENEROUS
        while gauge(srv, "exchange_connections") > 0:
            assert time.monotonic() < deadline, "closed clients' connections stayed"
        assert_alive(srv)
        assert server_rss_kib(srv) - before < 150 * 1024
    finally:
        for s in clients:
            s.close()
        assert srv.stop() == 0


def test_client_that_half_closes_while_not_read_gets_no_more_work(tmp_path: Path) -> None:
    """A client that sent a long pipeline and shut its side is not read (the pipeline is
    full), so its end is seen by looking at the socket: the connection goes, long before
    request_timeout."""
    srv = ServerProcess(tmp_path / "data", extra=["--http-request-timeout", "600",
                                                  "--http-max-pipeline", "1"]).start()
    try:
        fill_book(srv, 100)
        one = post(b'{"method": "order.book", "params": ["BTCBCH", 1, 0, 101], "id": 1}')
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(one * 200)  # all of it reaches the server (its FIN too), which reads one
        s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + GENEROUS
        while gauge(srv, "exchange_connections") > 0:
            assert time.monotonic() < deadline, "a half-closed client kept its connection"
        s.close()
        assert_alive(srv)
    finally:
        assert srv.stop() == 0


def test_large_batch_reply_is_streamed_whole(server: ServerProcess) -> None:
    """A batch reply over 256 KiB comes chunked (HTTP/1.1, kept alive) or until the close
    (HTTP/1.0), and is the same JSON."""
    server.call("balance.update", 7, "BTC", "deposit", 1, "1000000", {})
    for i in range(100):  # its own orders: the module's tests run in any order
        server.call("order.put_limit", 7, "BTCBCH", 1, "0.01", str(2000 + i), "0.002", "0.001", "t")
    batch = order_book_batch(1000, 101)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=GENEROUS)
    try:
        conn.request("POST", "/", body=batch)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
        conn.request("POST", "/", body=b'{"method": "market.list", "params": [], "id": 2}')
        assert conn.getresponse().read().endswith(b', "id": 2}')  # kept alive
    finally:
        conn.close()
    replies = json.loads(body)
    assert [r["id"] for r in replies] == list(range(1000))
    assert len(body) > 256 * 1024
    assert all(len(r["result"]["orders"]) >= 100 for r in replies)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(batch), batch))
        reply = read_until_closed(s)
    assert status_of(reply) == 200 and b"Connection: close" in reply
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1]) == replies


def test_pipeline_longer_than_the_bound_is_answered_in_order(server: ServerProcess) -> None:
    """200 requests in one write to a server reading 16 ahead: the rest of what it received
    waits unparsed, and every reply comes, in order."""
    n = 200
    data = b"".join(post(b'{"method": "market.last", "params": ["BTCBCH"], "id": %d}' % i)
                    for i in range(n))
    with socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS) as s:
        s.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < n or not received.endswith(b', "id": %d}' % (n - 1)):
            chunk = s.recv(65536)
            assert chunk, "connection closed early"
            received += chunk
    ids = [int(part.split(b"}", 1)[0]) for part in received.split(b'"id": ')[1:]]
    assert ids == list(range(n))


def test_chunked_body_under_the_limit_is_answered(server: ServerProcess) -> None:
    body = b'{"method": "market.list", "params": [], "id": 9}'
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:])
               + b"0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(request)
        reply = read_until_closed(s)
    assert status_of(reply) == 200 and reply.endswith(b', "id": 9}')


def test_batch_of_1000_is_answered_in_order(server: ServerProcess) -> None:
    batch = [{"method": "order.book", "params": ["BTCBCH", 1, 0, 10], "id": i} for i in range(1000)]
    status, body = server.raw(json.dumps(batch))
    assert status == 200
    replies = json.loads(body)
    assert [r["id"] for r in replies] == list(range(1000))
    assert all(r["error"] is None and len(r["result"]["orders"]) <= 10 for r in replies)


def test_kline_of_one_second_over_a_week(server: ServerProcess) -> None:
    server.call("balance.update", 4, "BTC", "deposit", 1, "10", {})
    server.call("balance.update", 5, "BCH", "deposit", 1, "1000000", {})
    server.call("order.put_limit", 4, "BTCBCH", 1, "0.01", "500", "0.002", "0.001", "t")
    server.call("order.put_limit", 5, "BTCBCH", 2, "0.01", "500", "0.002", "0.001", "t")
    deadline = time.monotonic() + GENEROUS
    while True:
        now = int(time.time())
        rows = server.call("market.kline", "BTCBCH", now - 7 * 86400, now, 1)
        if rows and rows[-1][2] == "500":
            break
        assert time.monotonic() < deadline, "the deal never reached marketprice"
    assert len(rows) <= KLINE_MAX_ROWS
    assert all(row[7] == "BTCBCH" for row in rows)
    assert all(b[0] - a[0] == 1 for a, b in zip(rows, rows[1:], strict=False))
