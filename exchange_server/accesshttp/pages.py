"""What accesshttp answers to GET, so that a browser pointed at the gateway finds its way around
(everything else about GET stays the original's 400 with no body).

* ``GET /``: an index page: the markets (links to their pages) and the API reference (a link to
  the OpenRPC document and a table of the HTTP methods);
* ``GET /openrpc.json``: the OpenRPC document of the HTTP API (exchange_server.apidoc.openrpc),
  whose ``servers`` entry is this gateway as the client reached it: the request's ``Host`` and
  scheme (``X-Forwarded-Proto`` when a proxy such as nginx sets it);
* ``GET /market/<MARKET>``: the live market page (static/market.html with the market's name);
  a well-formed name that is not a market is a 404 page listing the markets;
* ``GET /static/<file>``: the pages' assets (exchange_server/accesshttp/static/);
* ``GET /market-config.json``: where the page finds the WebSocket API:
  ``{"ws_url": ..., "ws_port": ...}`` from the gateway's optional ``ws_url`` (a full URL, e.g.
  the public ``wss://`` address behind a proxy) and ``ws_port`` (accessws' port on the same
  host, as in embedded mode) attributes, each null when the process that runs the gateway does
  not set it.  The page takes its ``?ws=`` query parameter first, then ``ws_url``, then
  ``ws://<the page's host>:<ws_port>/``, then port 8090.

The pages that name markets ask matchengine (``market.list``) when they are requested, so the
answer is a :data:`Deferred` the connection awaits; when matchengine cannot answer, the index
says so and ``/market/<MARKET>`` serves the page anyway (it shows its own connection state).
"""

from __future__ import annotations

import asyncio
import functools
import html
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import orjson

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"application/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".json": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
    ".png": b"image/png",
    ".svg": b"image/svg+xml",
    ".ico": b"image/x-icon",
}
HTML = CONTENT_TYPES[".html"]

#: Market names are short ASCII words (the original's MARKET_NAME_MAX_LEN is 16 bytes).
_MARKET_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
_FILE_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}\Z")
#: A ``Host`` header worth repeating: a DNS name or IPv4 address, or a bracketed IPv6 address,
#: with an optional port.
_HOST_RE = re.compile(rb"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])"
                      rb"(?::[0-9]{1,5})?\Z")

_CODE_RE = re.compile(r"`([^`]+)`")

#: (status, body, content type)
Page = tuple[int, bytes, bytes]
#: A page that needs a backend first: the connection awaits it.
Deferred = Callable[[], Awaitable[Page]]
Answer = Page | Deferred


async def resolve(answer: Answer) -> Page:
    """The page an :data:`Answer` stands for."""
    if callable(answer):
        return await answer()
    return answer


@functools.lru_cache(maxsize=64)
def _static(name: str) -> Page | None:
    if not _FILE_RE.match(name) or name.startswith("."):
        return None
    path = STATIC_DIR / name
    ctype = CONTENT_TYPES.get(path.suffix)
    if ctype is None or not path.is_file():
        return None
    return 200, path.read_bytes(), ctype


@functools.lru_cache(maxsize=4)
def _template(name: str) -> str:
    return (STATIC_DIR / name).read_text()


def server_url(host: bytes | None, forwarded_proto: bytes | None) -> str:
    """This gateway's URL as the client reached it, for the OpenRPC ``servers`` entry: "/"
    (relative: wherever the document came from) without a usable ``Host``."""
    if host is None or not _HOST_RE.match(host.strip()):
        return "/"
    scheme = "http"
    if forwarded_proto is not None:
        first = forwarded_proto.split(b",", 1)[0].strip().lower()
        if first in (b"http", b"https"):
            scheme = first.decode()
    return f"{scheme}://{host.strip().decode()}/"


def _openrpc(host: bytes | None, forwarded_proto: bytes | None) -> Page:
    from exchange_server.apidoc.openrpc import document_bytes

    return 200, document_bytes(server_url(host, forwarded_proto)), b"application/json"


async def market_names(app: Any) -> list[str] | None:
    """The markets matchengine knows (``market.list``), or None when it cannot tell."""
    backend = getattr(app, "backends", {}).get("matchengine")
    if backend is None or not backend.connected():
        return None
    try:
        reply = await asyncio.wait_for(backend.call("market.list", [], 0),
                                       getattr(app, "timeout", 1.0))
        result = orjson.loads(reply).get("result")
    except (TimeoutError, OSError, ValueError, AttributeError):
        return None
    if not isinstance(result, list):
        return None
    return [m["name"] for m in result if isinstance(m, dict) and isinstance(m.get("name"), str)]


def _market_links(names: list[str] | None) -> str:
    if names is None:
        return '<p class="notice">The market list is unavailable: matchengine did not answer.</p>'
    if not names:
        return '<p class="notice">No markets are configured.</p>'
    items = "".join(f'<li><a href="/market/{quote(n, safe="")}">{html.escape(n)}</a></li>'
                    for n in names)
    return f'<ul class="markets">{items}</ul>'


@functools.lru_cache(maxsize=1)
def _method_rows() -> str:
    from exchange_server.apidoc.openrpc import document

    return "".join(f"<tr><td><code>{html.escape(m['name'])}</code></td>"
                   f"<td>{_inline_code(m.get('summary', ''))}</td></tr>"
                   for m in document()["methods"])


def _inline_code(markdown: str) -> str:
    """A summary's Markdown ``code`` spans as <code>, everything else as text."""
    return _CODE_RE.sub(r"<code>\1</code>", html.escape(markdown))


def _index_page(status: int, title: str, notice: str, names: list[str] | None) -> Page:
    body = (_template("index.html")
            .replace("{{TITLE}}", html.escape(title))
            .replace("{{NOTICE}}", notice)
            .replace("{{MARKETS}}", _market_links(names))
            .replace("{{METHODS}}", _method_rows()))
    return status, body.encode(), HTML


async def _index(app: Any) -> Page:
    return _index_page(200, "exchange-server", "", await market_names(app))


def _market_page(market: str) -> Page:
    page = _template("market.html").replace("{{MARKET}}", html.escape(market, quote=True))
    return 200, page.encode(), HTML


async def _market(app: Any, market: str) -> Page:
    names = await market_names(app)
    if names is None or market in names:
        return _market_page(market)
    notice = (f'<p class="notice">There is no market <strong>{html.escape(market)}</strong>. '
              "These are the markets:</p>")
    return _index_page(404, f"{market}: no such market", notice, names)


def _config(app: Any) -> Page:
    ws_url = getattr(app, "ws_url", None)
    ws_port = getattr(app, "ws_port", None)
    config = {"ws_url": ws_url if isinstance(ws_url, str) else None,
              "ws_port": ws_port if isinstance(ws_port, int) else None}
    return 200, orjson.dumps(config), b"application/json"


def handle_get(url: bytes, app: Any, host: bytes | None = None,
               forwarded_proto: bytes | None = None) -> Answer | None:
    """The answer to ``GET url`` (``host``, ``forwarded_proto``: the request's ``Host`` and
    ``X-Forwarded-Proto`` headers), or None when the path is not one of ours (then 400)."""
    try:
        path = unquote(url.split(b"?", 1)[0].decode("ascii"), errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    if path == "/":
        return functools.partial(_index, app)
    if path == "/openrpc.json":
        return _openrpc(host, forwarded_proto)
    if path.startswith("/static/"):
        return _static(path[len("/static/"):])
    if path.startswith("/market/"):
        market = path[len("/market/"):]
        if not _MARKET_RE.match(market):
            return None
        return functools.partial(_market, app, market)
    if path == "/market-config.json":
        return _config(app)
    return None
