"""The matchengine's Prometheus gauges: log, engine, follower and bus progress."""

from __future__ import annotations

from exchange_server.bus.publisher import BusPublisher
from exchange_server.common import metrics
from exchange_server.matchengine.follower import FollowerProcess
from exchange_server.matchengine.service import MatchEngineService


def register_gauges(service: MatchEngineService, follower: FollowerProcess | None = None,
                    publisher: BusPublisher | None = None) -> None:
    g = metrics.gauges("matchengine")
    g.add("operations", "Id of the last operation applied to the engine", lambda: service.oper_id)
    g.add("operlog_durable_operation", "Id of the last operation committed to the log",
          lambda: service.durable_id)
    g.add("operlog_commit_lag", "Operations applied but not yet committed to the log",
          lambda: service.oper_id - service.durable_id)
    g.add("operlog_queue", "Operations waiting for the next commit",
          lambda: len(service._pending))
    g.add("operlog_commits", "Commits of the operation log since start",
          lambda: service.commit_count)
    g.add("open_orders", "Orders on the books",
          lambda: sum(len(m.orders) for m in service.engine.markets.values()))
    if follower is not None:
        g.add("history_follower_lag", "Operations the history follower has not applied yet",
              lambda: service.oper_id - follower.applied.value)
        g.add("history_pending_rows", "History rows waiting to be written",
              lambda: follower.pending.value)
    if publisher is not None:
        g.add("bus_pending_messages", "Bus messages not acknowledged yet",
              publisher.pending_total)
