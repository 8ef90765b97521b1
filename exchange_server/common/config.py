"""Reading the original's JSON config files, with errors that name the field.

Each service's config is a plain dataclass built by a ``load_*`` function.  Required fields and
defaults follow config.md; anything malformed raises :class:`ConfigError` whose message starts
with the JSON path of the offending field (``markets[2].stock.prec: ...``).

A default is stated once, on its dataclass field: the loader (configread.py) reads the keys
that are present and leaves the rest to the dataclass.  The common blocks (``MysqlConfig``,
``LogConfig``, ``SvrConfig``) carry their rules in :func:`~configread.setting`; the engine's own
types (``AssetConfig``, ``MarketConfig``, ``MatchEngineConfig``) stay plain dataclasses, their
rules in the tables below, so they do not depend on the reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from exchange_server.common.configread import (
    STANDALONE,
    ConfigError,
    Node,
    Reader,
    Then,
    load_fields,
    rule,
    setting,
)

# ConfigError, Node and read_json live in configread.py; importers find them here as before.
from exchange_server.common.configread import read_json as read_json

# -- common blocks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderConfig:
    """Extension: the ``leader`` block of a matchengine that runs as one of several
    active/standby engines on one log database (matchprocess/leader.py).  ``lease``: seconds a
    leader's lease lasts after its last renewal (a stopped active is replaced after that);
    ``renew``: seconds between renewals; ``instance``: this engine's name in the lease and the
    alerts (default ``host:rpc-port``)."""

    lease: float = setting(10.0, minimum=1.0)
    renew: float = setting(2.0, minimum=0.1)
    instance: str = ""


@dataclass(frozen=True)
class MysqlConfig:
    host: str
    user: str
    password: str = setting(key="pass")
    name: str = setting()
    port: int = setting(3306, minimum=1, maximum=65535)
    charset: str = "utf8mb4"


def read_mysql(node: Node) -> MysqlConfig:
    return load_fields(MysqlConfig, node)


@dataclass(frozen=True)
class LogConfig:
    path: str = setting("log/exchange-server", required=True)
    flag: str = setting("fatal,error,warn,info", required=True)
    shift: str = "size"
    max: int = setting(100_000_000, minimum=1)
    num: int = setting(100, minimum=1)
    keep: int = setting(7, minimum=0)


def read_log(node: Node) -> LogConfig:
    return load_fields(LogConfig, node)


@dataclass(frozen=True)
class SvrConfig:
    bind: list[str]
    max_pkg_size: int = setting(10240, minimum=1)
    heartbeat_check: bool = True


def read_svr(node: Node) -> SvrConfig:
    return load_fields(SvrConfig, node)


# -- matchengine --------------------------------------------------------------------------------
# AssetConfig, MarketConfig and MatchEngineConfig are the engine's own types: plain dataclasses
# (their defaults are the only statement of them); how their keys are read is in the tables below.

MAX_PREC = 24


@dataclass(frozen=True)
class AssetConfig:
    name: str
    prec_save: int
    prec_show: int


@dataclass(frozen=True)
class MarketConfig:
    name: str
    stock: str
    money: str
    stock_prec: int
    money_prec: int
    fee_prec: int = 4
    min_amount: Decimal = Decimal("0.01")


@dataclass
class MatchEngineConfig:
    assets: list[AssetConfig]
    markets: list[MarketConfig]
    debug: bool = False
    slice_interval: int = 86400
    slice_keeptime: int = 259200
    #: Extension: also take a slice once this many operations were logged since the last one
    #: (0: only every ``slice_interval``), so a restart replays a bounded tail at any uptime.
    #: 10,000 (20,000 until 2026-12-03): a kill while a slice is written replays the slice
    #: before it plus this many operations and more (docs/operations.md section 14).
    slice_oper_interval: int = 10_000
    cache_timeout: float = 0.45
    history_thread: int = 10
    brokers: str | None = None
    db_log: MysqlConfig | None = None
    db_history: MysqlConfig | None = None
    svr: SvrConfig | None = None
    cli: str | None = None
    log: LogConfig | None = None
    #: Extension: writes are refused with code 3 when this many operations wait for the log.
    operlog_max_pending: int = 100_000
    #: Extension: writes are refused with code 3 while this many history rows wait to be stored.
    history_max_pending: int = 100_000
    #: Extension: where the bus publisher keeps its durable mark (last published operation).
    bus_mark_file: str = "bus.mark"
    #: Extension: writes are refused with code 3 while this many messages wait for Kafka.
    kafka_max_pending: int = 100_000
    #: Extension: prefix of the Kafka topic names (several systems on one cluster).
    kafka_topic_prefix: str = ""
    #: Extension: params nested deeper than this are refused with code 1 (common/jsondepth.py).
    max_json_depth: int = 32
    #: Extension: self-trade prevention for orders that choose no mode (option bits 0x100..0x400):
    #: "none" (the original's behaviour), "cancel_taker", "cancel_maker" or "cancel_both".
    self_trade_prevention: str = "none"
    #: Extension: a log commit that has not finished after this many seconds counts as refused
    #: (code 3; its operations never take effect).  Keep it below the gateways' request timeout
    #: (accesshttp ``timeout``, 1 s in ``exchange-server run``), so no client sees a 504 for an
    #: operation whose fate is still open.
    commit_timeout: float = 0.7
    #: Extension: active/standby engines on one log database (None: one engine, as the original).
    leader: LeaderConfig | None = None
    raw: dict[str, Any] = field(default_factory=dict)


#: the values of the matchengine's ``self_trade_prevention`` key
SELF_TRADE_PREVENTION = ("none", "cancel_taker", "cancel_maker", "cancel_both")


def _one_of_stp(node: Node, key: str, value: str) -> str:
    if value not in SELF_TRADE_PREVENTION:
        raise ConfigError(f"{node.where(key)}: must be one of {', '.join(SELF_TRADE_PREVENTION)}")
    return str(value)


def _name_length(most: int) -> Then:
    def check(node: Node, key: str, value: str) -> str:
        if not 0 < len(value) <= most:
            raise ConfigError(f"{node.where(key)}: must be 1 to {most} characters")
        return value
    return check


def _not_negative(node: Node, key: str, value: Decimal) -> Decimal:
    if value < 0:
        raise ConfigError(f"{node.where(key)}: must not be negative")
    return value


def _side_name(side: str) -> Reader:
    """A market's ``stock.name`` / ``money.name``, read into a flat field."""
    return lambda node, key, default: node.obj(side).string("name")


def _side_prec(side: str) -> Reader:
    """A market's ``stock.prec`` / ``money.prec``, read into a flat field."""
    return lambda node, key, default: node.obj(side).integer("prec", minimum=0, maximum=MAX_PREC)


_ASSET_RULES = {
    "name": rule(then=_name_length(15)),
    "prec_save": rule(minimum=0, maximum=MAX_PREC),
}

_MARKET_RULES = {
    "name": rule(then=_name_length(30)),
    "stock": rule(read=_side_name("stock")),
    "money": rule(read=_side_name("money")),
    "stock_prec": rule(key="stock", read=_side_prec("stock")),
    "money_prec": rule(key="money", read=_side_prec("money")),
    "fee_prec": rule(minimum=0, maximum=MAX_PREC),
    "min_amount": rule(then=_not_negative),
}


#: ``assets`` and ``markets`` are read (and checked together) by load_matchengine itself
_MATCHENGINE_RULES = {
    "slice_interval": rule(minimum=1),
    "slice_keeptime": rule(minimum=1),
    "slice_oper_interval": rule(minimum=0),
    "cache_timeout": rule(minimum=0.0),
    "history_thread": rule(minimum=1),
    "brokers": rule(required=STANDALONE),
    "db_log": rule(required=STANDALONE),
    "db_history": rule(required=STANDALONE),
    "svr": rule(required=STANDALONE),
    "cli": rule(required=STANDALONE),
    "log": rule(required=STANDALONE),
    "operlog_max_pending": rule(minimum=1),
    "history_max_pending": rule(minimum=1),
    "kafka_max_pending": rule(minimum=1),
    # at most 200: the log codec refuses records deeper than 256 (common/exactjson.py)
    "max_json_depth": rule(minimum=1, maximum=200),
    "self_trade_prevention": rule(then=_one_of_stp),
    "commit_timeout": rule(minimum=0.01),
    "raw": rule(skip=True),
}


def read_asset(node: Node) -> AssetConfig:
    """One asset; ``prec_show`` defaults to ``prec_save``."""
    head = load_fields(_AssetHead, node, rules=_ASSET_RULES)
    prec_show = node.integer("prec_show", head.prec_save, 0, MAX_PREC)
    if prec_show > head.prec_save:
        raise ConfigError(f"{node.where('prec_show')}: must be <= prec_save")
    return AssetConfig(head.name, head.prec_save, prec_show)


@dataclass(frozen=True)
class _AssetHead:
    """An asset's fields without a fixed default (``prec_show`` follows ``prec_save``)."""

    name: str
    prec_save: int


def read_market(node: Node) -> MarketConfig:
    return load_fields(MarketConfig, node, rules=_MARKET_RULES)


def check_markets(assets: list[AssetConfig], markets: list[MarketConfig]) -> None:
    """The original's start-up checks: known assets, and precisions that keep trades exact."""
    by_name = {a.name: a for a in assets}
    if len(by_name) != len(assets):
        raise ConfigError("assets: duplicate asset name")
    seen: set[str] = set()
    for i, m in enumerate(markets):
        where = f"markets[{i}]"
        if m.name in seen:
            raise ConfigError(f"{where}.name: duplicate market {m.name!r}")
        seen.add(m.name)
        check_market(by_name, m, where)


def check_market(assets: dict[str, AssetConfig], m: MarketConfig, where: str = "market") -> None:
    """One market's checks against the assets (start-up, and markets added at run time)."""
    if m.stock not in assets:
        raise ConfigError(f"{where}.stock.name: unknown asset {m.stock!r}")
    if m.money not in assets:
        raise ConfigError(f"{where}.money.name: unknown asset {m.money!r}")
    if m.stock == m.money:
        raise ConfigError(f"{where}: stock and money must differ")
    money_save = assets[m.money].prec_save
    stock_save = assets[m.stock].prec_save
    if m.stock_prec + m.money_prec > money_save:
        raise ConfigError(f"{where}: stock.prec + money.prec must be <= prec_save of {m.money}")
    if m.stock_prec + m.fee_prec > stock_save:
        raise ConfigError(f"{where}: stock.prec + fee_prec must be <= prec_save of {m.stock}")
    if m.money_prec + m.fee_prec > money_save:
        raise ConfigError(f"{where}: money.prec + fee_prec must be <= prec_save of {m.money}")


def load_matchengine(data: Any, *, embedded: bool = False) -> MatchEngineConfig:
    """Build the matchengine config; in embedded mode the server/database blocks are optional."""
    root = Node(data)
    assets = root.items("assets", read_asset)
    markets = root.items("markets", read_market)
    if not assets:
        raise ConfigError("assets: at least one asset is required")
    check_markets(assets, markets)
    return load_fields(MatchEngineConfig, root, embedded=embedded, rules=_MATCHENGINE_RULES,
                       first=("db_log", "db_history", "svr", "log"), assets=assets,
                       markets=markets, raw=data)


def default_matchengine_data() -> dict[str, Any]:
    """The original's sample assets and markets (config.md), used when no config is given."""
    assets: list[dict[str, Any]] = [{"name": "BCH", "prec_save": 20, "prec_show": 8}]
    for name in ("BTC", "LTC", "ETH", "ETC", "ZEC", "XMR", "DSH"):
        assets.append({"name": name, "prec_save": 12, "prec_show": 8})
    markets = [
        {
            "name": f"{stock}BCH",
            "stock": {"name": stock, "prec": 8},
            "money": {"name": "BCH", "prec": 8},
            "min_amount": "0.001",
        }
        for stock in ("BTC", "LTC", "ETH", "ETC", "ZEC", "XMR", "DSH")
    ]
    return {"assets": assets, "markets": markets, "slice_interval": 3600, "slice_keeptime": 259200}
