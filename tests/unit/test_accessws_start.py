"""A failed accessws start leaves nothing listening (its listeners are one start step)."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from exchange_server.accessws.config import AccessWsConfig, WsSvrConfig
from exchange_server.accessws.server import AccessWs
from tests.support.server import free_port


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_a_taken_second_address_closes_the_first() -> None:
    first, taken = free_port(), free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", taken))
    blocker.listen()
    try:
        svr = replace(WsSvrConfig(), bind=(f"tcp@127.0.0.1:{first}", f"tcp@127.0.0.1:{taken}"))
        ws = AccessWs(replace(AccessWsConfig(), svr=svr), {})
        with pytest.raises(OSError):
            await ws.start()
        assert _can_bind(first), "the first listener is still open after the failed start"
    finally:
        blocker.close()
