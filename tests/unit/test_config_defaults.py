"""Config defaults are stated once, on the dataclass fields; the loader adds none of its own.

Why: the readers used to restate each default next to the dataclass that declared it, and the
two could drift apart unnoticed.  Here a minimal file (only the required keys) must load into
exactly the dataclass built from those keys alone, every loader error must still name the
JSON path, and no reader call in the config modules may pass a literal default.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange_server.accesshttp.limits import HttpLimits
from exchange_server.accesshttp.standalone import AccessHttpConfig, load_accesshttp
from exchange_server.accessws.config import (
    AccessWsConfig,
    KafkaConsumerConfig,
    WsSvrConfig,
    load_accessws,
)
from exchange_server.alertcenter.config import AlertCenterConfig, RedisConfig, load_alertcenter
from exchange_server.common.config import (
    AssetConfig,
    LogConfig,
    MarketConfig,
    MatchEngineConfig,
    MysqlConfig,
    SvrConfig,
    load_matchengine,
)
from exchange_server.common.configread import (
    STANDALONE,
    ConfigError,
    Node,
    default_of,
    load_fields,
    rule,
    setting,
)
from exchange_server.marketprice.standalone import load_marketprice
from exchange_server.marketprice.state import Retention
from exchange_server.process.settings import (
    AlertConfig,
    LogSettings,
    ProcessSettings,
    read_process_settings,
)
from exchange_server.readhistory.standalone import ReadHistoryConfig, load_readhistory
from exchange_server.rpc.config import RpcClientConfig, make_client, read_rpc_client
from exchange_server.rpc.protocol import HEARTBEAT_TIMEOUT_DEFAULT
from tests.support.server import REPO

SOURCE = REPO / "exchange_server"
CONFIG_MODULES = ("common/config.py", "accessws/config.py", "alertcenter/config.py",
                  "rpc/config.py", "process/settings.py", "accesshttp/limits.py",
                  "accesshttp/standalone.py", "marketprice/standalone.py",
                  "readhistory/standalone.py")
GETTERS = {"string", "integer", "real", "boolean", "decimal", "obj", "array", "str_or_list"}

BIND = "tcp@127.0.0.1:7316"
SVR = {"bind": BIND}
MYSQL = {"host": "db", "user": "u", "pass": "p", "name": "trade_history"}
CLIENT = {"name": "matchengine", "addr": BIND, "max_pkg_size": 1000}


# -- the loader ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inner:
    size: int = setting(5, minimum=1, maximum=9)


@dataclass(frozen=True)
class Toy:
    name: str
    inner: Inner | None = None
    ratio: float = setting(0.5, minimum=0.0)
    path: str = setting("p", key="file")
    url: str | None = setting(None, required=STANDALONE)
    tags: list[str] = setting(default_factory=lambda: ["a"])
    loud: str = setting("x", then=lambda node, key, value: value.upper())


def test_absent_keys_take_the_field_defaults() -> None:
    toy = load_fields(Toy, Node({"name": "n"}), embedded=True)
    assert toy == Toy(name="n")
    assert default_of(Toy, "tags") == ["a"] and default_of(Toy, "ratio") == 0.5
    with pytest.raises(LookupError):
        default_of(Toy, "name")


def test_present_keys_are_read_by_type_key_and_rule() -> None:
    data = {"name": "n", "inner": {"size": 9}, "ratio": 2, "file": "f", "url": "u",
            "tags": "t", "loud": "abc"}
    toy = load_fields(Toy, Node(data))
    assert toy == Toy("n", Inner(9), 2.0, "f", "u", ["t"], "ABC")
    assert isinstance(toy.ratio, float)


@pytest.mark.parametrize("data,message", [
    ({}, "name: required field is missing"),
    ({"name": None, "url": "u"}, "name: must be a string"),
    ({"name": "n"}, "url: required field is missing"),
    ({"name": "n", "url": None}, "url: must be a string"),
    ({"name": "n", "url": "u", "inner": {"size": 10}}, "inner.size: must be <= 9"),
    ({"name": "n", "url": "u", "inner": []}, "inner: must be a JSON object"),
    ({"name": "n", "url": "u", "ratio": -1}, "ratio: must be >= 0.0"),
    ({"name": "n", "url": "u", "file": 3}, "file: must be a string"),
    ({"name": "n", "url": "u", "tags": []}, "tags: must be a string or a non-empty array"),
])
def test_loader_errors_name_the_path(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_fields(Toy, Node(data))
    assert str(e.value) == message or str(e.value).startswith(message + " ")


def test_rules_given_and_order() -> None:
    rules = {"ratio": rule(minimum=1.0), "url": rule(required="auth")}
    assert load_fields(Toy, Node({"name": "n"}), optional=("auth",), rules=rules) == Toy("n")
    with pytest.raises(ConfigError, match="^ratio: must be >= 1.0$"):
        load_fields(Toy, Node({"name": "n", "ratio": 0.75}), optional=("auth",), rules=rules)
    # every required key is checked before values are read; ``first`` orders the checks
    with pytest.raises(ConfigError, match="^name: required"):
        load_fields(Toy, Node({"ratio": "x"}))
    with pytest.raises(ConfigError, match="^url: required"):
        load_fields(Toy, Node({}), first=("url",))
    assert load_fields(Toy, Node({"ratio": "x"}), embedded=True, name="g", ratio=1.0) == \
        Toy("g", ratio=1.0)


def test_a_field_without_a_reader_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Odd:
        when: complex = 0j

    with pytest.raises(TypeError, match="no config reader"):
        load_fields(Odd, Node({"when": 1}))


# -- every service: a minimal file loads into the dataclass defaults ---------------------------------


def test_matchengine_minimal() -> None:
    data = {"assets": [{"name": "BTC", "prec_save": 8}, {"name": "USD", "prec_save": 8}],
            "markets": [{"name": "BTCUSD", "stock": {"name": "BTC", "prec": 2},
                         "money": {"name": "USD", "prec": 2}}]}
    config = load_matchengine(data, embedded=True)
    assert config == MatchEngineConfig(
        assets=[AssetConfig("BTC", 8, 8), AssetConfig("USD", 8, 8)],
        markets=[MarketConfig("BTCUSD", "BTC", "USD", 2, 2)], raw=data)
    full = dict(data, brokers="k:9092", cli="tcp@127.0.0.1:7317", svr=SVR,
                db_log=MYSQL, db_history=MYSQL, log={"path": "l", "flag": "info"})
    config = load_matchengine(full)
    assert config.svr == SvrConfig(bind=[BIND])
    assert config.db_log == MysqlConfig(host="db", user="u", password="p", name="trade_history")
    assert config.log == LogConfig(path="l", flag="info")
    assert config.slice_interval == MatchEngineConfig([], []).slice_interval


def test_matchengine_commit_timeout() -> None:
    data = {"assets": [{"name": "BTC", "prec_save": 8}, {"name": "USD", "prec_save": 8}],
            "markets": [{"name": "BTCUSD", "stock": {"name": "BTC", "prec": 2},
                         "money": {"name": "USD", "prec": 2}}]}
    assert load_matchengine(data, embedded=True).commit_timeout == 0.7
    assert load_matchengine(dict(data, commit_timeout=0.25), embedded=True).commit_timeout == 0.25
    with pytest.raises(ConfigError, match="commit_timeout"):
        load_matchengine(dict(data, commit_timeout=0), embedded=True)


def test_readhistory_minimal() -> None:
    config = load_readhistory({"svr": SVR, "db_history": MYSQL})
    assert config == ReadHistoryConfig(
        svr=SvrConfig(bind=[BIND]),
        db_history=MysqlConfig(host="db", user="u", password="p", name="trade_history"))


def test_accesshttp_minimal() -> None:
    data = {"svr": SVR, **{name: dict(CLIENT, name=name)
                           for name in ("matchengine", "marketprice", "readhistory")}}
    clients = {name: RpcClientConfig(name, [BIND], 1000)
               for name in ("matchengine", "marketprice", "readhistory")}
    svr = SvrConfig(bind=[BIND])
    assert load_accesshttp(data) == AccessHttpConfig(
        svr=svr, backends=clients, limits=HttpLimits(max_body_size=svr.max_pkg_size))
    assert read_rpc_client(Node(CLIENT)) == RpcClientConfig("matchengine", [BIND], 1000)


def test_marketprice_minimal() -> None:
    data = {"svr": SVR, "deals": {"brokers": "k:9092"}, "redis": {"addr": "r:6379"},
            "accesshttp": "http://127.0.0.1:8080"}
    config = load_marketprice(data)
    assert config.retention == Retention()
    assert (config.topic, config.redis_name, config.redis_db) == ("deals", None, 0)
    assert config.cache_timeout == default_of(type(config), "cache_timeout")
    assert config.debug is default_of(type(config), "debug")


def test_alertcenter_minimal() -> None:
    data = {"svr": {"bind": "udp@0.0.0.0:4444", "max_pkg_size": 1000},
            "redis": {"addr": "127.0.0.1:6379"}}
    assert load_alertcenter(data) == AlertCenterConfig(
        svr=SvrConfig(bind=["udp@0.0.0.0:4444"], max_pkg_size=1000, heartbeat_check=False),
        redis=RedisConfig(None, [("127.0.0.1", 6379)]))


def test_process_settings_minimal() -> None:
    data = {"log": {"path": "l", "flag": "info"}, "alert": {"addr": "127.0.0.1:4444", "host": "h"}}
    assert read_process_settings(data) == ProcessSettings(
        log=LogSettings(path="l", flag="info"), alert=AlertConfig("h", ("127.0.0.1", 4444)))


def test_accessws_minimal() -> None:
    assert load_accessws({}, embedded=True) == AccessWsConfig()
    ws_client = {"name": "x", "addr": BIND, "max_pkg_size": 1000}
    consumer = {"brokers": "k:9092", "topic": "t"}
    data = {"svr": {"bind": BIND, "max_pkg_size": 1000}, "monitor": SVR,
            "matchengine": ws_client, "marketprice": ws_client, "readhistory": ws_client,
            "orders": consumer, "balances": consumer, "auth_url": "a", "sign_url": "s",
            "depth_limit": [1], "depth_merge": ["0"], "log": {"path": "l", "flag": "info"}}
    client = RpcClientConfig("x", [BIND], 1000)
    assert load_accessws(data) == AccessWsConfig(
        svr=WsSvrConfig(bind=(BIND,), max_pkg_size=1000), monitor=SvrConfig(bind=[BIND]),
        matchengine=client, marketprice=client, readhistory=client,
        orders=KafkaConsumerConfig("k:9092", "t"), balances=KafkaConsumerConfig("k:9092", "t"),
        auth_url="a", sign_url="s", depth_limit=(1,), depth_merge=(Decimal(0),),
        log=LogConfig(path="l", flag="info"), raw=data)


def test_accessws_zero_means_the_default() -> None:
    config = load_accessws({"svr": {"bind": BIND, "max_pkg_size": 10, "buf_limit": 0},
                            "matchengine": dict(CLIENT, heartbeat_timeout=0)}, embedded=True)
    assert config.send_buffer_limit == AccessWsConfig().send_buffer_limit
    assert config.matchengine is not None
    # the one rpc client block (rpc/config.py): 0 is the protocol's default heartbeat
    assert make_client(config.matchengine).heartbeat_timeout == HEARTBEAT_TIMEOUT_DEFAULT


# -- no reader restates a default -------------------------------------------------------------------


def _literal(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp):
        return _literal(node.operand)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in ("Decimal", "tuple", "list")
    return isinstance(node, (ast.Constant, ast.Tuple, ast.List)) and \
        not (isinstance(node, ast.Constant) and node.value is None)


def _literal_defaults(path: Path) -> list[str]:
    """``line: call`` for each getter call in ``path`` that passes a literal default."""
    found = []
    for call in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr in GETTERS):
            continue
        given = call.args[1:2] + [k.value for k in call.keywords if k.arg == "default"]
        if any(_literal(arg) for arg in given):
            found.append(f"{call.lineno}: {ast.unparse(call)}")
    return found


def test_no_reader_call_states_a_default() -> None:
    found = {module: _literal_defaults(SOURCE / module) for module in CONFIG_MODULES}
    assert {module: lines for module, lines in found.items() if lines} == {}


def test_the_literal_check_sees_a_restated_default(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('def f(node):\n    return node.integer("port", 3306, 1), '
                     'node.string("name", None), node.real("x", default=-0.5)\n')
    assert _literal_defaults(probe) == ["2: node.integer('port', 3306, 1)",
                                        "2: node.real('x', default=-0.5)"]
