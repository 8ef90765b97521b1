"""What accesshttp answers to GET (everything else about GET stays a 400 with no body).

* ``GET /openrpc.json``: the OpenRPC document of the HTTP API (exchange_server.apidoc.openrpc);
* ``GET /market/<MARKET>``: the live market page (static/market.html with the market's name);
* ``GET /static/<file>``: the page's assets (exchange_server/accesshttp/static/);
* ``GET /market-config.json``: where the page finds the WebSocket API:
  ``{"ws_url": ..., "ws_port": ...}`` from the gateway's optional ``ws_url`` (a full URL, e.g.
  the public ``wss://`` address behind a proxy) and ``ws_port`` (accessws' port on the same
  host, as in embedded mode) attributes, each null when the process that runs the gateway does
  not set it.  The page takes its ``?ws=`` query parameter first, then ``ws_url``, then
  ``ws://<the page's host>:<ws_port>/``, then port 8090.
"""

from __future__ import annotations

import functools
import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

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

#: Market names are short ASCII words (the original's MARKET_NAME_MAX_LEN is 16 bytes).
_MARKET_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
_FILE_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}\Z")

#: (status, body, content type)
Page = tuple[int, bytes, bytes]


@functools.lru_cache(maxsize=64)
def _static(name: str) -> Page | None:
    if not _FILE_RE.match(name) or name.startswith("."):
        return None
    path = STATIC_DIR / name
    ctype = CONTENT_TYPES.get(path.suffix)
    if ctype is None or not path.is_file():
        return None
    return 200, path.read_bytes(), ctype


@functools.lru_cache(maxsize=1)
def _market_template() -> str:
    return (STATIC_DIR / "market.html").read_text()


def _openrpc() -> Page:
    from exchange_server.apidoc.openrpc import document_bytes

    return 200, document_bytes(), b"application/json"


def handle_get(url: bytes, app: Any) -> Page | None:
    """The response to ``GET url``, or None when the path is not one of ours (then 400)."""
    try:
        path = unquote(url.split(b"?", 1)[0].decode("ascii"), errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    if path == "/openrpc.json":
        return _openrpc()
    if path.startswith("/static/"):
        return _static(path[len("/static/"):])
    if path.startswith("/market/"):
        market = path[len("/market/"):]
        if not _MARKET_RE.match(market):
            return None
        try:
            template = _market_template()
        except OSError:
            return None
        page = template.replace("{{MARKET}}", html.escape(market, quote=True))
        return 200, page.encode(), CONTENT_TYPES[".html"]
    if path == "/market-config.json":
        ws_url = getattr(app, "ws_url", None)
        ws_port = getattr(app, "ws_port", None)
        config = {"ws_url": ws_url if isinstance(ws_url, str) else None,
                  "ws_port": ws_port if isinstance(ws_port, int) else None}
        return 200, orjson.dumps(config), b"application/json"
    return None
