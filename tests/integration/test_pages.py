"""The pages a browser finds on accesshttp, against a real ``exchange-server run``: the index at
``GET /`` (markets and the API reference), the 404 page of ``/market/<not a market>`` (the list
of markets), and both following the markets matchengine knows at the time of the request."""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Iterator
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pytest

from exchange_server.accesshttp import pages
from exchange_server.api.openrpc import document
from tests.support.server import ServerProcess

ADMIN_TOKEN = "pages-test-admin"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("pages") / "data",
                        extra=["--admin-token", ADMIN_TOKEN]).start()
    try:
        yield srv
    finally:
        srv.stop()


class Links(HTMLParser):
    """The ``href`` of every link, and the text of the page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _get(port: int, path: str) -> tuple[int, str | None, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read().decode()
    finally:
        conn.close()


def _markets(server: ServerProcess) -> list[str]:
    return [m["name"] for m in server.call("market.list")]


def test_index_links_every_market_and_the_api_reference(server: ServerProcess) -> None:
    status, ctype, body = _get(server.port, "/")
    assert status == 200 and ctype == "text/html; charset=utf-8"
    links = Links(body)
    markets = _markets(server)
    assert len(markets) >= 2
    assert [h for h in links.hrefs if h.startswith("/market/")] == \
        [f"/market/{m}" for m in markets]
    assert "/openrpc.json" in links.hrefs
    # every link leads somewhere: the market pages, the OpenRPC document, the stylesheet
    for href in [*links.hrefs[:3], "/openrpc.json", "/static/index.css"]:
        if href.startswith("/"):
            assert _get(server.port, href)[0] == 200, href
    # the API reference: every HTTP method with its summary
    text = " ".join(links.text)
    for method in document()["methods"]:
        assert method["name"] in text


def test_unknown_market_is_404_listing_the_markets(server: ServerProcess) -> None:
    status, ctype, body = _get(server.port, "/market/UNKNOWN")
    assert status == 404 and ctype == "text/html; charset=utf-8"
    links = Links(body)
    assert "UNKNOWN" in " ".join(links.text)
    assert [h for h in links.hrefs if h.startswith("/market/")] == \
        [f"/market/{m}" for m in _markets(server)]
    # names are case-sensitive, as in the API
    assert _get(server.port, "/market/btcbch")[0] == 404
    status, _, body = _get(server.port, "/market/BTCBCH")
    assert status == 200 and 'data-market="BTCBCH"' in body
    # not a market name at all: still the original's 400 with no body
    assert _get(server.port, "/market/%3Cscript%3E")[:3:2] == (400, "")


def test_pages_follow_markets_added_at_runtime(server: ServerProcess) -> None:
    assert _get(server.port, "/market/DOGEBCH")[0] == 404
    body = ('{"method": "config.update_market", "id": 1, "params": [{"name": "DOGEBCH", '
            '"stock": {"name": "BTC", "prec": 8}, "money": {"name": "BCH", "prec": 8}, '
            '"fee_prec": 4, "min_amount": "0.001"}]}')
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 200 and b'"error": null' in resp.read()
    finally:
        conn.close()
    assert _get(server.port, "/market/DOGEBCH")[0] == 200
    assert "/market/DOGEBCH" in Links(_get(server.port, "/")[2]).hrefs


def test_pages_keep_the_connection_and_the_order(server: ServerProcess) -> None:
    """A 404 page, the index and a JSON-RPC call pipelined on one connection: answered in
    order, and the connection stays open."""
    call = b'{"method": "market.last", "params": ["BTCBCH"], "id": 7}'
    data = (b"GET /market/NOPE HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(call), call))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        reader = sock.makefile("rb")
        replies = [_read_reply(reader) for _ in range(3)]
    assert [(status, b"Connection: close" in head) for status, head, _ in replies] == \
        [(404, False), (200, False), (200, False)]
    assert b"NOPE" in replies[0][2] and b"/openrpc.json" in replies[1][2]
    assert replies[2][2].endswith(b'"id": 7}')


def _read_reply(reader: Any) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one HTTP response with a Content-Length."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        assert line, "connection closed"
        head += line
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return int(head.split(b" ", 2)[1]), head, reader.read(length)

def test_a_get_with_a_body_is_still_400(server: ServerProcess) -> None:
    """A JSON-RPC request sent with GET gets the original's answer, not the index page."""
    call = b'{"method": "market.list", "params": [], "id": 1}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(call), call))
        status, head, body = _read_reply(sock.makefile("rb"))
    assert (status, body) == (400, b"") and b"Connection: close" in head


def _resolve(answer: pages.Answer | None) -> pages.Page:
    assert answer is not None
    return asyncio.run(pages.resolve(answer))


def test_without_matchengine_the_pages_still_answer() -> None:
    """The gateway's process has no matchengine connection (production, matchengine down):
    the index says so, a market page is served (it shows its own connection state)."""
    app = SimpleNamespace(backends={}, timeout=1.0)
    status, body, ctype = _resolve(pages.handle_get(b"/", app))
    assert status == 200 and b"market list is unavailable" in body
    status, body, _ = _resolve(pages.handle_get(b"/market/ANY", app))
    assert status == 200 and b'data-market="ANY"' in body

