"""accessws pieces without a network: config loading, the depth diff, frames, auth replies."""

from __future__ import annotations

import copy
import random
from decimal import Decimal
from typing import Any

import pytest

from exchange_server.accessws.auth import user_from_reply
from exchange_server.accessws.config import (
    DEFAULT_DEPTH_LIMIT,
    AccessWsConfig,
    Bind,
    load_accessws,
    parse_bind,
)
from exchange_server.accessws.depth import apply_diff, depth_diff, side_diff
from exchange_server.accessws.protocol import BadRequest, parse_request, text_frame
from exchange_server.common.config import ConfigError
from exchange_server.common.errors import RpcError, ServerAuth
from exchange_server.rpc.config import make_client

# The original's sample accessws config (config.md), with HEAD's array depth_merge.
SAMPLE: dict[str, Any] = {
    "debug": True,
    "process": {"file_limit": 1000000, "core_limit": 1000000000},
    "log": {"path": "/var/log/trade/accessws", "flag": "fatal,error,warn,info,debug,trace",
            "num": 10},
    "alert": {"host": "accessws", "addr": "127.0.0.1:4444"},
    "svr": {"bind": ["stream@/tmp/accessws.sock"], "max_pkg_size": 102400, "protocol": "chat"},
    "monitor": {"bind": "tcp@0.0.0.0:8091", "max_pkg_size": 1024},
    "worker_num": 1,
    "timeout": 1.0,
    "matchengine": {"name": "matchengine", "addr": ["tcp@127.0.0.1:7316"],
                    "max_pkg_size": 2000000},
    "marketprice": {"name": "marketprice", "addr": ["tcp@127.0.0.1:7416"],
                    "max_pkg_size": 2000000},
    "readhistory": {"name": "readhistory", "addr": ["tcp@127.0.0.1:7424"],
                    "max_pkg_size": 2000000},
    "deals": {"brokers": "127.0.0.1:9092", "topic": "deals", "partition": 0},
    "orders": {"brokers": "127.0.0.1:9092", "topic": "orders", "partition": 0},
    "balances": {"brokers": "127.0.0.1:9092", "topic": "balances", "partition": 0},
    "backend_timeout": 1.0,
    "cache_timeout": 10.0,
    "auth_url": "http://192.168.1.6:8000/internal/exchange/user/auth",
    "sign_url": "http://192.168.1.6:8000/internal/exchange/user/sign",
    "depth_limit": [1, 5, 10, 20, 30, 50, 100],
    "depth_merge": ["0", "0.00000001", "0.0000001", "0.000001", "0.00001", "0.0001", "0.001",
                    "0.01", "0.1"],
}


def test_sample_config_loads() -> None:
    config = load_accessws(SAMPLE)
    assert config.svr.bind == ("stream@/tmp/accessws.sock",)
    assert config.svr.max_pkg_size == 102400 and config.svr.keep_alive == 3600
    assert config.svr.protocol == "chat" and config.svr.origin == ""
    assert config.monitor is not None and config.monitor.bind == ["tcp@0.0.0.0:8091"]
    assert config.matchengine is not None and config.matchengine.addr == ["tcp@127.0.0.1:7316"]
    # unset in the sample: the client uses the protocol's 3 s (one rpc client block, rpc/config.py)
    assert make_client(config.matchengine).heartbeat_timeout == 3.0
    assert config.orders is not None and config.orders.topic == "orders"
    assert config.balances is not None and config.balances.brokers == "127.0.0.1:9092"
    assert config.cache_timeout == 10.0 and config.backend_timeout == 1.0
    assert config.depth_interval == 0.5 and config.deals_interval == 0.5
    assert config.depth_limit == (1, 5, 10, 20, 30, 50, 100)
    assert config.depth_merge[-1] == Decimal("0.1")
    assert config.auth_url is not None and config.auth_url.endswith("/auth")
    assert config.process.file_limit == 1000000
    assert config.debug is True and config.log is not None


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("svr"), "svr: required field is missing"),
    (lambda d: d["svr"].pop("max_pkg_size"), "svr.max_pkg_size: required field is missing"),
    (lambda d: d["svr"].update(bind=5), "svr.bind: must be a string or a non-empty array"),
    (lambda d: d.pop("monitor"), "monitor: required field is missing"),
    (lambda d: d["matchengine"].pop("addr"), "matchengine.addr: required field is missing"),
    (lambda d: d.pop("readhistory"), "readhistory: required field is missing"),
    (lambda d: d["orders"].pop("brokers"), "orders.brokers: required field is missing"),
    (lambda d: d.pop("balances"), "balances: required field is missing"),
    (lambda d: d.pop("auth_url"), "auth_url: required field is missing"),
    (lambda d: d.update(sign_url=3), "sign_url: must be a string"),
    (lambda d: d.update(depth_limit=[1, 0]), "depth_limit[1]: must be a positive integer"),
    (lambda d: d.update(depth_limit="5"), "depth_limit: must be an array"),
    (lambda d: d.pop("depth_merge"), "depth_merge: required field is missing"),
    (lambda d: d.update(depth_merge=["0", "x"]), "depth_merge[1]: must be a non-negative"),
    (lambda d: d.update(depth_interval=0), "depth_interval: must be > 0"),
    (lambda d: d.update(backend_timeout="1"), "backend_timeout: must be a number"),
    (lambda d: d.update(worker_num=0), "worker_num: must be >= 1"),
    (lambda d: d.pop("log"), "log: required field is missing"),
])
def test_config_errors_name_the_field(mutate: Any, message: str) -> None:
    data = copy.deepcopy(SAMPLE)
    mutate(data)
    with pytest.raises(ConfigError) as e:
        load_accessws(data)
    assert str(e.value).startswith(message), str(e.value)


def test_embedded_config_defaults() -> None:
    config = load_accessws({}, embedded=True)
    assert config.auth_url is None and config.sign_url is None
    assert config.matchengine is None and config.orders is None and config.monitor is None
    assert config.depth_limit == DEFAULT_DEPTH_LIMIT
    assert config.svr.bind == ("tcp@127.0.0.1:8090",)
    assert config.send_buffer_limit == 1 << 20
    default = AccessWsConfig()
    assert default.depth_merge == config.depth_merge
    assert config.allowed_merge("0.10") and config.allowed_merge("0")
    assert not config.allowed_merge("0.5") and not config.allowed_merge("abc")
    # svr.buf_limit is the send buffer bound, as in the original
    config = load_accessws({"svr": {"bind": "tcp@0.0.0.0:1", "max_pkg_size": 10,
                                    "buf_limit": 4096, "write_mem": 8192}}, embedded=True)
    assert config.send_buffer_limit == 4096 and config.svr.write_mem == 8192


def test_parse_bind() -> None:
    assert parse_bind("tcp@0.0.0.0:8090") == Bind("tcp", host="0.0.0.0", port=8090)
    assert parse_bind("tcp@[::1]:80") == Bind("tcp", host="::1", port=80)
    assert parse_bind("stream@/tmp/accessws.sock") == Bind("unix", path="/tmp/accessws.sock")
    for bad in ("udp@1.2.3.4:5", "tcp@1.2.3.4", "8090", "tcp@h:99999", "stream@"):
        with pytest.raises(ConfigError):
            parse_bind(bad)


# -- depth diff -----------------------------------------------------------------------------------


def test_side_diff_rules() -> None:
    old = [["1", "5"], ["2", "5"], ["3", "5"]]
    # same price, amount changed; new price in between; removed price
    assert side_diff(old, [["1", "5"], ["2", "4"], ["2.5", "1"]], 5, True) == \
        [["2", "4"], ["2.5", "1"], ["3", "0"]]
    # numerically equal texts are not a change
    assert side_diff([["1.0", "5"]], [["1", "5.00"]], 5, True) == []
    # bids are walked descending
    assert side_diff([["3", "1"], ["1", "1"]], [["3", "1"], ["2", "1"], ["1", "1"]], 5,
                     False) == [["2", "1"]]
    # the new list is full: old levels beyond it left the window only, not sent
    assert side_diff([["1", "1"], ["2", "1"]], [["0.5", "1"]], 1, True) == [["0.5", "1"]]
    # ...but with room left, every remaining old level is removed
    assert side_diff([["1", "1"], ["2", "1"]], [["0.5", "1"]], 5, True) == \
        [["0.5", "1"], ["1", "0"], ["2", "0"]]
    assert side_diff([], [["1", "1"]], 5, True) == [["1", "1"]]


def test_depth_diff_omits_unchanged_sides() -> None:
    book = {"asks": [["10", "1"]], "bids": [["9", "1"]]}
    assert depth_diff(book, copy.deepcopy(book), 10) is None
    assert depth_diff(book, {"asks": [["10", "2"]], "bids": [["9", "1"]]}, 10) == \
        {"asks": [["10", "2"]]}
    assert depth_diff(book, {"asks": [], "bids": []}, 10) == \
        {"asks": [["10", "0"]], "bids": [["9", "0"]]}
    with pytest.raises(ValueError):
        depth_diff(book, {"asks": [["x", "1"]], "bids": []}, 10)


def test_depth_diff_round_trip_random() -> None:
    """A client applying the diffs always ends with the new snapshot."""
    rng = random.Random(5)

    def snapshot(limit: int) -> dict[str, Any]:
        asks = sorted({Decimal(rng.randint(100, 130)) for _ in range(rng.randint(0, 12))})
        bids = sorted({Decimal(rng.randint(70, 99)) for _ in range(rng.randint(0, 12))},
                      reverse=True)
        return {"asks": [[str(p), str(rng.randint(1, 3))] for p in asks][:limit],
                "bids": [[str(p), str(rng.randint(1, 3))] for p in bids][:limit]}

    for limit in (1, 5, 10, 20):
        book = snapshot(limit)
        client = copy.deepcopy(book)
        for _ in range(200):
            new = snapshot(limit)
            diff = depth_diff(book, new, limit)
            if diff is not None:
                apply_diff(client, diff, limit)
            assert client == new
            book = new


# -- frames and requests --------------------------------------------------------------------------


def test_text_frame_lengths() -> None:
    assert text_frame(b"x" * 125)[:2] == bytes((0x81, 125))
    assert text_frame(b"x" * 126)[:4] == bytes((0x81, 126, 0, 126))
    assert text_frame(b"x" * 65536)[:10] == bytes((0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0))


def test_parse_request() -> None:
    assert parse_request(b'{"id": 1, "params": [1], "method": "a"}') == ("a", [1], 1)
    for bad in (b"[", b"[]", b'{"method": "a", "params": [], "id": 1e3}',
                b'{"method": "a", "params": [], "id": 18446744073709551615}'):
        with pytest.raises(BadRequest):
            parse_request(bad)


@pytest.mark.parametrize("body,code,message", [
    (b'{"code": 0, "data": {"user_id": 7}}', 0, ""),
    (b'{"code": 5, "message": "no"}', 11, "no"),
    (b'{"code": 5}', 2, "internal error"),
    (b'{"code": 5, "message": 3}', 2, "internal error"),
    (b'{"message": "x", "data": {"user_id": 7}}', 2, "internal error"),
    (b'{"code": 0}', 2, "internal error"),
    (b'{"code": 0, "data": {"user_id": 0}}', 2, "internal error"),
    (b'{"code": 0, "data": {"user_id": "7"}}', 2, "internal error"),
    (b'{"code": 0, "data": []}', 2, "internal error"),
    (b"[]", 2, "internal error"),
    (b"", 2, "internal error"),
])
def test_auth_reply_contract(body: bytes, code: int, message: str) -> None:
    if code == 0:
        assert user_from_reply(body, ServerAuth.REJECTED) == 7
        return
    with pytest.raises(RpcError) as e:
        user_from_reply(body, ServerAuth.REJECTED)
    assert (e.value.code, e.value.message) == (code, message)
