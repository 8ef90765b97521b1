"""The matchengine as its own process (production): MySQL operation log, history written by the
follower process, deals/orders/balances published to Kafka, the binary RPC server for the
gateways.  Run by ``exchange-server matchengine -c CONFIG``.

With a ``leader`` block it is one of several active/standby engines (matchprocess/leader.py):
it starts as a standby (log open, engine restored and tailing, console and metrics up, RPC port
closed) and starts the history follower, the bus publisher, the service and the RPC server only
once it holds the lease.

The bus publisher's mark lives in the log database (``bus_mark``, bus/mark.py), not in
``bus_mark_file``: whichever host runs the matchengine next continues from it.  The file is
only read once, on the first start after an upgrade, to take its mark over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import Any

from exchange_server.bus.kafka import KafkaTransport
from exchange_server.bus.mark import MarkStoreError, publisher_mark
from exchange_server.bus.publisher import BusPublisher
from exchange_server.common.config import MatchEngineConfig, load_matchengine
from exchange_server.common.names import Storage
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchengine.store import StoreError
from exchange_server.matchengine.store_mysql import MysqlEngineStore
from exchange_server.matchprocess import leader
from exchange_server.matchprocess.console import Console, ConsoleServer, parse_console_address
from exchange_server.matchprocess.follower import FollowerProcess, FollowerSpec
from exchange_server.matchprocess.lifecycle import engine_steps
from exchange_server.matchprocess.observe import register_gauges
from exchange_server.process.daemon import RESTART_STATUS
from exchange_server.process.lifecycle import (
    Composite,
    StartupFailed,
    Step,
    start_steps,
    step,
)
from exchange_server.rpc.commands import service_commands
from exchange_server.rpc.server import RpcServer

NAME = "matchengine"
log = logging.getLogger("exchange_server.leader")
#: engine_steps started only by the active (a standby has the log and the engine already)
ACTIVE_STEPS = ("history follower", "bus publisher", "matchengine")


class StandaloneMatchEngine(Composite):
    def __init__(self, config: MatchEngineConfig) -> None:
        assert config.db_log and config.db_history and config.svr and config.brokers
        self.config = config
        self.store = MysqlEngineStore(config.db_log)
        self.service = MatchEngineService(config, self.store)
        #: the status the process exits with when the service ends by itself (deposed)
        self.exit_status: int | None = None
        self._finished = asyncio.Event()
        self.follower = FollowerProcess(
            FollowerSpec(config.raw, False, "", Storage.MYSQL, logging.getLogger().level),
            max_pending_rows=config.history_max_pending)
        self.service.pressure.append(lambda: self.follower.overloaded(self.service.oper_id))
        self.service.durable_hooks.append(self.follower.set_durable)
        self.rpc = RpcServer(self.service, service_commands(NAME), config.svr.max_pkg_size,
                             config.svr.heartbeat_check, name=NAME)
        assert config.cli is not None
        self.console_addr = parse_console_address(config.cli)
        self.console = ConsoleServer(Console(self.service, self.follower))
        self.publisher: BusPublisher | None = None
        self.leadership: leader.Leadership | None = None
        self._active: contextlib.AsyncExitStack | None = None
        if config.leader is None:
            self._use_publisher(BusPublisher(
                KafkaTransport(config.brokers, config.kafka_topic_prefix), publisher_mark(config),
                max_pending=config.kafka_max_pending))
        else:
            self.held = leader.HeldEvents(leader.bus_mark_reader(config),
                                          config.kafka_max_pending)
            self.service.add_sink(self.held)
            self.leadership = leader.Leadership(config, self.store, self.service, self.held,
                                                self._activate, self._step_down)
            self.service.pressure.append(lambda: not self._may_write())
            self.leadership.register_gauges()

    def _use_publisher(self, publisher: BusPublisher) -> None:
        self.publisher = publisher
        self.service.add_sink(publisher)
        self.console.console.publisher = publisher
        register_gauges(self.service, self.follower, publisher)

    def _may_write(self) -> bool:
        return self.leadership is not None and self.leadership.may_write()

    async def finished(self) -> None:
        """Returns when the service ends by itself: a deposed engine (``exit_status``)."""
        await self._finished.wait()

    def steps(self) -> list[Step]:
        if self.leadership is not None:
            return self._standby_steps(self.leadership)
        return self._single_steps()

    def _single_steps(self) -> list[Step]:
        """The start order (stopped in the reverse): the matching process's steps shared with
        embedded mode (matchprocess/lifecycle.py), then the RPC server and the console."""
        assert self.config.svr is not None and self.publisher is not None
        return [
            *engine_steps(self.service, self.follower, self.publisher),
            step("rpc", partial(self.rpc.start, self.config.svr.bind), self.rpc.stop),
            step("console", partial(self.console.start, self.console_addr), self.console.stop),
        ]

    def _standby_steps(self, leadership: leader.Leadership) -> list[Step]:
        """Log, restore (the engine to tail from), console; the active's steps are started by
        the leadership once it holds the lease (:meth:`_activate`), stopped before it."""
        store = self.store
        return [
            step("operation log", store.open, store.close),
            step("restore", self.service.restore),
            # made now (it blocks the loop for as long as it takes; the first time, seconds):
            # not during a takeover, when the lease must be renewed
            step("history schema", self.follower.create_schema),
            step("console", partial(self.console.start, self.console_addr), self.console.stop),
            # stopped in the reverse order: the active's components first (last commit, final
            # slice) while the lease is still renewed, then the lease connection, whose closing
            # lets a standby take over at once
            step("leadership", leadership.start, leadership.stop),
            step("active matchengine", stop=self._deactivate),
        ]

    async def _activate(self) -> None:
        """The lease is ours and the log replayed: hand the held events to a publisher, then
        start the history follower, the publisher, the service and the RPC server."""
        assert self.config.svr is not None
        publisher = leader.make_publisher(self.config)
        if self.held.original_end:
            publisher.start_after(self.held.original_end)
        self.service.sinks.remove(self.held)
        if self.held.covers(publisher.durable_mark()):
            for oper_id, events in self.held.events:
                publisher.on_events(oper_id, events)
            self.held.events.clear()
        else:
            await self._restore_for(publisher)
        self._use_publisher(publisher)
        self.service.durable_id = self.service.oper_id
        for hook in self.service.durable_hooks:
            hook(self.service.durable_id)
        svr = self.config.svr
        self._active = await start_steps([
            *(s for s in engine_steps(self.service, self.follower, publisher)
              if s.name in ACTIVE_STEPS),
            step("rpc", partial(self.rpc.start, svr.bind), self.rpc.stop),
        ])

    async def _restore_for(self, publisher: BusPublisher) -> None:
        """The held events do not reach back to the publisher's mark: restore a fresh engine
        from a slice at or before it (its replay feeds the publisher) and take it over."""
        log.warning("takeover: restoring from a slice (the events held do not reach back to "
                    "the bus mark %d)", publisher.durable_mark())
        await asyncio.get_running_loop().run_in_executor(
            None, leader.restore_into, self.service, self.store, publisher)

    async def _deactivate(self) -> None:
        active, self._active = self._active, None
        if active is not None:
            await active.aclose()

    async def _step_down(self) -> None:
        """Deposed: refuse what waits and every write (code 3), close the RPC port, and end
        the process so that its watchdog starts a fresh standby."""
        self.service.step_down("another matchengine holds the leader lease")
        await self.rpc.stop(grace=1.0)
        self.exit_status = RESTART_STATUS
        self._finished.set()

    async def start(self) -> None:
        """Start every step; when one fails, those before it are stopped (in reverse)."""
        try:
            await super().start()
        except (StoreError, MarkStoreError) as e:
            raise StartupFailed(f"cannot start: {e}") from None


async def build(data: dict[str, Any]) -> StandaloneMatchEngine:
    return StandaloneMatchEngine(load_matchengine(data))


def validate(data: dict[str, Any]) -> None:
    config = load_matchengine(data)
    assert config.cli is not None
    parse_console_address(config.cli)
    if config.leader is not None:
        leader.check_config(config.leader)
