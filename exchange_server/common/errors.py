"""JSON-RPC error codes shared by every service (rpc.md section 2)."""

from __future__ import annotations

INVALID_ARGUMENT = 1
INTERNAL_ERROR = 2
SERVICE_UNAVAILABLE = 3
METHOD_NOT_FOUND = 4
SERVICE_TIMEOUT = 5
REQUIRE_AUTH = 6


class RpcError(Exception):
    """An error answer: ``{"code": code, "message": message}``.

    Codes 10-12 mean different things per method, so the message always travels with the code.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"RpcError({self.code}, {self.message!r})"


def invalid_argument() -> RpcError:
    return RpcError(INVALID_ARGUMENT, "invalid argument")


def internal_error() -> RpcError:
    return RpcError(INTERNAL_ERROR, "internal error")


def service_unavailable() -> RpcError:
    return RpcError(SERVICE_UNAVAILABLE, "service unavailable")


def method_not_found() -> RpcError:
    return RpcError(METHOD_NOT_FOUND, "method not found")


def service_timeout() -> RpcError:
    return RpcError(SERVICE_TIMEOUT, "service timeout")
