"""Who may call what on accesshttp: the trust model in one place (README.md "Trust model").

The HTTP JSON-RPC API is, as in the original, a back-office API: its caller is the exchange's
own web back end, which authenticates users and only then calls ``balance.update``,
``order.put_limit``... for them.  Reaching the API is therefore the same as holding every
account, so a deployment keeps it on a private network.  Three optional locks narrow that:

* a *public* listener (``public_only``) answers only :data:`~.routes.PUBLIC_METHODS`, the
  read-only market data, whatever the request carries: that is what may face the internet;
* ``api_token``: every method that is not public needs ``Authorization: Bearer <api token>``
  (or the admin token), for a back office that wants more than network isolation;
* ``admin_token``: the admin methods (``config.*``) need ``Authorization: Bearer <admin token>``
  and are refused without one configured (unchanged).

A refused method is answered like the admin methods always were: HTTP 403 and error 6
"require authentication" (in a batch, that element only).
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass

from exchange_server.accesshttp.routes import ADMIN_METHODS, PUBLIC_METHODS


class Grant(enum.IntEnum):
    """What one request's ``Authorization`` header unlocks (each level includes the lower)."""

    NONE = 0
    API = 1
    ADMIN = 2


#: the members read once: a member read from its enum class goes through a descriptor in
#: Python 3.11 (about 1,000 instructions), and with a token every request reads some
_NONE, _API, _ADMIN = Grant.NONE, Grant.API, Grant.ADMIN


def _bearer(authorization: bytes) -> bytes | None:
    scheme, _, value = authorization.strip().partition(b" ")
    return value.strip() if scheme.lower() == b"bearer" else None


@dataclass(frozen=True)
class TrustPolicy:
    """One listener's rules (see the module's docstring)."""

    admin_token: bytes | None = None
    api_token: bytes | None = None
    public_only: bool = False

    @classmethod
    def of(cls, admin_token: str | None = None, api_token: str | None = None,
           public_only: bool = False) -> TrustPolicy:
        return cls(admin_token.encode() if admin_token else None,
                   api_token.encode() if api_token else None, public_only)

    @property
    def reads_headers(self) -> bool:
        """Whether a token can change an answer here (headers cost a Python call each)."""
        return not self.public_only and bool(self.admin_token or self.api_token)

    def grant(self, authorization: bytes | None) -> Grant:
        """What an ``Authorization`` header value unlocks."""
        value = _bearer(authorization) if authorization is not None else None
        if value is None:
            return _NONE
        if self.admin_token is not None and hmac.compare_digest(value, self.admin_token):
            return _ADMIN
        if self.api_token is not None and hmac.compare_digest(value, self.api_token):
            return _API
        return _NONE

    def allows(self, method: str, grant: Grant) -> bool:
        """Whether ``method`` (a routed one) may be called with ``grant`` on this listener."""
        if method in PUBLIC_METHODS:
            return True
        if self.public_only:
            return False
        if method in ADMIN_METHODS:
            return grant >= _ADMIN
        return self.api_token is None or grant >= _API
