"""Error answers as exceptions: one class per error-code family (rpc.md 2).

Every server error raises an :class:`ApiError` subclass carrying ``.code`` and ``.message``
exactly as the server sent them.  Codes 10-12 (and any other code of 10 or more) mean different
things per method ("balance not enough", "order not found"...), so they share one class,
:class:`BusinessError`: look at ``.code`` together with ``.method`` and ``.message``.

A request that got no JSON-RPC answer at all (HTTP 400/413/500 with an empty body, a closed
connection, a WebSocket that is down) raises :class:`TransportError`.
"""

from __future__ import annotations

from typing import Any

from exchange_server.common.errors import (
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    METHOD_NOT_FOUND,
    REQUIRE_AUTH,
    SERVICE_TIMEOUT,
    SERVICE_UNAVAILABLE,
)


class ClientError(Exception):
    """Base of everything the client raises."""


class TransportError(ClientError):
    """No JSON-RPC answer: HTTP status without a body, connection failure, closed WebSocket.

    ``status`` is the HTTP status when there was one (400: the request was malformed; 413: too
    large; 500: the backend service is not connected), else None.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiError(ClientError):
    """An error answer ``{"code", "message"}``."""

    #: the code of this family (None: several codes)
    family: int | None = None

    def __init__(self, code: int, message: str, method: str = "", data: Any = None) -> None:
        super().__init__(f"{method + ': ' if method else ''}error {code}: {message}")
        self.code = code
        self.message = message
        self.method = method
        self.data = data


class InvalidArgument(ApiError):
    """Code 1: a param has the wrong type, count or value."""

    family = INVALID_ARGUMENT


class InternalError(ApiError):
    """Code 2: the service failed (WebSocket: also "backend not connected")."""

    family = INTERNAL_ERROR


class ServiceUnavailable(ApiError):
    """Code 3: the service is overloaded (back-pressure) or a feature is not configured; retry
    later."""

    family = SERVICE_UNAVAILABLE


class MethodNotFound(ApiError):
    """Code 4: no such method."""

    family = METHOD_NOT_FOUND


class ServiceTimeout(ApiError):
    """Code 5: the backend did not answer in time (the operation may still have happened)."""

    family = SERVICE_TIMEOUT


class AuthenticationRequired(ApiError):
    """Code 6: a WebSocket method needs server.auth / server.sign first."""

    family = REQUIRE_AUTH


class BusinessError(ApiError):
    """Codes 10 and up: method-specific refusals ("balance not enough", "repeat update", "order
    not found", "amount too small", "no enough trader", an auth service's rejection...)."""


FAMILIES: dict[int, type[ApiError]] = {
    INVALID_ARGUMENT: InvalidArgument,
    INTERNAL_ERROR: InternalError,
    SERVICE_UNAVAILABLE: ServiceUnavailable,
    METHOD_NOT_FOUND: MethodNotFound,
    SERVICE_TIMEOUT: ServiceTimeout,
    REQUIRE_AUTH: AuthenticationRequired,
}


def error_for(error: Any, method: str = "") -> ApiError:
    """The exception for a reply's ``error`` member."""
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
    else:
        code, message = None, None
    if type(code) is not int:
        return InternalError(INTERNAL_ERROR, f"malformed error {error!r}", method, error)
    text = message if isinstance(message, str) else str(message)
    cls = FAMILIES.get(code)
    if cls is None:
        cls = BusinessError if code >= 10 else ApiError
    return cls(code, text, method, error)
