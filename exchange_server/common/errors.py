"""Every error a service answers, declared once: code, message and when it is returned.

Why one module: codes 1-6 mean the same for every method (rpc.md section 2), but codes 10 and
up mean different things per method, as in the original (fill-or-kill is 12 in
``order.put_limit`` and 13 in ``order.put_market``).  Typed at each raise site and again in the
API description, such a difference cannot be told from a typo.  Here each method's own errors
are a class of named :class:`ErrorCode` (as exchange-core's ``CommandResultCode``); the raise
sites call them (``raise PutLimit.FILL_OR_KILL()``) and the API description
(:mod:`exchange_server.api`) lists them, so the docs, the OpenRPC document and the client read
the same declaration the servers raise.

A raise always makes a fresh :class:`RpcError` (a shared instance would keep every raise's
traceback).  Pure (no I/O): the matching core imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

INVALID_ARGUMENT = 1
INTERNAL_ERROR = 2
SERVICE_UNAVAILABLE = 3
METHOD_NOT_FOUND = 4
SERVICE_TIMEOUT = 5
REQUIRE_AUTH = 6

#: The generic codes' messages (rpc.md 2).
GENERIC_MESSAGES: dict[int, str] = {
    INVALID_ARGUMENT: "invalid argument",
    INTERNAL_ERROR: "internal error",
    SERVICE_UNAVAILABLE: "service unavailable",
    METHOD_NOT_FOUND: "method not found",
    SERVICE_TIMEOUT: "service timeout",
    REQUIRE_AUTH: "require authentication",
}


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


@dataclass(frozen=True)
class ErrorCode:
    """A declared error: its code and message on the wire, and when a method returns it."""

    code: int
    message: str
    when: str = ""

    def __call__(self) -> RpcError:
        """A fresh error to raise."""
        return RpcError(self.code, self.message)

    def saying(self, message: str) -> RpcError:
        """A fresh error with this code and a message decided at the raise site (the declared
        message then describes it, e.g. ``<the auth service's message>``)."""
        return RpcError(self.code, message)

    def because(self, when: str) -> ErrorCode:
        """The same code and message, explained for one method."""
        return ErrorCode(self.code, self.message, when)


def generic(code: int, when: str = "") -> ErrorCode:
    """A generic error (codes 1-6), explained for one method."""
    return ErrorCode(code, GENERIC_MESSAGES[code], when)


def invalid_argument() -> RpcError:
    return generic(INVALID_ARGUMENT)()


#: Code 1 with the reason in the message (the admin commands).
INVALID_BECAUSE = ErrorCode(INVALID_ARGUMENT, "invalid argument: <reason>")


def invalid_argument_because(reason: str) -> RpcError:
    return INVALID_BECAUSE.saying(f"{GENERIC_MESSAGES[INVALID_ARGUMENT]}: {reason}")


def internal_error() -> RpcError:
    return generic(INTERNAL_ERROR)()


def service_unavailable() -> RpcError:
    return generic(SERVICE_UNAVAILABLE)()


def method_not_found() -> RpcError:
    return generic(METHOD_NOT_FOUND)()


def service_timeout() -> RpcError:
    return generic(SERVICE_TIMEOUT)()


def require_authentication() -> RpcError:
    return generic(REQUIRE_AUTH)()


# -- each method's own errors (codes 10 and up) ---------------------------------------------------


class MethodErrors:
    """The errors of the methods named in ``methods`` beyond the generic ones."""

    methods: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def declared(cls) -> tuple[ErrorCode, ...]:
        """The class's errors, by code."""
        found = [v for k, v in vars(cls).items() if k.isupper() and isinstance(v, ErrorCode)]
        return tuple(sorted(found, key=lambda e: e.code))


#: Every order placement in a suspended market (an extension: the fork has none).
MARKET_SUSPENDED = ErrorCode(30, "market suspended",
                             "the market is suspended (config.suspend_market)")
_FOK_WHEN = ("fill-or-kill (0x10): it would not fill completely at once (nothing changes, no "
             "order id is used)")


class BalanceUpdate(MethodErrors):
    methods = ("balance.update",)
    REPEAT_UPDATE = ErrorCode(10, "repeat update", "the same (user_id, asset, business, "
                              "business_id) was applied in the last 24 hours")
    BALANCE_NOT_ENOUGH = ErrorCode(11, "balance not enough",
                                   "a debit larger than the available balance")


class PutLimit(MethodErrors):
    methods = ("order.put_limit",)
    BALANCE_NOT_ENOUGH = ErrorCode(10, "balance not enough", "ask: available stock < amount; "
                                   "bid: available money < amount x price")
    AMOUNT_TOO_SMALL = ErrorCode(11, "amount too small", "amount < the market's min_amount "
                                 "(checked after the balance; skipped with option 0x04)")
    FILL_OR_KILL = ErrorCode(12, "can't be completely executed, kill the order", _FOK_WHEN)
    POST_ONLY = ErrorCode(13, "the order may be executed, kill the order", "post-only (0x80): "
                          "it would take (crosses the best opposite price, own orders included)")
    SUSPENDED = MARKET_SUSPENDED


class PutMarket(MethodErrors):
    methods = ("order.put_market",)
    BALANCE_NOT_ENOUGH = ErrorCode(10, "balance not enough", "ask: available stock < amount; "
                                   "bid: available money < amount")
    AMOUNT_TOO_SMALL = ErrorCode(11, "amount too small", "ask: amount < min_amount; bid: "
                                 "amount < best ask price x min_amount")
    NO_ENOUGH_TRADER = ErrorCode(12, "no enough trader", "the other side of the book is empty")
    FILL_OR_KILL = ErrorCode(13, "can't be completely executed, kill the order", _FOK_WHEN)
    SUSPENDED = MARKET_SUSPENDED


class Cancel(MethodErrors):
    """order.cancel; order.cancel_batch answers the same code and message per order."""

    methods = ("order.cancel",)
    ORDER_NOT_FOUND = ErrorCode(10, "order not found", "no open order with this id in this "
                                "market")
    USER_NOT_MATCH = ErrorCode(11, "user not match", "the order belongs to another user")


_STOP_PRICE_WHEN = "the market has no last price yet, or stop_price equals it"


class PutStopLimit(MethodErrors):
    methods = ("order.put_stop_limit",)
    BALANCE_NOT_ENOUGH = ErrorCode(10, "balance not enough", "ask: available stock < amount; "
                                   "bid: available money < amount x price (frozen at placement)")
    INVALID_STOP_PRICE = ErrorCode(11, "invalid stop price", _STOP_PRICE_WHEN)
    AMOUNT_TOO_SMALL = ErrorCode(12, "amount too small", "amount < min_amount (skipped with "
                                 "option 0x04)")
    SUSPENDED = MARKET_SUSPENDED


class PutStopMarket(MethodErrors):
    """The same codes as :class:`PutStopLimit` (one raise site serves both)."""

    methods = ("order.put_stop_market",)
    BALANCE_NOT_ENOUGH = ErrorCode(10, "balance not enough", "ask: available stock < amount; "
                                   "bid: available money < amount (frozen at placement)")
    INVALID_STOP_PRICE = ErrorCode(11, "invalid stop price", _STOP_PRICE_WHEN)
    AMOUNT_TOO_SMALL = ErrorCode(12, "amount too small", "ask: amount < min_amount; bid: amount "
                                 "< stop_price x min_amount (skipped with option 0x04)")
    SUSPENDED = MARKET_SUSPENDED


class CancelStop(MethodErrors):
    methods = ("order.cancel_stop",)
    ORDER_NOT_FOUND = ErrorCode(10, "order not found", "no pending stop with this id in this "
                                "market")
    USER_NOT_MATCH = ErrorCode(11, "user not match", "the stop belongs to another user")


class ServerAuth(MethodErrors):
    """accessws' server.auth; the message is the auth service's own."""

    methods = ("server.auth",)
    REJECTED = ErrorCode(11, "<the auth service's message>", "the auth service rejected the "
                         "token")


class ServerSign(MethodErrors):
    """accessws' server.sign: the same code as server.auth (one raise site serves both)."""

    methods = ("server.sign",)
    REJECTED = ErrorCode(11, "<the sign service's message>", "the sign service rejected the "
                         "request")


#: Every method's own errors, for the API description and its tests.
METHOD_ERRORS: tuple[type[MethodErrors], ...] = (
    BalanceUpdate, PutLimit, PutMarket, Cancel, PutStopLimit, PutStopMarket, CancelStop,
    ServerAuth, ServerSign,
)


def errors_of(method: str) -> tuple[ErrorCode, ...]:
    """The errors ``method`` declares beyond the generic ones (none for most methods)."""
    for group in METHOD_ERRORS:
        if method in group.methods:
            return group.declared()
    return ()
