"""Where marketprice gets its market list at start-up.

Production, as the original: POST ``market.list`` to accesshttp (1 s timeout; start-up fails
if it cannot be fetched).  Embedded: the matchengine's own market list.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

MarketSource = Callable[[], "Awaitable[list[str]] | list[str]"]


class MarketListError(RuntimeError):
    """The market list could not be fetched: marketprice does not start."""


async def get_markets(source: MarketSource) -> list[str]:
    result = source()
    if inspect.isawaitable(result):
        result = await result
    names = list(result)
    if not all(isinstance(n, str) for n in names):
        raise MarketListError(f"market list holds non-string names: {names!r}")
    return names


def accesshttp_markets(url: str, timeout: float = 1.0) -> MarketSource:
    """A source that POSTs ``{"method": "market.list", "params": [], "id": <now>}`` to the
    accesshttp URL (config ``accesshttp``) and returns the market names."""

    def fetch() -> list[str]:
        body = json.dumps({"method": "market.list", "params": [], "id": int(time.time())})
        request = urllib.request.Request(url, data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                reply: Any = json.loads(response.read())
        except (OSError, ValueError) as e:
            raise MarketListError(f"market.list from {url} failed: {e}") from e
        if not isinstance(reply, dict) or reply.get("error") is not None:
            raise MarketListError(f"market.list from {url} failed: {reply!r}")
        result = reply.get("result")
        if not isinstance(result, list):
            raise MarketListError(f"market.list from {url}: unexpected result {result!r}")
        return [item["name"] for item in result if isinstance(item, dict)
                and isinstance(item.get("name"), str)]

    async def source() -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(None, fetch)

    return source
