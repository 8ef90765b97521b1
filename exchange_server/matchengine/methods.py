"""The matchengine's RPC methods: parameter validation, engine call, result shape.

Validation order and error codes follow rpc.md section 4.  Write methods are registered with
the name the operation log stores them under (the original's ``update_balance``,
``limit_order``, ``market_order``, ``cancel_order``), and replay runs exactly the same function
with the logged params and time, so a restored state cannot differ from the live one.

The CoinEx fork's methods (extensions.md) are added with its names and its v1 parameter
layouts without ``account``; order.put_limit / order.put_market also take the fork's trailing
parameters ``fee_asset, fee_discount[, option[, client_id]]`` (with the original's 8 / 6
parameters nothing changes).  See docs/compatibility.md, "Extensions from the CoinEx fork".

Self-trade prevention: an order that chooses no mode in its option gets the matchengine's
``self_trade_prevention`` config.  The log must replay the same way whatever the config is when
it is replayed, so a live order placement writes the mode it got from the config into its own
params (the list the service then logs): into ``option`` for the fork's layouts, as one more
(9th / 7th) parameter for the original's (a layout only replay accepts).  Replay never looks at
the config: a logged order without a mode had none, the original's behaviour.
"""

from __future__ import annotations

import inspect
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from decimal import getcontext as _getcontext
from functools import partial
from typing import Any

from exchange_server.common.config import ConfigError
from exchange_server.common.decimals import CONTEXT, ONE, ZERO, fmt, parse, truncate
from exchange_server.common.errors import invalid_argument
from exchange_server.matchengine.configured import read_asset_detail, read_market_detail
from exchange_server.matchengine.core.balance import AVAILABLE
from exchange_server.matchengine.core.engine import (
    CancelResult,
    Engine,
    admin_error,
)
from exchange_server.matchengine.core.market import Market
from exchange_server.matchengine.core.model import (
    ASK,
    BID,
    LIMIT,
    MARKET,
    OPTION_FOK,
    OPTION_MAKER_ONLY,
    OPTION_STP_BITS,
    OPTION_STP_MASK,
    OPTION_STP_NONE,
    OPTION_SUPPORTED,
    STOP_STATE_HIGH,
    STOP_STATE_LOW,
    OrderSnapshot,
    Side,
    SideOrBoth,
    StopSnapshot,
    order_info,
    stop_info,
)

#: order.book / order.depth / order.pending page size limit.
LIST_MAX = 101
#: source must be shorter than this many bytes (the original's strlen(source) < 31).
SOURCE_MAX_BYTES = 31
#: business names longer than this cannot be stored in balance_history (VARCHAR(30)).
BUSINESS_MAX = 30

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
#: Names of assets and markets added at run time: the original's accessws (ASSET_NAME_MAX_LEN,
#: MARKET_NAME_MAX_LEN: 16 with the NUL) takes at most 15 bytes, so a longer one could never be
#: subscribed.  Market names also keep to the characters of the market page's URL (pages.py).
NAME_MAX_BYTES = 15
MARKET_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")

#: client_id: at most 32 bytes of these characters (the fork's rule); "" = none.
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{0,32}\Z")
#: order.cancel_batch takes 1 to this many order ids.
BATCH_MAX = 101

SUCCESS = {"status": "success"}

Params = list[Any]


# -- parameter readers ---------------------------------------------------------------------------


def _int(value: Any, maximum: int = U64_MAX) -> int:
    if type(value) is not int or value < 0 or value > maximum:
        raise invalid_argument()
    return value


def _user(value: Any) -> int:
    """User ids are unsigned 32-bit and non-zero (the original let 0 through some methods)."""
    if type(value) is not int or not 0 < value <= U32_MAX:  # _int's check, in place
        raise invalid_argument()
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise invalid_argument()
    return value


def _dec(value: Any, prec: int) -> Decimal:
    parsed = parse(value, prec)
    if parsed is None:
        raise invalid_argument()
    return parsed


# _positive, _fee and _source call parse / check the type themselves rather than through _dec /
# _str: four of them run for every order placed, and a Python call costs as much as the check.

#: The texts ``_positive`` / ``_fee`` accepted, with their values, per precision.  Why: an
#: order's four decimal params are looked up here in one go (``_read_limit``) instead of going
#: through four readers and four parse calls; a text not found is read in full.  Only strings
#: ever go in (parse takes nothing else), so a hit is exactly what the reader would return.
_ACCEPTED_POSITIVE: defaultdict[int, dict[str, Decimal]] = defaultdict(dict)
_ACCEPTED_FEE: defaultdict[int, dict[str, Decimal]] = defaultdict(dict)
#: a table is emptied when it reaches this many texts (as parse's cache)
_ACCEPTED_MAX = 65536


def _positive(value: Any, prec: int) -> Decimal:
    parsed = parse(value, prec)
    if parsed is None or parsed <= ZERO:
        raise invalid_argument()
    _accept(_ACCEPTED_POSITIVE[prec], value, parsed)
    return parsed


def _fee(value: Any, prec: int) -> Decimal:
    parsed = parse(value, prec)
    if parsed is None or parsed < ZERO or parsed >= ONE:
        raise invalid_argument()
    _accept(_ACCEPTED_FEE[prec], value, parsed)
    return parsed


def _accept(accepted: dict[str, Decimal], text: str, value: Decimal) -> None:
    if len(accepted) >= _ACCEPTED_MAX:
        accepted.clear()
    accepted[text] = value


def _side(value: Any) -> Side:
    if type(value) is int:
        if value == ASK:
            return ASK
        if value == BID:
            return BID
    raise invalid_argument()


def _source(value: Any) -> str:
    if type(value) is not str or len(value.encode()) >= SOURCE_MAX_BYTES:
        raise invalid_argument()
    return value


def _detail_name(params: Params) -> str | None:
    """The ``name`` of an asset or market detail param (None: malformed, left to the method)."""
    if len(params) == 1 and isinstance(params[0], dict):
        name = params[0].get("name")
        if isinstance(name, str) and name:
            return name
    return None


def _check_name(what: str, name: str) -> None:
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > NAME_MAX_BYTES:
        raise admin_error(f"{what}.name: {name!r} is {size} bytes, at most {NAME_MAX_BYTES} "
                          "(the original's accessws could not subscribe to it)")


def _count(params: Params, n: int) -> None:
    if len(params) != n:
        raise invalid_argument()


def _side_or_both(value: Any) -> SideOrBoth:
    """0 (both sides), 1 or 2."""
    if type(value) is int:
        if value == 0:
            return 0
        if value == ASK:
            return ASK
        if value == BID:
            return BID
    raise invalid_argument()


def _option(value: Any) -> int:
    """The fork's ``option``: a JSON integer of supported bits, anything else reads as 0."""
    if type(value) is not int:
        return 0
    if value < 0 or value & ~OPTION_SUPPORTED:
        raise invalid_argument()
    return value


def _client_id(value: Any) -> str:
    """The fork's ``client_id``: a non-string reads as none (""), a string must be at most 32
    bytes of ``A-Z a-z 0-9 - _``."""
    if type(value) is not str:
        return ""
    if not CLIENT_ID.match(value):
        raise invalid_argument()
    return value


def _fee_asset(value: Any) -> None:
    """The fork's ``fee_asset``: paying fees in another asset is not supported, so only "none"
    (null, "" or any non-string) is accepted."""
    if type(value) is str and value:
        raise invalid_argument()


def _fee_discount(value: Any) -> None:
    """The fork's ``fee_discount`` (only used with a fee asset): null, "" or 0 ... 1."""
    if value is None or value == "":
        return
    parsed = parse(value)
    if parsed is None or parsed < 0 or parsed > ONE:
        raise invalid_argument()


def _stp_conflict(option: int) -> int:
    """"none" (0x400) together with a prevention mode (0x300 bits) is refused."""
    if option & OPTION_STP_NONE and option & OPTION_STP_MASK:
        raise invalid_argument()
    return option


def _recorded_stp(value: Any) -> int:
    """The mode a live placement recorded after the original's params (replay only)."""
    if type(value) is not int or value & ~OPTION_STP_MASK or not value:
        raise invalid_argument()
    return value


def _record_option(params: Params, at: int, option: int) -> None:
    """Write the effective ``option`` into a fork-layout params list (index ``at``)."""
    if len(params) > at:
        params[at] = option
    else:
        params.append(option)


def _extension(params: Params, at: int) -> tuple[int, str]:
    """The fork's trailing ``fee_asset, fee_discount[, option[, client_id]]`` from ``at``."""
    _fee_asset(params[at])
    _fee_discount(params[at + 1])
    option = _option(params[at + 2]) if len(params) > at + 2 else 0
    client_id = _client_id(params[at + 3]) if len(params) > at + 3 else ""
    return _stp_conflict(option), client_id


class Lazy:
    """A write's result that is only built when a reply needs it (never during replay)."""

    __slots__ = ("render",)

    def __init__(self, render: Callable[[], Any]) -> None:
        self.render = render


def present(result: Any) -> Any:
    """A write's result as the reply shows it.  Writes return order snapshots unformatted so
    that replay, which discards replies, does not pay for formatting them."""
    kind = type(result)
    if kind is OrderSnapshot:
        return order_info(result)
    if kind is StopSnapshot:
        return stop_info(result)
    if kind is Lazy:
        return result.render()
    return result


@dataclass(frozen=True)
class WriteMethod:
    """A state-changing method and the name its operations carry in the operation log."""

    name: str
    log_name: str
    run: Callable[[float, Params], Any]
    #: Live requests only (never replay): refuses what the original's services would not
    #: accept, while an older operation log replays as it was accepted.
    check: Callable[[Params], None] | None = None


class MatchEngineMethods:
    """Binds the method table to one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reads: dict[str, Callable[[Params], Any]] = {
            "balance.query": self.balance_query,
            "asset.list": self.asset_list,
            "asset.summary": self.asset_summary,
            "order.book": self.order_book,
            "order.depth": self.order_depth,
            "order.pending": self.order_pending,
            "order.pending_detail": self.order_pending_detail,
            "market.list": self.market_list,
            "market.summary": self.market_summary,
            # the fork's
            "order.pending_stop": self.order_pending_stop,
            "order.stop_book": self.order_stop_book,
            "market.detail": self.market_detail,
        }
        writes = [
            WriteMethod("balance.update", "update_balance", self.balance_update),
            WriteMethod("order.put_limit", "limit_order", self.order_put_limit),
            WriteMethod("order.put_market", "market_order", self.order_put_market),
            WriteMethod("order.cancel", "cancel_order", self.order_cancel),
            # the fork's (extensions.md), with its operation log names where it has one
            WriteMethod("order.put_stop_limit", "stop_limit", self.order_put_stop_limit),
            WriteMethod("order.put_stop_market", "stop_market", self.order_put_stop_market),
            WriteMethod("order.cancel_stop", "cancel_stop", self.order_cancel_stop),
            WriteMethod("order.cancel_stop_all", "cancel_stop_all", self.order_cancel_stop_all),
            WriteMethod("order.cancel_all", "cancel_order_all", self.order_cancel_all),
            WriteMethod("order.cancel_batch", "cancel_order_batch", self.order_cancel_batch),
            # runtime configuration (admin: accesshttp asks for the admin token)
            WriteMethod("config.update_asset", "update_asset", self.config_update_asset,
                        self.check_new_asset_name),
            WriteMethod("config.update_market", "update_market", self.config_update_market,
                        self.check_new_market_name),
            WriteMethod("config.suspend_market", "suspend_market", self.config_suspend_market),
            WriteMethod("config.resume_market", "resume_market", self.config_resume_market),
        ]
        self.writes: dict[str, WriteMethod] = {w.name: w for w in writes}
        # replay: the same functions, but the self-trade prevention config is not consulted
        replays: dict[str, Callable[[float, Params], Any]] = {
            "order.put_limit": self._replay_put_limit,
            "order.put_market": partial(self.order_put_market, live=False),
            "order.put_stop_limit": partial(self.order_put_stop_limit, live=False),
            "order.put_stop_market": partial(self.order_put_stop_market, live=False),
        }
        self.by_log_name: dict[str, WriteMethod] = {
            w.log_name: replace(w, run=replays[w.name]) if w.name in replays else w
            for w in writes}
        #: the core's put_limit without its context wrapper: for ``_quiet_put_limit``, and for
        #: ``order_put_limit`` when the engine's context is the thread's already (the service's
        #: thread, ``configured.Engine``), where the wrapper would only check that and call it
        #: (a Python frame of twelve arguments more for every order placed)
        self._unwrapped_put_limit = inspect.unwrap(type(engine).put_limit)
        #: the core's put_limit_quiet without its context wrapper, for ``_quiet_put_limit``
        self._unwrapped_put_limit_quiet = inspect.unwrap(type(engine).put_limit_quiet)

    def _market(self, value: Any) -> Market:
        if type(value) is not str:
            raise invalid_argument()
        market = self.engine.markets.get(value)
        if market is None:
            raise invalid_argument()
        return market

    def _stp(self, option: int, live: bool) -> int:
        """The option with its self-trade prevention mode: the order's own, else (live) the
        config's.  Replay takes the logged option as it is (see the module docstring)."""
        if option & OPTION_STP_BITS or not live:
            return option
        return option | self.engine.self_trade_prevention

    def _asset(self, value: Any) -> str:
        if type(value) is not str or value not in self.engine.assets:
            raise invalid_argument()
        return value

    # -- writes -----------------------------------------------------------------------------------

    def balance_update(self, now: float, params: Params) -> Any:
        _count(params, 6)
        user = _user(params[0])
        asset = self._asset(params[1])
        business = _str(params[2])
        if len(business) > BUSINESS_MAX:
            raise invalid_argument()
        business_id = _int(params[3])
        change = _dec(params[4], self.engine.assets[asset].prec_show)
        detail = params[5]
        if type(detail) is not dict:
            raise invalid_argument()
        self.engine.update_balance(now, user, asset, business, business_id, change, detail)
        return {"status": "success"}

    def order_put_limit(self, now: float, params: Params, live: bool = True) -> Any:
        if len(params) == 9 and not live:
            return self._put_limit(now, params, _recorded_stp(params[8]))
        if len(params) != 8:
            return self._put_limit_ext(now, params, live)
        stp = self.engine.self_trade_prevention if live else 0  # self._stp(0, live)
        # _put_limit(now, params, stp), written out (the call is a few percent of an order)
        user, market, side, amount, price, taker_fee, maker_fee, source = self._read_limit(params)
        if _getcontext() is CONTEXT:  # the context wrapper's own check, without its call
            result = self._unwrapped_put_limit(self.engine, now, market, user, side, amount,
                                               price, taker_fee, maker_fee, source, stp)
        else:
            result = self.engine.put_limit(now, market, user, side, amount, price, taker_fee,
                                           maker_fee, source, stp)
        if stp:
            params.append(stp)
        return result

    def _replay_put_limit(self, now: float, params: Params) -> Any:
        """``order_put_limit(now, params, live=False)``, without the keyword call's cost (replay
        runs it for every logged order)."""
        count = len(params)
        if count == 8:  # _put_limit(now, params, 0), written out
            user, market, side, amount, price, taker_fee, maker_fee, source = (
                self._read_limit(params))
            return self.engine.put_limit(now, market, user, side, amount, price, taker_fee,
                                         maker_fee, source)
        if count == 9:
            return self._put_limit(now, params, _recorded_stp(params[8]))
        return self._put_limit_ext(now, params, False)

    def quiet_replays(self) -> dict[str, Callable[[float, Params], Any]]:
        """The write functions of a replay that discards their results (quiet, see
        ``Engine.set_quiet``, or history only, ``Engine.set_history_only``), by log name: those
        of ``by_log_name``, but ``limit_order`` (nearly every record of a log) through
        :meth:`_quiet_put_limit`.  Only for a caller that holds the engine's decimal context
        installed in its thread for the whole replay (``MatchEngineService.replay_from``):
        that function calls the core's ``put_limit_quiet`` without its context wrapper."""
        runs = {name: write.run for name, write in self.by_log_name.items()}
        runs["limit_order"] = self._quiet_put_limit
        return runs

    def _quiet_put_limit(self, now: float, params: Params) -> None:
        """Replay a logged put_limit of the original's 8 params, its result unused (quiet or
        history only: the events are the engine's, as for any command).

        Why: replay is mostly this, and what it saves here is a tenth of a replayed order.
        Such a record was accepted live (``_read_limit``'s checks passed) and logged as it was
        accepted, so of those checks only what can turn out otherwise now is done again: the
        market (the config may have dropped it) and the decimals (precisions may have changed:
        a text ``_positive``/``_fee`` did not accept at this precision is read in full, with
        every check).  The user, side and source cannot fail again.  The core's
        ``put_limit_quiet`` runs it (``put_limit`` but while quiet, whose deals then skip what
        a quiet replay drops), its context wrapper skipped (see :meth:`quiet_replays`).  Any
        other layout goes through :meth:`_replay_put_limit`."""
        if len(params) != 8:
            self._replay_put_limit(now, params)
            return
        user, name, side, amount, price, taker_fee, maker_fee, source = params
        engine = self.engine
        market = engine.markets.get(name) if type(name) is str else None
        if market is None:
            raise invalid_argument()
        try:  # texts accepted before, as _read_limit
            amount = _ACCEPTED_POSITIVE[market.stock_prec][amount]
            price = _ACCEPTED_POSITIVE[market.money_prec][price]
            fees = _ACCEPTED_FEE[market.fee_prec]
            taker_fee = fees[taker_fee]
            maker_fee = fees[maker_fee]
        except (KeyError, TypeError):
            user, market, side, amount, price, taker_fee, maker_fee, source = (
                self._read_limit(params))
        if engine.quiet:
            self._unwrapped_put_limit_quiet(engine, now, market, user, side, amount, price,
                                            taker_fee, maker_fee, source)
        else:  # history only (the follower): put_limit itself, without put_limit_quiet's hop
            self._unwrapped_put_limit(engine, now, market, user, side, amount, price, taker_fee,
                                      maker_fee, source)

    def _put_limit(self, now: float, params: Params, option: int) -> Any:
        """The original's 8 params; ``option``: the self-trade prevention mode only."""
        user, market, side, amount, price, taker_fee, maker_fee, source = self._read_limit(params)
        return self.engine.put_limit(now, market, user, side, amount, price, taker_fee, maker_fee,
                                     source, option)

    def _read_limit(self, params: Params) -> tuple[int, Market, Side, Decimal, Decimal, Decimal,
                                                   Decimal, str]:
        """``user_id, market, side, amount, price, taker_fee, maker_fee, source``, the first
        8 params of every put_limit layout: each reader's checks, written out (this runs for
        every order placed and replayed; the readers cost more in calls than in checks).  Any
        failed check is the same code 1."""
        user = params[0]
        if type(user) is not int or not 0 < user <= U32_MAX:  # _user
            raise invalid_argument()
        name = params[1]
        market = self.engine.markets.get(name) if type(name) is str else None  # _market
        if market is None:
            raise invalid_argument()
        side: Side = params[2]
        if type(side) is not int or (side != ASK and side != BID):  # _side
            raise invalid_argument()
        try:  # texts accepted before
            amount = _ACCEPTED_POSITIVE[market.stock_prec][params[3]]
            price = _ACCEPTED_POSITIVE[market.money_prec][params[4]]
            fees = _ACCEPTED_FEE[market.fee_prec]
            taker_fee = fees[params[5]]
            maker_fee = fees[params[6]]
        except (KeyError, TypeError):  # one is new (or not even hashable): read them in full
            amount = _positive(params[3], market.stock_prec)
            price = _positive(params[4], market.money_prec)
            taker_fee = _fee(params[5], market.fee_prec)
            maker_fee = _fee(params[6], market.fee_prec)
        source = params[7]
        if type(source) is not str or len(source.encode()) >= SOURCE_MAX_BYTES:  # _source
            raise invalid_argument()
        return user, market, side, amount, price, taker_fee, maker_fee, source

    def _put_limit_ext(self, now: float, params: Params, live: bool) -> Any:
        """[user_id, market, side, amount, price, taker_fee, maker_fee, source, fee_asset,
        fee_discount, option?, client_id?] (the fork's v1 layout, HEAD without ``account``)."""
        if not 10 <= len(params) <= 12:
            raise invalid_argument()
        user, market, side, amount, price, taker_fee, maker_fee, source = self._read_limit(params)
        given, client_id = _extension(params, 8)
        option = self._stp(given, live)
        result = self.engine.put_limit(now, market, user, side, amount, price, taker_fee,
                                       maker_fee, source, option, client_id)
        if option != given:
            _record_option(params, 10, option)
        return result

    def order_put_market(self, now: float, params: Params, live: bool = True) -> Any:
        if len(params) == 7 and not live:
            return self._put_market(now, params, _recorded_stp(params[6]))
        if len(params) != 6:
            return self._put_market_ext(now, params, live)
        stp = self._stp(0, live)
        result = self._put_market(now, params, stp)
        if stp:
            params.append(stp)
        return result

    def _put_market(self, now: float, params: Params, option: int) -> Any:
        """The original's 6 params; ``option``: the self-trade prevention mode only."""
        user = _user(params[0])
        market = self._market(params[1])
        side = _side(params[2])
        # A market bid's amount is money: truncate it to money_prec (the original used stock_prec).
        amount = _positive(params[3], market.stock_prec if side == ASK else market.money_prec)
        taker_fee = _fee(params[4], market.fee_prec)
        source = _source(params[5])
        return self.engine.put_market(now, market, user, side, amount, taker_fee, source, option)

    def _put_market_ext(self, now: float, params: Params, live: bool) -> Any:
        """[user_id, market, side, amount, taker_fee, source, fee_asset, fee_discount, option?,
        client_id?]"""
        if not 8 <= len(params) <= 10:
            raise invalid_argument()
        user = _user(params[0])
        market = self._market(params[1])
        side = _side(params[2])
        amount = _positive(params[3], market.stock_prec if side == ASK else market.money_prec)
        taker_fee = _fee(params[4], market.fee_prec)
        source = _source(params[5])
        given, client_id = _extension(params, 6)
        option = self._stp(given, live)
        result = self.engine.put_market(now, market, user, side, amount, taker_fee, source,
                                        option, client_id)
        if option != given:
            _record_option(params, 8, option)
        return result

    def order_cancel(self, now: float, params: Params) -> Any:
        _count(params, 3)
        user = _user(params[0])
        market = self._market(params[1])
        order_id = _int(params[2])
        return self.engine.cancel(now, market, user, order_id)

    def _user_market_side(self, params: Params) -> tuple[int, Market, SideOrBoth]:
        """The params of the cancel-all methods: ``[user_id, market, side?]``."""
        if not 2 <= len(params) <= 3:
            raise invalid_argument()
        user = _user(params[0])
        market = self._market(params[1])
        side: SideOrBoth = _side_or_both(params[2]) if len(params) == 3 else 0
        return user, market, side

    def order_cancel_all(self, now: float, params: Params) -> Any:
        """[user_id, market, side?] (side 0 = both)"""
        user, market, side = self._user_market_side(params)
        self.engine.cancel_all(now, market, user, side)
        return SUCCESS

    def order_cancel_batch(self, now: float, params: Params) -> Any:
        """[user_id, market, [order_id, ...]] -> one {"code", "message", "order"} per id"""
        _count(params, 3)
        user = _user(params[0])
        market = self._market(params[1])
        ids = params[2]
        if type(ids) is not list or not 1 <= len(ids) <= BATCH_MAX:
            raise invalid_argument()
        # an id that is not a valid order id reads as 0: "order not found" (as the fork)
        order_ids = [i if type(i) is int and 0 <= i <= U64_MAX else 0 for i in ids]
        results = self.engine.cancel_batch(now, market, user, order_ids)
        return Lazy(lambda: [_cancel_result(r) for r in results])

    # -- stop orders --

    def order_put_stop_limit(self, now: float, params: Params, live: bool = True) -> Any:
        """[user_id, market, side, amount, stop_price, price, taker_fee, maker_fee, source,
        fee_asset, fee_discount, option?, client_id?]"""
        if not 11 <= len(params) <= 13:
            raise invalid_argument()
        user = _user(params[0])
        market = self._market(params[1])
        side = _side(params[2])
        amount = _positive(params[3], market.stock_prec)
        stop_price = _positive(params[4], market.money_prec)
        price = _positive(params[5], market.money_prec)
        taker_fee = _fee(params[6], market.fee_prec)
        maker_fee = _fee(params[7], market.fee_prec)
        source = _source(params[8])
        given, client_id = _extension(params, 9)
        if given & (OPTION_FOK | OPTION_MAKER_ONLY):
            raise invalid_argument()
        option = self._stp(given, live)
        result = self.engine.put_stop(now, market, user, LIMIT, side, amount, stop_price, price,
                                      taker_fee, maker_fee, source, option, client_id)
        if option != given:
            _record_option(params, 11, option)
        return result

    def order_put_stop_market(self, now: float, params: Params, live: bool = True) -> Any:
        """[user_id, market, side, amount, stop_price, taker_fee, source, fee_asset,
        fee_discount, option?, client_id?] (a bid's amount is money)"""
        if not 9 <= len(params) <= 11:
            raise invalid_argument()
        user = _user(params[0])
        market = self._market(params[1])
        side = _side(params[2])
        amount = _positive(params[3], market.stock_prec if side == ASK else market.money_prec)
        stop_price = _positive(params[4], market.money_prec)
        taker_fee = _fee(params[5], market.fee_prec)
        source = _source(params[6])
        given, client_id = _extension(params, 7)
        if given & (OPTION_FOK | OPTION_MAKER_ONLY):
            raise invalid_argument()
        option = self._stp(given, live)
        result = self.engine.put_stop(now, market, user, MARKET, side, amount, stop_price, ZERO,
                                      taker_fee, ZERO, source, option, client_id)
        if option != given:
            _record_option(params, 9, option)
        return result

    def order_cancel_stop(self, now: float, params: Params) -> Any:
        """[user_id, market, order_id] -> the stop as it was"""
        _count(params, 3)
        user = _user(params[0])
        market = self._market(params[1])
        stop_id = _int(params[2])
        return self.engine.cancel_stop(now, market, user, stop_id)

    def order_cancel_stop_all(self, now: float, params: Params) -> Any:
        """[user_id, market, side?] (side 0 = both)"""
        user, market, side = self._user_market_side(params)
        self.engine.cancel_stop_all(now, market, user, side)
        return SUCCESS

    # -- runtime configuration --

    def config_update_asset(self, now: float, params: Params) -> Any:
        """[{"name", "prec_save", "prec_show"}] (an asset as in the config file)"""
        _count(params, 1)
        try:
            asset = read_asset_detail(params[0])
        except ConfigError as e:
            raise admin_error(str(e)) from None
        self.engine.update_asset(asset)
        return SUCCESS

    def config_update_market(self, now: float, params: Params) -> Any:
        """[{"name", "stock": {"name", "prec"}, "money": {"name", "prec"}, "fee_prec",
        "min_amount"}] (a market as in the config file)"""
        _count(params, 1)
        try:
            config = read_market_detail(params[0])
        except ConfigError as e:
            raise admin_error(str(e)) from None
        self.engine.update_market(config)
        return SUCCESS

    def check_new_asset_name(self, params: Params) -> None:
        """A new asset's name: at most 15 bytes (existing ones may keep a longer name)."""
        name = _detail_name(params)
        if name is not None and name not in self.engine.assets:
            _check_name("asset", name)

    def check_new_market_name(self, params: Params) -> None:
        """A new market's name: at most 15 bytes, letters, digits, ``_ . -``."""
        name = _detail_name(params)
        if name is None or name in self.engine.markets:
            return
        _check_name("market", name)
        if not MARKET_NAME.match(name):
            raise admin_error(f"market.name: {name!r} may only hold letters, digits, '_', '.' "
                              "and '-'")

    def config_suspend_market(self, now: float, params: Params) -> Any:
        """[market]: new orders and stops are refused (code 30) until resumed."""
        _count(params, 1)
        self.engine.suspend(self._market(params[0]), True)
        return SUCCESS

    def config_resume_market(self, now: float, params: Params) -> Any:
        """[market]"""
        _count(params, 1)
        self.engine.suspend(self._market(params[0]), False)
        return SUCCESS

    # -- reads ------------------------------------------------------------------------------------

    def balance_query(self, params: Params) -> Any:
        if not params:
            raise invalid_argument()
        user = _user(params[0])
        names = [self._asset(p) for p in params[1:]] if len(params) > 1 else self.engine.assets
        balances = self.engine.balances
        result: dict[str, Any] = {}
        for name in names:
            asset = self.engine.assets[name]
            account = balances.accounts.get((user, name))
            available = account[0] if account is not None else None
            frozen = account[1] if account is not None else None
            result[name] = {
                "available": self._show(available, asset.prec_save, asset.prec_show),
                "freeze": self._show(frozen, asset.prec_save, asset.prec_show),
            }
        return result

    @staticmethod
    def _show(value: Decimal | None, prec_save: int, prec_show: int) -> str:
        if not value:
            return "0"
        if prec_save != prec_show:
            value = truncate(value, prec_show)
        return fmt(value)

    def asset_list(self, params: Params) -> Any:
        return [{"name": a.name, "prec": a.prec_show} for a in self.engine.assets.values()]

    def asset_summary(self, params: Params) -> Any:
        names = [self._asset(p) for p in params] if params else list(self.engine.assets)
        wanted = set(names)
        stats: dict[str, list[Any]] = {name: [ZERO, 0, ZERO, 0, ZERO] for name in wanted}
        balances = self.engine.balances
        for _, asset, kind, value in balances.items():
            if asset in wanted:
                s = stats[asset]
                s[0] += value
                if kind == AVAILABLE:
                    s[1] += 1
                    s[2] += value
                else:
                    s[3] += 1
                    s[4] += value
        return [
            {
                "name": name,
                "total_balance": fmt(stats[name][0]),
                "available_count": stats[name][1],
                "available_balance": fmt(stats[name][2]),
                "freeze_count": stats[name][3],
                "freeze_balance": fmt(stats[name][4]),
            }
            for name in names
        ]

    def order_book(self, params: Params) -> Any:
        _count(params, 4)
        market = self._market(params[0])
        side = _side(params[1])
        offset = _int(params[2])
        limit = _int(params[3], LIST_MAX)
        total = market.ask_count if side == ASK else market.bid_count
        orders: list[Any] = []
        if limit:
            skip = offset
            for _, level in market.side_levels(side):
                if skip >= len(level):
                    skip -= len(level)
                    continue
                for order in level.values():
                    if skip:
                        skip -= 1
                        continue
                    orders.append(order_info(order))
                    if len(orders) >= limit:
                        break
                if len(orders) >= limit:
                    break
        return {"offset": offset, "limit": limit, "total": total, "orders": orders}

    def order_depth(self, params: Params) -> Any:
        _count(params, 3)
        market = self._market(params[0])
        limit = _int(params[1], LIST_MAX)
        interval = _dec(params[2], market.money_prec)
        if interval < 0:
            raise invalid_argument()
        return {
            "asks": market.depth(ASK, limit, interval),
            "bids": market.depth(BID, limit, interval),
        }

    def order_pending(self, params: Params) -> Any:
        _count(params, 4)
        user = _user(params[0])
        market = self._market(params[1])
        offset = _int(params[2])
        limit = _int(params[3], LIST_MAX)
        user_orders = market.users.get(user, {})
        records: list[Any] = []
        if limit and offset < len(user_orders):
            for i, order in enumerate(reversed(user_orders.values())):
                if i < offset:
                    continue
                records.append(order_info(order))
                if len(records) >= limit:
                    break
        return {"limit": limit, "offset": offset, "total": len(user_orders), "records": records}

    def order_pending_detail(self, params: Params) -> Any:
        _count(params, 2)
        market = self._market(params[0])
        order_id = _int(params[1])
        order = market.orders.get(order_id)
        return None if order is None else order_info(order)

    def market_list(self, params: Params) -> Any:
        return [
            {
                "name": m.name,
                "stock": m.stock,
                "money": m.money,
                "fee_prec": m.fee_prec,
                "stock_prec": m.stock_prec,
                "money_prec": m.money_prec,
                "min_amount": fmt(m.min_amount),
            }
            for m in self.engine.markets.values()
        ]

    def order_pending_stop(self, params: Params) -> Any:
        """[user_id, market (null = every market), side (0 = both), offset, limit]: the user's
        stops, newest first."""
        _count(params, 5)
        user = _user(params[0])
        markets = (list(self.engine.markets.values()) if params[1] is None
                   else [self._market(params[1])])
        side = _side_or_both(params[2])
        offset = _int(params[3])
        limit = _int(params[4], LIST_MAX)
        stops = [s for m in markets for s in m.stop_users.get(user, {}).values()
                 if not side or s.side == side]
        if len(markets) > 1:
            stops.sort(key=lambda s: s.id)
        stops.reverse()
        records = [stop_info(s) for s in stops[offset:offset + limit]] if limit else []
        return {"limit": limit, "offset": offset, "total": len(stops), "records": records}

    def order_stop_book(self, params: Params) -> Any:
        """[market, state (1 = low: fires when the price falls to it, 2 = high), offset,
        limit]: one trigger list in firing order."""
        _count(params, 4)
        market = self._market(params[0])
        state = params[1]
        if type(state) is not int or state not in (STOP_STATE_LOW, STOP_STATE_HIGH):
            raise invalid_argument()
        offset = _int(params[2])
        limit = _int(params[3], LIST_MAX)
        lst = market.stops_low if state == STOP_STATE_LOW else market.stops_high
        orders = []
        if limit and offset < len(lst):
            for i, stop in enumerate(lst.values()):
                if i < offset:
                    continue
                orders.append(stop_info(stop))
                if len(orders) >= limit:
                    break
        return {"offset": offset, "limit": limit, "total": len(lst), "orders": orders}

    def market_detail(self, params: Params) -> Any:
        """[market] -> its config, last price and whether trading is suspended"""
        _count(params, 1)
        m = self._market(params[0])
        return {
            "name": m.name,
            "stock": m.stock,
            "money": m.money,
            "fee_prec": m.fee_prec,
            "stock_prec": m.stock_prec,
            "money_prec": m.money_prec,
            "min_amount": fmt(m.min_amount),
            "last": fmt(m.last),
            "suspended": m.suspended,
        }

    def market_summary(self, params: Params) -> Any:
        markets = [self._market(p) for p in params] if params else list(self.engine.markets.values())
        return [
            {
                "name": m.name,
                "ask_count": m.ask_count,
                "ask_amount": fmt(m.ask_amount) if m.ask_count else "0",
                "bid_count": m.bid_count,
                "bid_amount": fmt(m.bid_amount) if m.bid_count else "0",
            }
            for m in markets
        ]


def _cancel_result(result: CancelResult) -> dict[str, Any]:
    code, message, order = result
    return {"code": code, "message": message,
            "order": order_info(order) if order is not None else None}
