"""The history follower process: it ends by itself when its matching process dies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.server import REPO

SCRIPT = r"""
import os, sys
from exchange_server.common.config import default_matchengine_data
from exchange_server.matchprocess.follower import FollowerProcess, FollowerSpec
from exchange_server.matchengine.store_sqlite import SqliteEngineStore

if __name__ == "__main__":
    data = sys.argv[1]
    store = SqliteEngineStore(data)
    store.open()
    store.close()
    follower = FollowerProcess(FollowerSpec(default_matchengine_data(), True, data, "sqlite"))
    follower.start()
    print(follower._process.pid, flush=True)
    os._exit(0)  # die at once, before the follower has even started up (as a SIGKILL would)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_follower_ends_when_its_parent_dies(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "data")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 120
    while _alive(pid):
        assert time.monotonic() < deadline, "the orphaned follower kept running"
        time.sleep(0.1)


def test_the_lag_starts_at_the_history_mark_not_at_zero(tmp_path: Path) -> None:
    """An engine restarted after more than ``max_lag`` operations must take writes before its
    new follower has restored: until the follower reports, its lag counts from the history's
    stored mark (it used to count from 0: every write refused with code 3 for the follower's
    whole start-up, a second or more with a large slice)."""
    from exchange_server.common.config import default_matchengine_data
    from exchange_server.history.store_sqlite import SqliteHistoryStore
    from exchange_server.matchprocess.follower import FollowerProcess, FollowerSpec

    history = SqliteHistoryStore(tmp_path)
    history.open()
    history.write([(250_000, [])])  # history written up to operation 250,000
    history.close()
    follower = FollowerProcess(FollowerSpec(default_matchengine_data(), True, str(tmp_path),
                                            "sqlite"), max_lag=1_000)
    assert follower.overloaded(250_500)  # before: counted from 0
    follower.create_schema()
    assert follower.applied.value == 250_000
    assert not follower.overloaded(250_500)
    assert follower.overloaded(251_001)  # a real lag still refuses


async def test_the_schema_check_started_early_is_the_one_the_follower_waits_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``check_schema_soon`` (a step before the restore) checks the schema in a thread; the
    follower's step waits for that check instead of making its own on the event loop."""
    import threading

    from exchange_server.common.config import default_matchengine_data
    from exchange_server.matchprocess.follower import FollowerProcess, FollowerSpec

    follower = FollowerProcess(FollowerSpec(default_matchengine_data(), True, str(tmp_path),
                                            "sqlite"))
    checked_in: list[int] = []
    real_check = follower.create_schema
    monkeypatch.setattr(follower, "create_schema",
                        lambda: (checked_in.append(threading.get_ident()), real_check()))
    monkeypatch.setattr(follower, "start", lambda: None)  # no process: the schema is the point
    monkeypatch.setattr(follower, "stop", lambda timeout: None)
    await follower.check_schema_soon()
    async with follower.running(lambda: 1.0):
        assert len(checked_in) == 1 and checked_in[0] != threading.get_ident()
    assert (tmp_path / "trade_history.sqlite").exists()
    async with follower.running(lambda: 1.0):  # no early check: made here, once
        assert len(checked_in) == 2 and checked_in[1] == threading.get_ident()


async def test_a_check_never_waited_for_is_settled_by_the_stop(tmp_path: Path) -> None:
    from exchange_server.common.config import default_matchengine_data
    from exchange_server.matchprocess.follower import FollowerProcess, FollowerSpec

    blocked = tmp_path / "file"
    blocked.write_text("")  # the data directory is a file: the check fails
    follower = FollowerProcess(FollowerSpec(default_matchengine_data(), True, str(blocked),
                                            "sqlite"))
    await follower.check_schema_soon()
    await follower.forget_schema_check()  # waits, and keeps the start's error to the start
    assert follower._schema is None
