"""Helpers of the tests of the CoinEx fork's extensions (tests/*/test_ext_*.py).

``Ex`` drives an engine through the RPC method layer exactly as the service does (a write's
events are taken after it, a refused write leaves none, replies are formatted and JSON round
tripped), and records every accepted write as the operation log would, so a test can check at
any point that replaying the log into a fresh engine rebuilds exactly the same state.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

from exchange_server.common.config import MatchEngineConfig
from exchange_server.common.errors import RpcError
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.core.model import Event
from exchange_server.matchengine.methods import MatchEngineMethods, present
from tests.integration.test_methods import config as base_config

FEES = ("0.002", "0.001")
#: The fork's trailing "no fee asset, no discount".
NO_FEE_ASSET = (None, None)


def config() -> MatchEngineConfig:
    return base_config()


def _value_text(value: Decimal) -> str:
    """A decimal's value as text without trailing zeros (``100.000`` and ``100.00`` alike)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def fingerprint(engine: Engine) -> dict[str, Any]:
    """Everything a restart must give back: counters, orders and stops (every field), balances,
    the dedup window, runtime configuration and each market's state."""
    state = engine.dump_state()
    return {
        "order_id": state.order_id,
        "deal_id": state.deal_id,
        "orders": [tuple(str(getattr(o, f)) for f in o.__slots__) for o in state.orders],
        "stops": sorted(tuple(str(getattr(s, f)) for f in s.__slots__) for s in state.stops),
        # by value: a balance untouched since config.update_asset raised its asset's prec_save
        # keeps the old exponent in the live engine and loads from a slice at the new one
        "balances": sorted((u, a, k, _value_text(v)) for u, a, k, v in state.balances),
        "updates": sorted(state.updates),
        "config": sorted((k, n, json.dumps(d, sort_keys=True)) for k, n, d in state.config),
        "assets": sorted((a.name, a.prec_save, a.prec_show) for a in engine.assets.values()),
        "markets": sorted(
            (m.name, m.stock, m.money, m.stock_prec, m.money_prec, m.fee_prec, str(m.min_amount),
             str(m.last), m.suspended, len(m.stops_low), len(m.stops_high))
            for m in engine.markets.values()),
    }


class Ex:
    def __init__(self, cfg: MatchEngineConfig | None = None) -> None:
        self.cfg = cfg or config()
        self.engine = Engine.from_config(self.cfg)
        self.methods = MatchEngineMethods(self.engine)
        self.now = 1_700_000_000.0
        self.events: list[Event] = []
        self.log: list[tuple[float, str, list[Any]]] = []
        #: (operation id, events) of every accepted write, as the service hands them to sinks
        self.ops: list[tuple[int, list[Event]]] = []
        #: the reply of every accepted write, in log order
        self.replies: list[Any] = []
        self.business_id = 0

    def call(self, method: str, *params: Any) -> Any:
        self.now += 1
        read = self.methods.reads.get(method)
        if read is not None:
            return json.loads(json.dumps(read(list(params))))
        write = self.methods.writes[method]
        args = list(params)
        try:
            if write.check is not None:  # as MatchEngineService.execute does
                write.check(args)
            result = write.run(self.now, args)
        except RpcError:
            assert not self.engine.take_events(), "a refused write must leave no events"
            raise
        self.events = self.engine.take_events()
        # the service logs the params list the write ran with (a write may record in it what
        # replay needs, e.g. the self-trade prevention mode the config gave)
        self.log.append((self.now, write.log_name, copy.deepcopy(args)))
        self.ops.append((len(self.log), self.events))
        reply = json.loads(json.dumps(present(result)))
        self.replies.append(reply)
        return reply

    def err(self, method: str, *params: Any) -> int:
        try:
            self.call(method, *params)
        except RpcError as e:
            return e.code
        raise AssertionError(f"{method} {params} succeeded")

    def deposit(self, user: int, asset: str, amount: str) -> None:
        self.business_id += 1
        self.call("balance.update", user, asset, "deposit", self.business_id, amount, {})

    def balance(self, user: int, asset: str) -> tuple[str, str]:
        b = self.call("balance.query", user, asset)[asset]
        return b["available"], b["freeze"]

    def limit(self, user: int, side: int, amount: str, price: str, *ext: Any,
              market: str = "BTCBCH") -> Any:
        return self.call("order.put_limit", user, market, side, amount, price, *FEES, "t", *ext)

    def limit_opt(self, user: int, side: int, amount: str, price: str, option: int,
                  market: str = "BTCBCH") -> Any:
        return self.limit(user, side, amount, price, *NO_FEE_ASSET, option, market=market)

    def market_order(self, user: int, side: int, amount: str, *ext: Any,
                     market: str = "BTCBCH") -> Any:
        return self.call("order.put_market", user, market, side, amount, "0.002", "t", *ext)

    def stop_limit(self, user: int, side: int, amount: str, stop_price: str, price: str,
                   *ext: Any, market: str = "BTCBCH") -> Any:
        return self.call("order.put_stop_limit", user, market, side, amount, stop_price, price,
                         *FEES, "s", *NO_FEE_ASSET, *ext)

    def stop_market(self, user: int, side: int, amount: str, stop_price: str, *ext: Any,
                    market: str = "BTCBCH") -> Any:
        return self.call("order.put_stop_market", user, market, side, amount, stop_price,
                         "0.002", "s", *NO_FEE_ASSET, *ext)

    def trade_at(self, price: str, amount: str = "0.01", market: str = "BTCBCH") -> None:
        """Set the market's last price: users 90 and 91 (funded here) trade at ``price``."""
        stock, money = self.engine.markets[market].stock, self.engine.markets[market].money
        self.deposit(90, stock, amount)
        self.deposit(91, money, str(Decimal(amount) * Decimal(price) * 2))
        self.call("order.put_limit", 90, market, 1, amount, price, "0", "0", "set")
        self.call("order.put_limit", 91, market, 2, amount, price, "0", "0", "set")
        assert self.engine.markets[market].last == Decimal(price)

    def kinds(self) -> list[str]:
        """The last write's events, by type name."""
        return [type(e).__name__ for e in self.events]

    def replayed(self, cfg: MatchEngineConfig | None = None, quiet: bool = False) -> Engine:
        """A fresh engine (``cfg``: another config) fed this session's log; ``quiet``: as a
        replay no sink takes the events of (``Engine.set_quiet``), which must append none and
        give the replies the session got, but for a limit order's (none: ``put_limit``)."""
        engine = Engine.from_config(cfg or self.cfg)
        engine.set_quiet(quiet)
        methods = MatchEngineMethods(engine)
        for (now, name, params), reply in zip(self.log, self.replies, strict=True):
            result = methods.by_log_name[name].run(now, copy.deepcopy(params))
            if quiet:
                assert not engine.events, f"a quiet {name} appended events"
                if name == "limit_order":
                    assert result is None, "a quiet put_limit made a reply"
                else:
                    assert json.loads(json.dumps(present(result))) == reply
            engine.take_events()
        engine.set_quiet(False)
        return engine

    def check_replay(self) -> None:
        """Replaying the log rebuilds the same state, with its events or quietly (the
        accounts even in the same order: slices and listings follow it)."""
        expected = fingerprint(self.engine)
        assert fingerprint(self.replayed()) == expected
        quiet = self.replayed(quiet=True)
        assert fingerprint(quiet) == expected
        assert list(quiet.balances.items()) == list(self.engine.balances.items())
        # a slice of it loads the same books, best prices included
        loaded = Engine.from_config(self.cfg)
        assert loaded.load_state(self.engine.dump_state()) == []
        assert fingerprint(loaded) == expected
        for name, market in loaded.markets.items():
            live = self.engine.markets[name]
            assert (market.ask_top, market.bid_top) == (live.ask_top, live.bid_top)
