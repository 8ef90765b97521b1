"""The API registry: one documented entry per HTTP method, WebSocket method and push.

Everything user-facing about the API is generated from here: ``docs/api/*.md``
(``python -m exchange_server.apidoc.build``), the OpenRPC document served at
``GET /openrpc.json`` (:mod:`exchange_server.apidoc.openrpc`), and the Python client's result
decoding (:mod:`exchange_server.client`).  ``tests/test_apidoc.py`` fails when a method of
accesshttp's ``ROUTES`` or of accessws' method table has no entry here.

Adding a method: append a :class:`Method` to ``HTTP_METHODS`` (``http_methods.py``) or
``WS_METHODS`` / ``WS_PUSHES`` (``ws_methods.py``), run
``python -m exchange_server.apidoc.examples`` (records a real call into
``docs/api/examples.json``; add the call to its session) and
``python -m exchange_server.apidoc.build``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exchange_server.apidoc.schema import Schema

#: Generic error codes (rpc.md 2).
GENERIC_ERRORS: dict[int, str] = {
    1: "invalid argument",
    2: "internal error",
    3: "service unavailable",
    4: "method not found",
    5: "service timeout",
    6: "require authentication",
}


@dataclass(frozen=True)
class Param:
    """One positional parameter."""

    name: str
    schema: Schema
    description: str = ""
    #: may be left out (only trailing params)
    required: bool = True
    #: may repeat: ``[user_id, asset, asset, ...]`` (only the last param)
    variadic: bool = False

    def doc(self) -> str:
        return self.description or str(self.schema.get("description", ""))


@dataclass(frozen=True)
class Error:
    code: int
    message: str
    when: str


@dataclass(frozen=True)
class Method:
    """A request/response method (HTTP or WebSocket)."""

    name: str
    summary: str
    params: tuple[Param, ...]
    result: Schema
    result_doc: str = ""
    errors: tuple[Error, ...] = ()
    #: longer explanation (Markdown)
    notes: str = ""
    #: the params array is not looked at (any array is accepted)
    params_ignored: bool = False
    #: HTTP: the service that answers (matchengine, readhistory, marketprice);
    #: WebSocket: "local" or the service a forwarded query goes to
    service: str = ""
    #: WebSocket: needs server.auth / server.sign first
    auth: bool = False
    #: WebSocket: the HTTP method this one forwards to
    forwards: str = ""
    #: replies may come from a cache (seconds or a description)
    cached: str = ""
    #: changes state (written to the operation log)
    write: bool = False
    tags: tuple[str, ...] = field(default=())

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]

    def param_count(self) -> tuple[int, int | None]:
        """(fewest, most) params accepted (most None: unbounded)."""
        if self.params_ignored:
            return 0, None
        fewest = sum(1 for p in self.params if p.required)
        most: int | None = None if any(p.variadic for p in self.params) else len(self.params)
        return fewest, most

    def all_errors(self) -> list[Error]:
        """The method's errors, generic ones included, by code."""
        return sorted(self.errors, key=lambda e: e.code)


@dataclass(frozen=True)
class Push:
    """A WebSocket notification ``{"method": name, "params": [...], "id": null}``."""

    name: str
    summary: str
    params: tuple[Param, ...]
    #: which method subscribes to it
    subscribe: str
    trigger: str
    notes: str = ""

    @property
    def schema(self) -> Schema:
        if len(self.params) == 1 and self.params[0].variadic:
            return {"type": "array", "items": self.params[0].schema, "minItems": 1}
        return {"type": "array", "items": [p.schema for p in self.params],
                "minItems": len(self.params), "maxItems": len(self.params)}


def by_name(entries: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for entry in entries:
        if entry.name in out:
            raise ValueError(f"{entry.name}: documented twice")
        out[entry.name] = entry
    return out


def http_methods() -> dict[str, Method]:
    from exchange_server.apidoc.http_methods import HTTP_METHODS

    return by_name(HTTP_METHODS)


def ws_methods() -> dict[str, Method]:
    from exchange_server.apidoc.ws_methods import WS_METHODS

    return by_name(WS_METHODS)


def ws_pushes() -> dict[str, Push]:
    from exchange_server.apidoc.ws_methods import WS_PUSHES

    return by_name(WS_PUSHES)


def served_http_methods() -> list[str]:
    """The methods accesshttp routes (its ``ROUTES`` table), in table order."""
    from exchange_server.accesshttp.routes import ROUTES

    return list(ROUTES)


def served_ws_methods() -> list[str]:
    """The methods accessws answers (its method table), in table order."""
    from exchange_server.accessws.config import AccessWsConfig
    from exchange_server.accessws.server import AccessWs

    server = AccessWs(AccessWsConfig(), {})
    return list(server.methods)


def served_ws_pushes() -> list[str]:
    """The notifications accessws sends: one per polling feed, plus every ``"<kind>.update"``
    or ``"<kind>.update_<what>"`` name written in accessws' source (the bus-driven user pushes
    such as order.update and asset.update), so a new push cannot go undocumented."""
    import re
    from pathlib import Path

    from exchange_server.accessws.config import AccessWsConfig
    from exchange_server.accessws.server import AccessWs

    server = AccessWs(AccessWsConfig(), {})
    names = [feed.name + ".update" for feed in server.feeds]
    import exchange_server.accessws as package

    source_dir = Path(package.__file__ or ".").parent
    pattern = re.compile(r"""["']([a-z]+\.update(?:_[a-z]+)?)["']""")
    for path in sorted(source_dir.glob("*.py")):
        for name in pattern.findall(path.read_text()):
            if name not in names:
                names.append(name)
    return names


@dataclass
class Coverage:
    missing_http: list[str]
    missing_ws: list[str]
    missing_pushes: list[str]
    extra_http: list[str]
    extra_ws: list[str]
    extra_pushes: list[str]

    def ok(self) -> bool:
        return not (self.missing_http or self.missing_ws or self.missing_pushes
                    or self.extra_http or self.extra_ws or self.extra_pushes)

    def problems(self) -> list[str]:
        out = []
        for label, names in (
            ("HTTP method without docs (add it to apidoc/http_methods.py)", self.missing_http),
            ("WebSocket method without docs (add it to apidoc/ws_methods.py)", self.missing_ws),
            ("WebSocket push without docs (add it to apidoc/ws_methods.py)", self.missing_pushes),
            ("documented HTTP method that accesshttp does not route", self.extra_http),
            ("documented WebSocket method that accessws does not serve", self.extra_ws),
            ("documented push that accessws does not send", self.extra_pushes),
        ):
            out += [f"{label}: {name}" for name in names]
        return out


def coverage() -> Coverage:
    """Compare the registry with what the servers actually serve."""
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
    )
