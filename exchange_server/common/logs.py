"""Logging set-up of the command line and helper processes (``--log-level``, a Python level).

The services' ``log`` block and its ``flag`` (the original's set of enabled levels) are read by
exchange_server.process.logsetup (``read_flag``), the one parser of the flag.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def setup(level: int | str = logging.INFO, path: str | None = None) -> None:
    """Log to stderr (or to ``path``) with one line per record."""
    handler: logging.Handler
    if path:
        handler = logging.FileHandler(path)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
