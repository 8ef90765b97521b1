"""Validate before apply; never acknowledge what cannot be replayed.

Against real ``exchange-server run`` processes: params nested too deeply are refused with code 1
before anything is applied (the server keeps answering, stops on SIGTERM and restarts); a
balance.update detail with big integers and unsorted keys comes back exactly through a crash
(SIGKILL + replay) and into history, on SQLite and MariaDB; a log record that cannot be decoded
or applied stops start-up with one fatal line naming the operation, and stops the history
follower for good with a fatal alert instead of a restart loop.  Units: the exact JSON module,
the history writer's fatal path, the decimal digit limit, fresh "market suspended" errors.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exchange_server.common import exactjson
from exchange_server.common.config import default_matchengine_data, load_matchengine
from exchange_server.common.decimals import parse
from exchange_server.common.errors import RpcError
from exchange_server.history.writer import HistoryWriter
from exchange_server.matchengine.configured import Engine
from exchange_server.matchengine.methods import MatchEngineMethods
from tests.support.server import ServerProcess

U64_MAX = 2**64 - 1
#: A detail whose key order is not sorted and whose integers do not fit 64 bits.
DETAIL = {"zeta": 2**70, "b": {"y": -2**64, "x": 1}, "alpha": "é", "n": -123456789012345678901234}
#: One that orjson writes itself (the codec's fast path): unsorted keys only.
SMALL_DETAIL = {"zz": 1, "a": {"d": 2, "c": [3, {"f": 4, "e": 5}]}}
WAIT = 60.0


def deep(levels: int, leaf: str = "1") -> str:
    """JSON text of ``[[...[leaf]...]]`` nested ``levels`` deep (no recursion to build it)."""
    return "[" * levels + leaf + "]" * levels


def deep_object(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def raw_call(server: ServerProcess, method: str, params_json: str) -> dict[str, Any]:
    """Call with params given as JSON text (values Python's json cannot even build)."""
    body = f'{{"method": "{method}", "params": {params_json}, "id": 7}}'
    status, reply = server.raw(body)
    assert status == 200, reply[:200]
    decoded: dict[str, Any] = json.loads(reply)
    return decoded


def error_code(reply: dict[str, Any]) -> int | None:
    return reply["error"]["code"] if reply["error"] else None


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def write_config(tmp_path: Path, name: str = "matchengine.json", **extra: Any) -> Path:
    config = default_matchengine_data()
    # no periodic slice during a test: every restart below replays the log
    config.update(slice_interval=10**9, **extra)
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


# -- deep params: refused before anything is applied ---------------------------------------------


def test_deep_params_are_refused_and_the_server_keeps_going(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", config=write_config(tmp_path)).start()
    try:
        server.call("balance.update", 1, "BTC", "deposit", 1, "10", {})
        server.call("balance.update", 1, "BCH", "deposit", 2, "1000", {})
        refused = [
            ("balance.update", f'[1, "BTC", "deposit", 3, "1", {deep_object(1000)}]'),
            ("balance.update", f'[1, "BTC", "deposit", {U64_MAX}, "1", {{"d": {deep(980)}}}]'),
            ("balance.update", f'[1, "BTC", "deposit", 4, "1", {{"d": {deep(32)}}}]'),  # 33
            # slots read leniently: the 12th param of put_limit, option / fee_asset of put_market
            ("order.put_limit", '[1, "BTCBCH", 1, "1", "10", "0.001", "0.001", "s", null, null,'
                                f' 0, {deep(1000)}]'),
            ("order.put_market", '[1, "BTCBCH", 1, "1", "0.001", "s", null, null,'
                                 f' {deep(1000)}]'),
            ("order.put_market", f'[1, "BTCBCH", 1, "1", "0.001", "s", {deep(1000)}, null]'),
            ("balance.query", f"[1, {deep(500)}]"),  # reads too
            ("order.cancel_batch", f'[1, "BTCBCH", [{deep(100)}]]'),
            ("balance.history", f'[1, "BTC", "", 0, 0, 0, {deep(1000)}]'),  # readhistory
            ("market.last", f"[{deep(1000)}]"),  # marketprice
        ]
        for method, params in refused:
            reply = raw_call(server, method, params)
            assert error_code(reply) == 1, (method, reply)
            assert "nested deeper than 32" in reply["error"]["message"]
        # nothing was applied, and the server answers normally
        assert server.call("balance.query", 1, "BTC") == {"BTC": {"available": "10", "freeze": "0"}}
        assert server.call("order.pending", 1, "BTCBCH", 0, 10)["total"] == 0
        # exactly 32 levels is accepted and logged
        assert error_code(raw_call(
            server, "balance.update", f'[1, "BTC", "deposit", 5, "1", {{"d": {deep(31)}}}]')) is None
        assert server.stop(signal.SIGTERM, timeout=WAIT) == 0
        server.start()  # the final slice and the log restore
        assert server.call("balance.query", 1, "BTC") == {"BTC": {"available": "11", "freeze": "0"}}
        server.stop(signal.SIGKILL)
        server.start()  # no final slice this time: the log is replayed
        assert server.call("balance.query", 1, "BTC") == {"BTC": {"available": "11", "freeze": "0"}}
        assert server.stop(signal.SIGTERM, timeout=WAIT) == 0
    finally:
        server.stop(signal.SIGKILL)
    assert "Traceback" not in server.log_path.read_text()


def test_max_json_depth_is_configurable(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", config=write_config(tmp_path, max_json_depth=3))
    server.start()
    try:
        ok = raw_call(server, "balance.update", f'[1, "BTC", "deposit", 1, "1", {{"d": {deep(2)}}}]')
        assert error_code(ok) is None
        refused = raw_call(server, "balance.update",
                           f'[1, "BTC", "deposit", 2, "1", {{"d": {deep(3)}}}]')
        assert error_code(refused) == 1
        assert "nested deeper than 3" in refused["error"]["message"]
    finally:
        server.stop(signal.SIGKILL)


# -- exact details through a crash and into history ----------------------------------------------


def _mysql_db(cfg: Any) -> dict[str, Any]:
    return {"host": cfg.host, "port": cfg.port, "user": cfg.user, "pass": cfg.password,
            "name": cfg.name}


@pytest.mark.parametrize("storage", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def test_detail_round_trips_exactly_through_crash_and_history(
        tmp_path: Path, storage: str, request: pytest.FixtureRequest) -> None:
    extra: dict[str, Any] = {}
    args: list[str] = []
    if storage == "mysql":
        make = request.getfixturevalue("mysql_config")
        extra = {"db_log": _mysql_db(make("test_codec_log")),
                 "db_history": _mysql_db(make("test_codec_history"))}
        args = ["--storage", "mysql"]
    server = ServerProcess(tmp_path / "data", config=write_config(tmp_path, **extra), extra=args)
    server.start()
    detail_text = ('{"zeta": 1180591620717411303424, "b": {"y": -18446744073709551616, "x": 1},'
                   ' "alpha": "\\u00e9", "n": -123456789012345678901234}')
    assert json.loads(detail_text) == DETAIL
    try:
        reply = raw_call(server, "balance.update",
                         f'[1, "BTC", "deposit", {U64_MAX}, "2.5", {detail_text}]')
        assert error_code(reply) is None, reply
        server.call("balance.update", 1, "BTC", "deposit", 7, "1", SMALL_DETAIL)
        server.stop(signal.SIGKILL)  # no final slice: the restart replays the log
        server.start()
        assert server.call("balance.query", 1, "BTC") == {"BTC": {"available": "3.5", "freeze": "0"}}
        # the replayed dedup entry kept the 64-bit business id exactly
        again = raw_call(server, "balance.update",
                         f'[1, "BTC", "deposit", {U64_MAX}, "2.5", {detail_text}]')
        assert error_code(again) == 10

        def history() -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = server.call(
                "balance.history", 1, "BTC", "", 0, 0, 0, 10)["records"]
            return result

        records = wait_for(lambda: len(history()) == 2 and history(), "both updates in history")
        small = records[0]["detail"]  # newest first
        assert json.dumps(small) == json.dumps({**SMALL_DETAIL, "id": 7})  # order included
        detail = records[1]["detail"]
        # client's key order (then "id"), integers exact, not floats
        assert list(detail.items()) == [*DETAIL.items(), ("id", U64_MAX)]
        assert [type(v) for v in detail.values()] == [int, dict, str, int, int]
        assert list(detail["b"]) == ["y", "x"]
        assert server.stop(signal.SIGTERM, timeout=WAIT) == 0
    finally:
        server.stop(signal.SIGKILL)


# -- a log record that cannot be replayed ---------------------------------------------------------


def _start_fails(server: ServerProcess) -> str:
    """Start a server that must refuse to start; its log."""
    with pytest.raises(RuntimeError):
        server.start()
    assert server.proc is not None
    assert server.proc.returncode == 3
    return server.log_path.read_text()


def test_unreplayable_operation_stops_startup_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, config=write_config(tmp_path)).start()
    server.call("balance.update", 1, "BCH", "deposit", 1, "100", {})
    server.call("order.put_limit", 1, "LTCBCH", 2, "1", "10", "0.001", "0.001", "s")  # op 2
    server.stop(signal.SIGKILL)
    # restart with LTCBCH gone: its order would be dropped and its money with it
    config = default_matchengine_data()
    config["markets"] = [m for m in config["markets"] if m["name"] != "LTCBCH"]
    config["slice_interval"] = 10**9
    (tmp_path / "no-ltc.json").write_text(json.dumps(config))
    restarted = ServerProcess(data, config=tmp_path / "no-ltc.json")
    text = _start_fails(restarted)
    fatal = [line for line in text.splitlines() if "cannot start" in line]
    assert len(fatal) == 1, text
    assert "operation 2 (limit_order) cannot be replayed" in fatal[0]
    assert "no longer configured" in fatal[0]
    assert "Traceback" not in text
    # with the configuration back, it starts and nothing was lost
    server = ServerProcess(data, config=write_config(tmp_path)).start()
    try:
        assert server.call("balance.query", 1, "BCH")["BCH"] == {"available": "90", "freeze": "10"}
    finally:
        server.stop(signal.SIGKILL)


def _append_raw(data: Path, oper_id: int, detail: str) -> None:
    conn = sqlite3.connect(data / "trade_log.sqlite", timeout=30)
    try:
        with conn:
            conn.execute("INSERT INTO operlog (id, time, detail) VALUES (?, ?, ?)",
                         (oper_id, time.time(), detail))
    finally:
        conn.close()


def test_undecodable_record_stops_startup_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, config=write_config(tmp_path)).start()
    server.call("balance.update", 1, "BTC", "deposit", 1, "1", {})
    server.stop(signal.SIGKILL)
    # what an older version logged: a detail nested ~1,000 deep with a 64-bit business id
    _append_raw(data, 2, '{"method":"update_balance","params":[1,"BTC","deposit",'
                         f'{U64_MAX},"1",{{"d":{deep(980)}}}]}}')
    text = _start_fails(ServerProcess(data, config=write_config(tmp_path)))
    fatal = [line for line in text.splitlines() if "cannot start" in line]
    assert len(fatal) == 1, text
    assert "operlog id 2" in fatal[0] and "nested deeper than" in fatal[0]
    assert "Traceback" not in text


def _follower_pid(server: ServerProcess) -> int | None:
    """The server's child that runs multiprocessing's spawn_main: the history follower."""
    assert server.proc is not None
    found = subprocess.run(["pgrep", "-P", str(server.proc.pid), "-f", "spawn_main"],
                           capture_output=True, text=True, timeout=30).stdout.split()
    return int(found[0]) if len(found) == 1 else None


def test_follower_stops_for_good_on_a_record_it_cannot_apply(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, config=write_config(tmp_path)).start()
    try:
        server.call("balance.update", 1, "BTC", "deposit", 1, "1", {"k": 1})
        wait_for(lambda: server.call("balance.history", 1, "BTC", "", 0, 0, 0, 10)["records"],
                 "the deposit in history")
        # A record the follower tails but cannot apply, as if the log had been tampered with
        # (checksum cleared too) after the engine acknowledged it and before the follower read
        # it.  The follower only reads acknowledged records, so it is paused meanwhile.
        follower = wait_for(lambda: _follower_pid(server), "the follower process")
        os.kill(follower, signal.SIGSTOP)
        try:
            server.call("balance.update", 1, "BTC", "deposit", 2, "1", {"k": 2})
            conn = sqlite3.connect(data / "trade_log.sqlite", timeout=30)
            try:
                with conn:
                    conn.execute("UPDATE operlog SET detail = ?, checksum = NULL WHERE id = 2",
                                 ('{"method":"no_such_method","params":[]}',))
            finally:
                conn.close()
        finally:
            os.kill(follower, signal.SIGCONT)
        log = wait_for(lambda: "history follower stopped on operation 2" in server.log()
                       and server.log_path.read_text(), "the follower's fatal alert")
        assert "unknown method 'no_such_method'" in log
        # the fatal line is logged once and the follower is not restarted
        assert log.count("history follower stopped on operation 2") == 1
        assert "restarting" not in log
        # the server still answers
        assert server.call("balance.query", 1, "BTC") == {"BTC": {"available": "2", "freeze": "0"}}
    finally:
        server.stop(signal.SIGKILL)


# -- units ------------------------------------------------------------------------------------------


def test_exactjson_round_trips_big_integers_and_key_order() -> None:
    text = '{"b": 18446744073709551616, "a": [-9223372036854775809, 1.5, "12345678901234567890"]}'
    value = exactjson.loads(text)
    assert list(value) == ["b", "a"]
    assert value["b"] == 2**64 and type(value["b"]) is int
    assert value["a"][0] == -2**63 - 1 and type(value["a"][0]) is int
    assert exactjson.loads(exactjson.dumps(value)) == value
    assert exactjson.dumps(value).startswith(b'{"b":18446744073709551616,"a"')


def test_exactjson_refuses_depth_without_recursion() -> None:
    with pytest.raises(exactjson.JsonTooDeep):
        exactjson.loads(deep(1000))
    with pytest.raises(exactjson.JsonTooDeep):
        exactjson.loads(f"[{U64_MAX + 1}, {deep(980)}]")
    lenient = exactjson.loads(f"[{U64_MAX + 1}, {deep(980)}]", lenient_depth=True)
    assert isinstance(lenient, list)
    value: Any = 2**70
    for _ in range(300):
        value = [value]
    with pytest.raises(ValueError):
        exactjson.dumps(value)
    with pytest.raises(ValueError):
        exactjson.loads(b"[1,")


def test_history_writer_stops_for_good_on_an_operation_it_cannot_turn_into_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from exchange_server.history.store_sqlite import SqliteHistoryStore

    store = SqliteHistoryStore(tmp_path)
    real_rows_of = store.rows_of

    def rows_of(events: Any) -> Any:
        if events == ["poison"]:
            raise ValueError("cannot be a row")
        return real_rows_of(events)

    monkeypatch.setattr(store, "rows_of", rows_of)
    store.open()
    writer = HistoryWriter(store, retry_delay=0.01)
    writer.start()
    try:
        writer.on_events(1, [])
        writer.on_events(2, ["poison"])  # type: ignore[list-item]
        wait_for(lambda: writer.failure, "the writer's failure")
        assert writer.failure is not None and "operation 2" in writer.failure
        assert writer.overloaded()
        fatal = [r for r in caplog.records if r.levelname == "CRITICAL"]
        assert len(fatal) == 1 and "operation 2" in fatal[0].getMessage()
        assert writer.errors == 0  # not retried
    finally:
        writer.stop(timeout=60)  # closes the store


def test_decimals_have_fewer_than_24_integer_digits() -> None:
    assert parse("9" * 23) is not None
    assert parse("9" * 23 + ".99") is not None
    assert parse("1" + "0" * 23) is None  # 24 digits
    assert parse("1e23") is None
    assert parse("9.9e22") is not None
    assert parse("-" + "9" * 24) is None


def test_market_suspended_errors_do_not_grow_a_traceback() -> None:
    engine = Engine.from_config(load_matchengine(default_matchengine_data(), embedded=True))
    methods = MatchEngineMethods(engine)
    methods.balance_update(0.0, [1, "BCH", "deposit", 1, "1000", {}])
    methods.config_suspend_market(0.0, ["BTCBCH"])
    errors: list[RpcError] = []
    for _ in range(1000):
        try:
            methods.order_put_limit(1.0, [1, "BTCBCH", 2, "1", "1", "0.001", "0.001", "s"])
        except RpcError as e:
            errors.append(e)
    assert len(errors) == 1000
    assert len({id(e) for e in errors}) == 1000  # fresh instances
    assert errors[-1].code == 30 and errors[-1].message == "market suspended"
    assert len(traceback.extract_tb(errors[-1].__traceback__)) < 10

