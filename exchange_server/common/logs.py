"""Logging set-up shared by the services.

The original's log ``flag`` (a comma list of fatal,error,warn,info,debug,trace) maps to a
threshold: the most verbose level listed wins.
"""

from __future__ import annotations

import logging
import sys

_FLAG_LEVELS = {
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def level_from_flag(flag: str) -> int:
    levels = [_FLAG_LEVELS[f.strip()] for f in flag.split(",") if f.strip() in _FLAG_LEVELS]
    return min(levels) if levels else logging.INFO


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
