"""Command numbers of the internal RPC, per service, from the API's method table.

The table lives in :mod:`exchange_server.common.methods` (not in a gateway) so that the RPC
layer and the standalone services never import accesshttp."""

from __future__ import annotations

from exchange_server.common.methods import MARKETPRICE, MATCHENGINE, METHODS, READHISTORY

#: method -> command number, for every routed method.
METHOD_COMMANDS: dict[str, int] = {method: cmd for method, (_, cmd) in METHODS.items()}


def service_commands(service: str) -> dict[int, str]:
    """command number -> method name for the methods that ``service`` answers."""
    return {cmd: method for method, (owner, cmd) in METHODS.items() if owner == service}


MATCHENGINE_COMMANDS = service_commands(MATCHENGINE)
MARKETPRICE_COMMANDS = service_commands(MARKETPRICE)
READHISTORY_COMMANDS = service_commands(READHISTORY)
