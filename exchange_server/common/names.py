"""The names of the services and of the storage backends, declared once.

Why StrEnums: these names are typed on command lines, written in config files and sent between
processes as plain text; a ``StrEnum`` member *is* that text (equal to it, same hash, formats
as it), so existing strings keep working while a typo in the code becomes an attribute error.
"""

from __future__ import annotations

from enum import StrEnum


class Service(StrEnum):
    """The exchange's services (``exchange-server SERVICE -c CONFIG``, the method table)."""

    MATCHENGINE = "matchengine"
    MARKETPRICE = "marketprice"
    READHISTORY = "readhistory"
    ACCESSHTTP = "accesshttp"
    ACCESSWS = "accessws"
    ALERTCENTER = "alertcenter"


class Storage(StrEnum):
    """Where the operation log, slices and history live (``exchange-server run --storage``)."""

    #: files under the data directory
    SQLITE = "sqlite"
    #: MySQL/MariaDB at the config's ``db_log`` and ``db_history``
    MYSQL = "mysql"
