"""accesshttp's protection limits: what one client may cost the gateway.

The gateway shares its process (in embedded mode, its event loop) with the engine, so a single
client must not be able to make it hold much memory, many file descriptors or the loop itself.
The defaults follow nginx and uvicorn where the original has nothing to say, and the original's
own keys where it has (``svr.keep_alive``, ``svr.max_pkg_size``).  docs/operations.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange_server.common.config import Node
from exchange_server.common.configread import load_fields, setting

#: The original's accesshttp sample config (config.md): the largest request body.
DEFAULT_MAX_BODY = 102400


@dataclass(frozen=True)
class HttpLimits:
    #: request line target (URL) in bytes; longer: 414
    max_url_size: int = setting(8192, minimum=256)
    #: all header names and values of one request in bytes; more: 431
    max_header_size: int = setting(16384, minimum=1024)
    #: request body in bytes (the original's ``svr.max_pkg_size``); more: 413, decided from
    #: Content-Length before the body is read, and while reading a chunked body
    max_body_size: int = setting(DEFAULT_MAX_BODY, skip=True)
    #: seconds an idle keep-alive connection stays open (the original's ``svr.keep_alive``)
    keep_alive: float = setting(3600.0, minimum=0.001)
    #: seconds to receive one request's headers and body, and most seconds a connection whose
    #: client does not read its replies may stay blocked; then the connection is closed
    request_timeout: float = setting(30.0, minimum=0.001)
    #: open connections per gateway (all its listeners); more are closed at once
    max_connections: int = setting(10000, minimum=1)
    #: requests read ahead of the one being answered (a batch counts as its N requests);
    #: at the bound the connection is not read until replies have gone out
    max_pipeline: int = setting(64, minimum=1)


def read_http_limits(svr: Node, max_body_size: int) -> HttpLimits:
    """The limits from an accesshttp config's ``svr`` block (every key optional but the
    original's ``max_pkg_size``, read with the rest of ``svr`` and passed in)."""
    return load_fields(HttpLimits, svr, max_body_size=max_body_size)
