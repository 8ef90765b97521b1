"""The registry's result and push schemas, looked up once (exchange_server.api)."""

from __future__ import annotations

import functools
from typing import Any

Schema = dict[str, Any]


@functools.lru_cache(maxsize=1)
def _http() -> dict[str, Schema]:
    from exchange_server.api.registry import http_methods

    return {name: m.result for name, m in http_methods().items()}


@functools.lru_cache(maxsize=1)
def _ws() -> dict[str, Schema]:
    from exchange_server.api.registry import ws_methods

    return {name: m.result for name, m in ws_methods().items()}


@functools.lru_cache(maxsize=1)
def _push() -> dict[str, Schema]:
    from exchange_server.api.registry import ws_pushes

    return {name: p.schema for name, p in ws_pushes().items()}


def http_result(method: str) -> Schema | None:
    return _http().get(method)


def ws_result(method: str) -> Schema | None:
    return _ws().get(method)


def push_params(name: str) -> Schema | None:
    return _push().get(name)


def is_write(method: str) -> bool:
    """True for methods that change state (never retried by the client)."""
    from exchange_server.api.registry import http_methods

    entry = http_methods().get(method)
    return entry is None or entry.write
