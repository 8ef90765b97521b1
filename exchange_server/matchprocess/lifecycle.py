"""The matching process's start order, declared once for embedded and standalone mode.

Why: both modes start the same components around the matchengine service, in an order that
matters (the operation log is open before the restore; the restore is done before the follower
and the publisher read the marks it set; the service takes requests last), and stop them in
the reverse order.  Each mode adds its own steps before the restore (embedded: marketprice,
a durable bus consumer) and after the service (listeners).  See process/lifecycle.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from exchange_server.bus.publisher import BusPublisher
from exchange_server.common import gctune
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchprocess.follower import FollowerProcess
from exchange_server.process.lifecycle import Step, step

#: Seconds the history follower and the bus publisher get to stop; shorter when the log storage
#: is failing.  Bounded either way: a SIGTERM ends the process within 10 s whatever the disks
#: do (the history database may be full while the log is not), and both resume from their own
#: marks at the next start (a follower stopped mid-batch only costs replay then).
FOLLOWER_STOP_TIMEOUT = 5.0
PUBLISHER_STOP_TIMEOUT = 5.0
FAILING_FOLLOWER_STOP_TIMEOUT = 2.0
FAILING_PUBLISHER_STOP_TIMEOUT = 1.0


def engine_steps(service: MatchEngineService, follower: FollowerProcess,
                 publisher: BusPublisher, before_restore: Sequence[Step] = ()) -> list[Step]:
    """Operation log, (the history schema checked beside the restore), restore, history
    follower, bus publisher, the service itself."""
    store = service.store

    def follower_timeout() -> float:
        return FAILING_FOLLOWER_STOP_TIMEOUT if service.degraded else FOLLOWER_STOP_TIMEOUT

    async def stop_publisher() -> None:
        await publisher.stop(timeout=FAILING_PUBLISHER_STOP_TIMEOUT if service.degraded
                             else PUBLISHER_STOP_TIMEOUT)

    return [
        step("operation log", store.open, store.close),
        step("gc tuning", gctune.tune),
        # checked in a thread while the restore runs; the follower's step waits for it
        step("history schema check", follower.check_schema_soon, follower.forget_schema_check),
        *before_restore,
        step("restore", partial(service.restore, freeze_loaded=True)),
        step("gc freeze", gctune.freeze_startup_state),
        Step("history follower", lambda: follower.running(follower_timeout)),
        step("bus publisher", publisher.start, stop_publisher),
        Step("matchengine", lambda: service),
    ]
