"""``log.flag``, the original's set of enabled levels, has one parser (process.logsetup's
``read_flag``): words separated by commas and/or spaces, any case, unknown words ignored; a
record is written when its own level is listed (not "everything above the most verbose")."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange_server.process.logsetup import FLAG_NAMES, read_flag, setup_logging
from exchange_server.process.settings import LogSettings


def test_read_flag_words() -> None:
    assert read_flag("fatal,error,warn,info") == 0b1111
    assert read_flag(" Fatal ,  INFO debug\ttrace") == 0b1101001
    assert read_flag(",".join(FLAG_NAMES)) == 0b1111111
    assert read_flag("") == read_flag("bogus, verbose") == 0
    assert read_flag("error,error") == read_flag("error")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_services_write_exactly_the_listed_levels(tmp_path: Path, restore_root: None) -> None:
    setup = setup_logging(LogSettings(path=str(tmp_path / "svc"), flag="fatal, DEBUG"))
    log = logging.getLogger("test.logflag")
    log.critical("c-line")
    log.error("e-line")  # not listed: dropped although debug is
    log.info("i-line")
    log.debug("d-line")
    setup.close()
    text = (tmp_path / "svc.log").read_text()
    assert "[fatal]" in text and "c-line" in text and "d-line" in text
    assert "e-line" not in text and "i-line" not in text
