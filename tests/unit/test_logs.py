"""Structured (JSON) logs, an extension of the original's log block."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from exchange_server.common.config import ConfigError, Node
from exchange_server.process.logsetup import setup_logging
from exchange_server.process.settings import read_log_settings


def test_json_log_lines(tmp_path: Path) -> None:
    settings = read_log_settings(Node({"path": str(tmp_path / "svc"), "flag": "error,info",
                                       "format": "json"}))
    setup = setup_logging(settings)
    try:
        logging.getLogger("exchange_server.test").info("hello %s", "world")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("exchange_server.test").exception("failed")
    finally:
        setup.close()
    lines = [json.loads(line) for line in (tmp_path / "svc.log").read_text().splitlines()]
    assert lines[0]["message"] == "hello world" and lines[0]["level"] == "info"
    assert lines[0]["logger"] == "exchange_server.test" and isinstance(lines[0]["time"], float)
    assert lines[1]["level"] == "error" and "ValueError: boom" in lines[1]["exception"]


def test_unknown_log_format_names_the_field() -> None:
    with pytest.raises(ConfigError, match="log.format"):
        read_log_settings(Node({"path": "x", "flag": "info", "format": "xml"}, "log"))
