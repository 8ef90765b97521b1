"""alertcenter: FATAL alert lines from every service into the Redis list ``alert:message``."""

from __future__ import annotations

from typing import Any

from exchange_server.alertcenter.config import AlertCenterConfig, load_alertcenter
from exchange_server.alertcenter.server import ALERT_KEY, AlertCenter
from exchange_server.common.names import Service

NAME = Service.ALERTCENTER


async def build(data: dict[str, Any]) -> AlertCenter:
    """The service for :func:`exchange_server.process.run_service`."""
    return AlertCenter.from_config(load_alertcenter(data))


def validate(data: dict[str, Any]) -> None:
    load_alertcenter(data)


__all__ = ["ALERT_KEY", "NAME", "AlertCenter", "AlertCenterConfig", "build", "load_alertcenter",
           "validate"]
