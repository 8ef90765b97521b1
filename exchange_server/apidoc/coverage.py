"""Is everything the servers serve documented, and is everything documented served?

Why in the builder and not in :mod:`exchange_server.api`: answering needs accessws itself (its
method table is built by its server class), and the runtime description must not import the
servers.  The HTTP methods come from the method table accesshttp routes, the WebSocket methods
from accessws' handler table, the pushes from the declared table in
:mod:`exchange_server.common.methods` -- checked against accessws' market-data feeds, each of
which sends ``<feed>.update``.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange_server.accessws.config import AccessWsConfig
from exchange_server.accessws.server import AccessWs
from exchange_server.api.registry import http_methods, served_http_methods, ws_methods, ws_pushes
from exchange_server.common.methods import WS_PUSHES


def _server() -> AccessWs:
    return AccessWs(AccessWsConfig(), {})


def served_ws_methods() -> list[str]:
    """The methods accessws answers (its method table), in table order."""
    return list(_server().methods)


def served_ws_pushes() -> list[str]:
    """The notifications accessws sends: the declared push table."""
    return list(WS_PUSHES)


def undeclared_feed_pushes() -> list[str]:
    """``<feed>.update`` of each accessws polling feed that the push table does not declare."""
    return [feed.name + ".update" for feed in _server().feeds
            if feed.name + ".update" not in WS_PUSHES]


@dataclass
class Coverage:
    missing_http: list[str]
    missing_ws: list[str]
    missing_pushes: list[str]
    extra_http: list[str]
    extra_ws: list[str]
    extra_pushes: list[str]
    undeclared_pushes: list[str]

    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        out = []
        for label, names in (
            ("HTTP method without docs (add it to api/http_methods.py)", self.missing_http),
            ("WebSocket method without docs (add it to api/ws_methods.py)", self.missing_ws),
            ("WebSocket push without docs (add it to api/ws_methods.py)", self.missing_pushes),
            ("documented HTTP method that accesshttp does not route", self.extra_http),
            ("documented WebSocket method that accessws does not serve", self.extra_ws),
            ("documented push that accessws does not send", self.extra_pushes),
            ("push of an accessws feed missing from common/methods.py WS_PUSHES",
             self.undeclared_pushes),
        ):
            out += [f"{label}: {name}" for name in names]
        return out


def coverage() -> Coverage:
    """Compare the API description with what the servers actually serve."""
    http, ws, pushes = http_methods(), ws_methods(), ws_pushes()
    served_http, served_ws, served_pushes = (served_http_methods(), served_ws_methods(),
                                             served_ws_pushes())
    return Coverage(
        missing_http=[m for m in served_http if m not in http],
        missing_ws=[m for m in served_ws if m not in ws],
        missing_pushes=[m for m in served_pushes if m not in pushes],
        extra_http=[m for m in http if m not in served_http],
        extra_ws=[m for m in ws if m not in served_ws],
        extra_pushes=[m for m in pushes if m not in served_pushes],
        undeclared_pushes=undeclared_feed_pushes(),
    )
