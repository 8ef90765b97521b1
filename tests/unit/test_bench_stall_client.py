"""bench_stall's HTTP client reads a reply whether it comes with a Content-Length or chunked.

Why: the server streams a batch's reply chunked once it outgrows what it holds (256 KiB), and
the client, reading only Content-Length, crashed there once the book had grown."""

from __future__ import annotations

import socket
import threading

from bench.bench_stall import Conn


def serve(listener: socket.socket, replies: list[bytes]) -> None:
    """Answer one connection's requests with ``replies`` in order, written a few bytes at a
    time (so the client must put the pieces together)."""
    conn, _ = listener.accept()
    with conn:
        buf = b""
        for reply in replies:
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(65536)
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(buf) < length:
                buf += conn.recv(65536)
            buf = buf[length:]
            for i in range(0, len(reply), 7):
                conn.sendall(reply[i:i + 7])


def test_replies_by_length_and_chunked_are_read_whole() -> None:
    big = b"[" + b",".join(b'{"id": %d}' % i for i in range(2000)) + b"]"
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                          for part in (big[:1000], big[1000:1001], big[1001:]))
               + b"0\r\n\r\n")
    plain = b'{"result": 1}'
    by_length = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(plain), plain)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=serve, args=(listener, [chunked, by_length, chunked]))
        server.start()
        conn = Conn(listener.getsockname()[1])
        try:
            assert conn.call(b"[]") == big
            assert conn.call(b"{}") == plain
            assert conn.call(b"[]") == big
        finally:
            conn.sock.close()
            server.join(30)
    assert not server.is_alive()
