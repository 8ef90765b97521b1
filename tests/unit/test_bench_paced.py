"""bench_paced: its connections really wait between a reply and the next request.

Why: the benchmark compares two trees' p99 at the same offered load; if wrk's ``delay()`` were
not applied (a script error wrk only warns about), it would silently be bench_e2e again.  The
pause bounds how many requests a connection can make whatever the server's speed, so the bound
below holds on a loaded machine as on a quiet one."""

from __future__ import annotations

from bench import bench_paced


def test_a_paced_run_makes_no_more_requests_than_its_pause_allows() -> None:
    seconds, pause_ms, connections = 1, 100, 2
    figures = bench_paced.main(seconds, pause_ms, (connections,))[0]
    # each connection: a request, then at least pause_ms before the next one
    ceiling = connections * (seconds * 1000 // pause_ms + 1)
    assert 0 < figures["accepted"] + figures["refused"] <= ceiling
    assert figures["refused"] == 0
