"""Golden transcript steps 84-88 (readhistory answers of the original C server), reproduced from
the transcript's own requests on both backends.

The transcript's matchengine writes (balance.update, order.put_limit, order.put_market,
order.cancel) run through a real Engine + MatchEngineMethods with the golden config; their events
go through the HistoryWriter into the history database; then each "readhistory:" step's request
goes to ReadHistoryService.  The reply must equal the recorded one byte for byte once the clock
fields (ctime, mtime, ftime, time) are taken out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from exchange_server.history.writer import HistoryWriter
from exchange_server.readhistory.service import ReadHistoryService
from tests.support.history_support import HistoryBackend, golden_ops, golden_steps

_CLOCK_RE = re.compile(rb'"(ctime|mtime|ftime|time)": [0-9.e+-]+')

STEPS = golden_steps()
READHISTORY_STEPS = [i for i, s in enumerate(STEPS) if str(s.get("note", "")).startswith("readhistory:")]


def test_the_transcript_has_the_readhistory_steps() -> None:
    assert READHISTORY_STEPS == [84, 85, 86, 87, 88]


@pytest.fixture
def golden_service(history_backend: HistoryBackend) -> Iterator[ReadHistoryService]:
    location = history_backend.new_location()
    writer = HistoryWriter(history_backend.store(location))
    writer.durable_mark()
    writer.start()
    for oper_id, events in golden_ops():
        writer.on_events(oper_id, events)
    assert writer.stop()
    service = ReadHistoryService(history_backend.reader(location))
    yield service
    service.close()


def _without_clock(raw: bytes) -> bytes:
    return _CLOCK_RE.sub(b'"\\1": _', raw)


async def test_golden_readhistory_steps(golden_service: ReadHistoryService) -> None:
    for index in READHISTORY_STEPS:
        step = STEPS[index]
        request: dict[str, Any] = step["request"]
        assert step["http_status"] == 200
        got = await golden_service.call(request["method"], request["params"], request["id"])
        want = step["response_raw"].encode()
        assert _without_clock(got) == _without_clock(want), f"step {index}: {step['note']}"
        # and the clock fields are there, as reals, in the same places
        assert _CLOCK_RE.findall(got) == _CLOCK_RE.findall(want)
        assert json.loads(got)["result"] is not None
