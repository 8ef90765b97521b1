"""Lookups over the API description: the documented methods and pushes by name.

Everything user-facing about the API is generated from these: ``docs/api/*.md`` and the
client's typed methods (``python -m exchange_server.apidoc.build``), the OpenRPC document
served at ``GET /openrpc.json`` (:mod:`exchange_server.api.openrpc`), and the Python client's
result decoding (:mod:`exchange_server.client`).  ``tests/unit/test_apidoc.py`` fails when a method
of the method table (:mod:`exchange_server.common.methods`) or of accessws' method table, or a
push, has no entry here.
"""

from __future__ import annotations

from exchange_server.api.http_methods import HTTP_METHODS
from exchange_server.api.model import Method, Push, by_name
from exchange_server.api.ws_methods import WS_METHODS, WS_PUSHES
from exchange_server.common.methods import METHODS


def http_methods() -> dict[str, Method]:
    return by_name(HTTP_METHODS)


def ws_methods() -> dict[str, Method]:
    return by_name(WS_METHODS)


def ws_pushes() -> dict[str, Push]:
    return by_name(WS_PUSHES)


def served_http_methods() -> list[str]:
    """The methods accesshttp routes (the method table), in table order."""
    return list(METHODS)
