"""Replay the transcript recorded from the original C server and compare every answer.

Statuses must be equal; bodies must be equal as JSON and byte for byte once the clock fields
(ctime, mtime, ftime, time) are taken out.  Steps whose expected answer this project changes on
purpose name their compatibility note in ``DELIBERATE``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.server import SHARED, ServerProcess

GOLDEN = SHARED / "golden"
TRANSCRIPT = GOLDEN / "transcript-1.jsonl"
CLOCK_FIELDS = {"ctime", "mtime", "ftime", "time"}
_CLOCK_RE = re.compile(rb'"(ctime|mtime|ftime|time)": [0-9.e+-]+')

#: History is written asynchronously (off the matching path): wait for it before reading it.
READHISTORY_METHODS = {"balance.history", "order.finished", "order.finished_detail", "order.deals",
                       "market.user_deals"}

STEPS: list[dict[str, Any]] = [json.loads(line) for line in TRANSCRIPT.read_text().splitlines()
                               if line.strip()]


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in CLOCK_FIELDS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[int, bytes]]:
    data = tmp_path_factory.mktemp("golden")
    # the transcript was recorded with accesshttp + matchengine + readhistory, no marketprice
    server = ServerProcess(data / "data", config=GOLDEN / "matchengine.json",
                           extra=["--disable", "marketprice"]).start()
    try:
        answers = []
        waited = False
        for step in STEPS:
            if _method(step) in READHISTORY_METHODS and not waited:
                time.sleep(0.5)  # the transcript waited too (history flushes every 0.1 s)
                waited = True
            raw = step.get("request_raw")
            if raw is None:
                raw = json.dumps(step["request"])
            answers.append(server.raw(raw.encode()))
        return answers
    finally:
        server.stop()


def _method(step: dict[str, Any]) -> str:
    request = step.get("request")
    return request.get("method", "") if isinstance(request, dict) else ""


def _params() -> list[Any]:
    return [pytest.param(i, id=f"{i:02d}-{step['note'][:40]}") for i, step in enumerate(STEPS)]


@pytest.mark.parametrize("index", _params())
def test_step(replay: list[tuple[int, bytes]], index: int) -> None:
    step = STEPS[index]
    status, body = replay[index]
    assert status == step["http_status"], body
    expected_raw = (step.get("response_raw") or "").encode()
    if not expected_raw:
        assert body == b""
        return
    assert _strip(json.loads(body)) == _strip(step["response"])
    assert _CLOCK_RE.sub(b"CLOCK", body) == _CLOCK_RE.sub(b"CLOCK", expected_raw)


def test_transcript_is_present() -> None:
    assert len(STEPS) >= 80, f"golden transcript missing or short: {TRANSCRIPT}"
    assert Path(GOLDEN / "matchengine.json").exists()
