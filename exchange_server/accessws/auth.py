"""``server.auth`` and ``server.sign``: asking the operator's web service who a client is
(websocket.md 5).

* auth: HTTP GET ``auth_url`` with ``Authorization: <token>``;
* sign: HTTP GET ``sign_url?access_id=<escaped>&tonce=<tonce>`` with
  ``Authorization: <authorisation>`` (the signature and the tonce window are checked by that
  service);

both with ``Accept-Language: en_US`` and ``Content-Type: application/json``, within
``backend_timeout``.  The reply must be ``{"code": 0, "data": {"user_id": N}}``; a non-zero code
with a string message is a rejection (error 11 with that message); anything else unusable is
error 2; no reply in time is error 5.  With no URL configured the call answers error 3
"service unavailable".
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import aiohttp
import orjson

from exchange_server.common.errors import (
    ErrorCode,
    ServerAuth,
    ServerSign,
    internal_error,
    service_timeout,
    service_unavailable,
)

log = logging.getLogger("exchange_server.accessws.auth")

#: Largest auth-server reply read (the reply is a small JSON object).
MAX_REPLY = 65536


class AuthClient:
    def __init__(self, auth_url: str | None, sign_url: str | None, timeout: float,
                 auth_concurrency: int = 10, sign_concurrency: int = 5) -> None:
        self.auth_url = auth_url
        self.sign_url = sign_url
        self.timeout = timeout
        self._auth_slots = asyncio.Semaphore(auth_concurrency)
        self._sign_slots = asyncio.Semaphore(sign_concurrency)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def auth(self, token: str) -> int:
        """The user id the auth server gives for ``token`` (or RpcError)."""
        if not self.auth_url:
            raise service_unavailable()
        return await self._ask(self.auth_url, token, self._auth_slots, ServerAuth.REJECTED)

    async def sign(self, access_id: str, authorisation: str, tonce: int) -> int:
        """The user id the sign server gives for an API key's signed request (or RpcError)."""
        if not self.sign_url:
            raise service_unavailable()
        sep = "&" if "?" in self.sign_url else "?"
        url = f"{self.sign_url}{sep}access_id={quote(access_id, safe='')}&tonce={tonce}"
        return await self._ask(url, authorisation, self._sign_slots, ServerSign.REJECTED)

    async def _ask(self, url: str, authorization: str, slots: asyncio.Semaphore,
                   rejected: ErrorCode) -> int:
        headers = {
            "Authorization": authorization,
            "Accept-Language": "en_US",
            "Content-Type": "application/json",
        }
        try:
            async with asyncio.timeout(self.timeout), slots:
                session = self._get_session()
                async with session.get(url, headers=headers, allow_redirects=False) as resp:
                    body = await resp.content.read(MAX_REPLY)
        except TimeoutError:
            log.error("auth request to %s timed out", _safe(url))
            raise service_timeout() from None
        except (aiohttp.ClientError, OSError, ValueError) as e:
            log.error("auth request to %s failed: %s", _safe(url), e)
            raise internal_error() from None
        return user_from_reply(body, rejected)


def user_from_reply(body: bytes, rejected: ErrorCode) -> int:
    """The contract of the auth and sign services' replies (``rejected``: the method's error
    for a refusal, which carries the service's message)."""
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        log.error("auth server reply is not JSON: %r", body[:200])
        raise internal_error() from None
    if type(reply) is not dict:
        raise internal_error()
    code = reply.get("code")
    if type(code) is not int:
        log.error("auth server reply without a code: %r", body[:200])
        raise internal_error()
    if code != 0:
        message = reply.get("message")
        if type(message) is str:
            raise rejected.saying(message)
        raise internal_error()
    data = reply.get("data")
    if type(data) is not dict:
        raise internal_error()
    user_id = data.get("user_id")
    if type(user_id) is not int or not 0 < user_id < 2**63:
        log.error("auth server reply without a usable user_id: %r", body[:200])
        raise internal_error()
    return user_id


def _safe(url: str) -> str:
    """The URL without its query (which may carry an access id) for the log."""
    return url.split("?", 1)[0]
