"""Command numbers of the internal RPC, per service, derived from accesshttp's routing table."""

from __future__ import annotations

from exchange_server.accesshttp.routes import MARKETPRICE, MATCHENGINE, READHISTORY, ROUTES

#: method -> command number, for every routed method.
METHOD_COMMANDS: dict[str, int] = {method: cmd for method, (_, cmd) in ROUTES.items()}


def service_commands(service: str) -> dict[int, str]:
    """command number -> method name for the methods that ``service`` answers."""
    return {cmd: method for method, (owner, cmd) in ROUTES.items() if owner == service}


def service_methods(service: str) -> dict[str, int]:
    """method name -> command number for the methods that ``service`` answers."""
    return {method: cmd for method, (owner, cmd) in ROUTES.items() if owner == service}


MATCHENGINE_COMMANDS = service_commands(MATCHENGINE)
MARKETPRICE_COMMANDS = service_commands(MARKETPRICE)
READHISTORY_COMMANDS = service_commands(READHISTORY)
