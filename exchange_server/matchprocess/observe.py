"""The matchengine's Prometheus gauges: log, engine, slice, follower and bus progress.

Why here: these are the numbers an operator reads to tell whether the exchange keeps up (the
status command and the alert rules name them), read at scrape time from the service's own
counters so the matching path pays nothing.  Lags are given in operations and in seconds (how
long ago the first operation a consumer has not processed became durable, see
metrics.Timeline).
"""

from __future__ import annotations

import time

from exchange_server.bus.publisher import BusPublisher
from exchange_server.common import metrics
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchprocess.follower import FollowerProcess


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
    g.counter("refused_writes", "Writes refused with code 3 (service unavailable: the log, "
              "the history follower or the bus is too far behind)",
              lambda: service.refused_writes)
    g.add("open_orders", "Orders on the books",
          lambda: sum(len(m.orders) for m in service.engine.markets.values()))
    _register_activity(g, service)
    _register_commit_latency(g, service)
    _register_slice(g, service)
    durable = metrics.Timeline(lambda: service.durable_id)
    metrics.on_tick("matchengine.durable", durable.sample)
    if follower is not None:
        g.add("history_follower_lag", "Operations the history follower has not applied yet",
              lambda: max(0, service.durable_id - follower.applied.value))
        g.add("history_follower_lag_seconds", "Seconds since the first operation the history "
              "follower has not applied became durable",
              lambda: durable.lag_seconds(follower.applied.value))
        g.add("history_pending_rows", "History rows waiting to be written",
              lambda: follower.pending.value)
    if publisher is not None:
        g.add("bus_pending_messages", "Bus messages not acknowledged yet",
              publisher.pending_total)
        g.add("bus_lag", "Durable operations whose bus messages are not all acknowledged",
              lambda: max(0, service.durable_id - publisher.current_mark().oper_id))
        g.add("bus_lag_seconds", "Seconds since the first operation whose bus messages are not "
              "all acknowledged became durable",
              lambda: durable.lag_seconds(publisher.current_mark().oper_id))


def _register_activity(g: metrics.ServiceGauges, service: MatchEngineService) -> None:
    """Orders and trades: totals (the engine's id counters) and rates over the last minute."""
    engine = service.engine
    orders = metrics.RateWindow(lambda: engine.order_id)
    trades = metrics.RateWindow(lambda: engine.deal_id)
    metrics.on_tick("matchengine.orders", orders.sample)
    metrics.on_tick("matchengine.trades", trades.sample)
    g.counter("orders", "Orders accepted (the engine's order id)", lambda: engine.order_id)
    g.counter("trades", "Trades made (the engine's deal id)", lambda: engine.deal_id)
    g.add("orders_per_second", "Orders accepted per second over the last minute", orders.rate)
    g.add("trades_per_second", "Trades per second over the last minute", trades.rate)


def _register_commit_latency(g: metrics.ServiceGauges, service: MatchEngineService) -> None:
    commits = metrics.RateWindow(lambda: service.commit_count)
    seconds = metrics.RateWindow(lambda: service.commit_seconds_total)
    metrics.on_tick("matchengine.commits", commits.sample)
    metrics.on_tick("matchengine.commit_seconds", seconds.sample)

    def average() -> float:
        rate = commits.rate()
        return seconds.rate() / rate if rate > 0 else 0.0

    g.add("operlog_commit_seconds_avg", "Average time of one operation log commit over the "
          "last minute (0: no commit in that minute)", average)


def _register_slice(g: metrics.ServiceGauges, service: MatchEngineService) -> None:
    def slice_time() -> float:
        return service.last_slice.time if service.last_slice is not None else 0

    def since_slice() -> float:
        covered = service.last_slice.end_oper_id if service.last_slice is not None else 0
        return max(0, service.durable_id - covered)

    g.add("last_slice_time", "Unix time of the newest slice (0: none yet)", slice_time)
    g.add("last_slice_age_seconds", "Seconds since the newest slice (since start if none)",
          lambda: time.time() - (slice_time() or metrics.STARTED))
    g.add("operations_since_slice", "Durable operations after the newest slice: what a "
          "restart would replay now", since_slice)
