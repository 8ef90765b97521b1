"""The status page: ``GET /status`` (HTML) and ``GET /status.json`` on the metrics port.

Why on the metrics port: it is the operator's port (loopback or a private address, never the
public API listener), and the data is what that port already exports.  The page is static
(exchange_server/status/static/status.html) and polls ``/status.json`` every two seconds;
the JSON is :func:`collect.build_status` over the process's own registry (embedded mode: the
whole exchange), or over every endpoint of a deployment for ``exchange-server status
--serve``.  When an admin token is configured, ``/status.json`` needs it as a bearer token
(the page takes it from its URL's ``#token=...`` fragment, which browsers never send).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import REGISTRY, generate_latest

from exchange_server.common.config import MysqlConfig
from exchange_server.common.metrics import Route

if TYPE_CHECKING:
    from exchange_server.status.collect import Target, Thresholds

StatusSource = Callable[[], dict[str, Any]]


def local_status(name: str = "embedded", thresholds: Thresholds | None = None) -> StatusSource:
    """The status of what this process exports (embedded: every service).  The judging code
    (status/collect.py) is imported on the first read, not while a restart starts."""

    def read() -> dict[str, Any]:
        from exchange_server.status.collect import Scrape, Target, Thresholds, build_status, parse_metrics

        values = parse_metrics(generate_latest(REGISTRY).decode())
        return build_status([Scrape(Target(name, "(this process)"), values)],
                            thresholds or Thresholds())

    return read


def remote_status(targets: list[Target], unwatched: list[str], thresholds: Thresholds,
                  log_db: MysqlConfig | None = None) -> StatusSource:
    def read() -> dict[str, Any]:
        from exchange_server.status.collect import build_status, collect, leader_history

        history = leader_history(log_db) if log_db is not None else None
        return build_status(collect(targets), thresholds, unwatched, history=history)

    return read


@functools.cache
def _page_html() -> bytes:
    """The page, read on its first request: importlib.resources (and the zipfile module it
    imports) cost a process start that never shows the page a few tens of milliseconds."""
    from importlib import resources

    return resources.files("exchange_server.status").joinpath("static/status.html").read_bytes()


def routes(source: StatusSource, admin_token: str | None = None) -> list[Route]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=_page_html(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def data(request: web.Request) -> web.Response:
        if admin_token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
                return web.json_response({"error": "require authentication"}, status=401)
        status = await asyncio.get_running_loop().run_in_executor(None, source)
        return web.json_response(status, headers={"Cache-Control": "no-store"})

    return [("/status", page), ("/status.json", data)]
