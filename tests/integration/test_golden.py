"""Replay the transcript recorded from the original C server and compare every answer.

Statuses must be equal; bodies must be equal as JSON and byte for byte once the clock fields
(ctime, mtime, ftime, time) are taken out.  Steps whose expected answer this project changes on
purpose name their compatibility note in ``DELIBERATE``.
"""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import SHARED, ServerProcess, free_port
from tests.support.waiting import wait_until

GOLDEN = SHARED / "golden"
TRANSCRIPT = GOLDEN / "transcript-1.jsonl"
CLOCK_FIELDS = {"ctime", "mtime", "ftime", "time"}
_CLOCK_RE = re.compile(rb'"(ctime|mtime|ftime|time)": [0-9.e+-]+')

#: Generous deadline for the history to catch up (a loaded machine is slow).
HISTORY_DEADLINE = 60.0
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
    metrics_port = free_port()
    server = ServerProcess(data / "data", config=GOLDEN / "matchengine.json",
                           extra=["--disable", "marketprice",
                                  "--metrics-port", str(metrics_port)]).start()
    try:
        answers = []
        waited = False
        for step in STEPS:
            if _method(step) in READHISTORY_METHODS and not waited:
                # the transcript waited too: until the history holds every operation so far
                wait_until(lambda: _history_caught_up(metrics_port), HISTORY_DEADLINE,
                           interval=0.05, message="the history follower catching up")
                waited = True
            raw = step.get("request_raw")
            if raw is None:
                raw = json.dumps(step["request"])
            answers.append(server.raw(raw.encode()))
        return answers
    finally:
        server.stop()


def _history_caught_up(metrics_port: int) -> bool:
    """The history follower has applied every operation and written every row (its gauges)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=HISTORY_DEADLINE)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
    except OSError:
        return False  # not listening yet
    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                  if line.startswith(("exchange_history_follower_lag{",
                                      "exchange_history_pending_rows{")))
    return len(values) == 2 and all(float(v) == 0 for v in values.values())


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
