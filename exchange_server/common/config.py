"""Reading the original's JSON config files, with errors that name the field.

Each service's config is a plain dataclass built by a ``load_*`` function.  Required fields and
defaults follow config.md; anything malformed raises :class:`ConfigError` whose message starts
with the JSON path of the offending field (``markets[2].stock.prec: ...``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from exchange_server.common import decimals

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the field."""


_MISSING = object()


class Node:
    """A JSON object being read, remembering its path for error messages."""

    def __init__(self, data: Any, path: str = "") -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path or '(root)'}: must be a JSON object")
        self.data = data
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise ConfigError(f"{self.where(key)}: required field is missing")
            return default
        return value

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: must be a string")
        return value

    def integer(self, key: str, default: Any = _MISSING, minimum: int | None = None,
            maximum: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: must be an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.where(key)}: must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.where(key)}: must be <= {maximum}")
        return value

    def real(self, key: str, default: Any = _MISSING, minimum: float | None = None) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: must be a number")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.where(key)}: must be >= {minimum}")
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: must be true or false")
        return value

    def obj(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        return Node(value, self.where(key))

    def array(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, list):
            raise ConfigError(f"{self.where(key)}: must be an array")
        return value

    def str_or_list(self, key: str, default: Any = _MISSING) -> Any:
        """Fields like ``svr.bind`` and rpc client ``addr`` take a string or an array of them."""
        value = self._get(key, default)
        if value is default:
            return value
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{self.where(key)}: must be a string or a non-empty array of strings")

    def items(self, key: str, read: Callable[[Node], T], default: Any = _MISSING) -> list[T]:
        values = self.array(key, default)
        if values is default:
            return values
        return [read(Node(v, f"{self.where(key)}[{i}]")) for i, v in enumerate(values)]

    def decimal(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        parsed = decimals.parse(value)
        if parsed is None:
            raise ConfigError(f"{self.where(key)}: must be a decimal number in a string")
        return parsed


def read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from e


# -- common blocks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MysqlConfig:
    host: str
    user: str
    password: str
    name: str
    port: int = 3306
    charset: str = "utf8mb4"


def read_mysql(node: Node) -> MysqlConfig:
    return MysqlConfig(
        host=node.string("host"),
        user=node.string("user"),
        password=node.string("pass"),
        name=node.string("name"),
        port=node.integer("port", 3306, 1, 65535),
        charset=node.string("charset", "utf8mb4"),
    )


@dataclass(frozen=True)
class LogConfig:
    path: str = "log/exchange-server"
    flag: str = "fatal,error,warn,info"
    shift: str = "size"
    max: int = 100_000_000
    num: int = 100
    keep: int = 7


def read_log(node: Node) -> LogConfig:
    return LogConfig(
        path=node.string("path"),
        flag=node.string("flag"),
        shift=node.string("shift", "size"),
        max=node.integer("max", 100_000_000, 1),
        num=node.integer("num", 100, 1),
        keep=node.integer("keep", 7, 0),
    )


@dataclass(frozen=True)
class SvrConfig:
    bind: list[str]
    max_pkg_size: int = 10240
    heartbeat_check: bool = True


def read_svr(node: Node) -> SvrConfig:
    return SvrConfig(
        bind=node.str_or_list("bind"),
        max_pkg_size=node.integer("max_pkg_size", 10240, 1),
        heartbeat_check=node.boolean("heartbeat_check", True),
    )


# -- matchengine --------------------------------------------------------------------------------

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
    raw: dict[str, Any] = field(default_factory=dict)


#: the values of the matchengine's ``self_trade_prevention`` key
SELF_TRADE_PREVENTION = ("none", "cancel_taker", "cancel_maker", "cancel_both")


def read_self_trade_prevention(root: Node) -> str:
    value = root.string("self_trade_prevention", "none")
    if value not in SELF_TRADE_PREVENTION:
        raise ConfigError(f"{root.where('self_trade_prevention')}: must be one of "
                          f"{', '.join(SELF_TRADE_PREVENTION)}")
    return str(value)


def read_asset(node: Node) -> AssetConfig:
    name = node.string("name")
    if not 0 < len(name) <= 15:
        raise ConfigError(f"{node.where('name')}: must be 1 to 15 characters")
    prec_save = node.integer("prec_save", minimum=0, maximum=MAX_PREC)
    prec_show = node.integer("prec_show", prec_save, 0, MAX_PREC)
    if prec_show > prec_save:
        raise ConfigError(f"{node.where('prec_show')}: must be <= prec_save")
    return AssetConfig(name, prec_save, prec_show)


def read_market(node: Node) -> MarketConfig:
    name = node.string("name")
    if not 0 < len(name) <= 30:
        raise ConfigError(f"{node.where('name')}: must be 1 to 30 characters")
    stock = node.obj("stock")
    money = node.obj("money")
    min_amount = node.decimal("min_amount", Decimal("0.01"))
    if min_amount < 0:
        raise ConfigError(f"{node.where('min_amount')}: must not be negative")
    return MarketConfig(
        name=name,
        stock=stock.string("name"),
        money=money.string("name"),
        stock_prec=stock.integer("prec", minimum=0, maximum=MAX_PREC),
        money_prec=money.integer("prec", minimum=0, maximum=MAX_PREC),
        fee_prec=node.integer("fee_prec", 4, 0, MAX_PREC),
        min_amount=min_amount,
    )


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
    required: Any = None if embedded else _MISSING
    db_log = root.obj("db_log", required)
    db_history = root.obj("db_history", required)
    svr = root.obj("svr", required)
    log = root.obj("log", required)
    return MatchEngineConfig(
        assets=assets,
        markets=markets,
        debug=root.boolean("debug", False),
        slice_interval=root.integer("slice_interval", 86400, 1),
        slice_keeptime=root.integer("slice_keeptime", 259200, 1),
        cache_timeout=root.real("cache_timeout", 0.45, 0.0),
        history_thread=root.integer("history_thread", 10, 1),
        brokers=root.string("brokers", required),
        db_log=read_mysql(db_log) if db_log else None,
        db_history=read_mysql(db_history) if db_history else None,
        svr=read_svr(svr) if svr else None,
        cli=root.string("cli", required),
        log=read_log(log) if log else None,
        operlog_max_pending=root.integer("operlog_max_pending", 100_000, 1),
        history_max_pending=root.integer("history_max_pending", 100_000, 1),
        bus_mark_file=root.string("bus_mark_file", "bus.mark"),
        kafka_max_pending=root.integer("kafka_max_pending", 100_000, 1),
        kafka_topic_prefix=root.string("kafka_topic_prefix", ""),
        # at most 200: the log codec refuses records deeper than 256 (common/exactjson.py)
        max_json_depth=root.integer("max_json_depth", 32, 1, 200),
        self_trade_prevention=read_self_trade_prevention(root),
        raw=data,
    )


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
