"""alertcenter: alert line parsing, UDP/TCP intake into the real Redis (directly and through
Sentinel), buffering while Redis is down, and the whole path from a service's FATAL log line
to the ``alert:message`` list with separate processes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from exchange_server.alertcenter import build, load_alertcenter
from exchange_server.alertcenter.config import RedisConfig
from exchange_server.alertcenter.server import (
    ALERT_KEY,
    AlertCenter,
    AlertLineError,
    LineSplitter,
    make_redis,
    parse_line,
)
from exchange_server.common.config import ConfigError
from exchange_server.process.logsetup import build_alert
from tests.support.server import REPO
from tests.support.waiting import wait_until_async
from tests.system.test_process import Worker, wait_dead

MAGIC = b"373d26968a5a2b698045"
ROOT = REPO


def test_parse_line() -> None:
    assert parse_line(MAGIC + b"host: boom\n") == b"host: boom"
    assert parse_line(MAGIC + b"host: boom\r\n") == b"host: boom"
    assert parse_line(MAGIC + b"\n") == b""
    with pytest.raises(AlertLineError):
        parse_line(MAGIC[:19] + b"\n")  # 20 bytes or less
    with pytest.raises(AlertLineError):
        parse_line(b"x" * 20 + b"host: boom\n")


def test_line_splitter_partial_reads_and_limits() -> None:
    stream = build_alert("a: one") + build_alert("b: two\r") + build_alert("c: three")
    splitter = LineSplitter(100)
    out: list[bytes] = []
    for i in range(len(stream)):
        out += splitter.feed(stream[i:i + 1])
    assert out == [b"a: one", b"b: two", b"c: three"]
    with pytest.raises(AlertLineError):
        LineSplitter(100).feed(MAGIC + b"x" * 200)  # no newline within max_pkg_size
    with pytest.raises(AlertLineError):
        LineSplitter(100).feed(b"garbage that is long enough\n")


def test_config() -> None:
    sample = {
        "process": {"file_limit": 1000000, "core_limit": 1000000000},
        "log": {"path": "/var/log/trade/alertcenter", "flag": "fatal,error,warn,info,debug"},
        "svr": {"bind": ["tcp@0.0.0.0:4444", "udp@0.0.0.0:4444"], "max_pkg_size": 10240},
        "redis": {"name": "mymaster", "addr": ["127.0.0.1:26381", "127.0.0.1:26382"]},
    }
    cfg = load_alertcenter(sample)
    assert cfg.redis == RedisConfig("mymaster", [("127.0.0.1", 26381), ("127.0.0.1", 26382)], 0)
    assert cfg.svr.bind == ["tcp@0.0.0.0:4444", "udp@0.0.0.0:4444"]
    assert cfg.svr.max_pkg_size == 10240 and cfg.buffer_limit == 10000
    direct = load_alertcenter({**sample, "redis": {"addr": "127.0.0.1:6379", "db": 3}})
    assert direct.redis == RedisConfig(None, [("127.0.0.1", 6379)], 3)
    with pytest.raises(ConfigError, match="redis.addr"):
        load_alertcenter({**sample, "redis": {"addr": ["a:1", "b:2"]}})
    with pytest.raises(ConfigError, match=r"redis\.addr\[0\]"):
        load_alertcenter({**sample, "redis": {"name": "m", "addr": ["nowhere"]}})
    with pytest.raises(ConfigError, match="svr.max_pkg_size"):
        load_alertcenter({**sample, "svr": {"bind": "udp@0.0.0.0:4444"}})


def addr_of(center: AlertCenter, kind: str) -> tuple[str, int]:
    text = next(a for a in center.addresses if a.startswith(kind))
    host, port = text.split("@")[1].rsplit(":", 1)
    return host, int(port)


async def test_udp_and_tcp_alerts_reach_redis(redis_server: tuple[str, int],
                                              redis_prefix: str, tmp_path: Path) -> None:
    key = redis_prefix + ALERT_KEY
    client = aioredis.Redis(host=redis_server[0], port=redis_server[1])
    center = AlertCenter(["udp@127.0.0.1:0", "tcp@127.0.0.1:0", f"stream@{tmp_path / 'ac.sock'}"],
                         10240, make_redis(RedisConfig(None, [redis_server])), key=key)
    await center.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(build_alert("h1: udp one"), addr_of(center, "udp"))
            await wait_until_async(lambda: center.pushed == 1, 30)
            udp.sendto(build_alert("h1: udp two") + build_alert("h1: udp three"),
                       addr_of(center, "udp"))
            udp.sendto(b"no magic at all here, dropped\n", addr_of(center, "udp"))
            await wait_until_async(lambda: center.pushed == 3, 30)
        reader, writer = await asyncio.open_connection(*addr_of(center, "tcp"))
        payload = build_alert("h2: tcp one") + build_alert("h2: tcp two\r")
        writer.write(payload[:30])
        await writer.drain()
        await asyncio.sleep(0.05)  # shapes the input (two reads, split mid-alert): no assert
        writer.write(payload[30:])
        await writer.drain()
        await wait_until_async(lambda: center.pushed == 5, 30)
        writer.write(b"x" * 25 + b"\n")  # a bad line closes the connection
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        _, w2 = await asyncio.open_unix_connection(str(tmp_path / "ac.sock"))
        w2.write(build_alert("h3: unix"))
        await w2.drain()
        await wait_until_async(lambda: center.pushed == 6, 30)
        w2.close()
        assert await client.lrange(key, 0, -1) == [
            b"h1: udp one", b"h1: udp two", b"h1: udp three", b"h2: tcp one", b"h2: tcp two",
            b"h3: unix"]
    finally:
        await center.stop()
        await client.aclose()


async def test_alerts_through_sentinel(sentinel_server: tuple[list[str], str],
                                       redis_server: tuple[str, int], redis_prefix: str) -> None:
    sentinels, master = sentinel_server
    key = redis_prefix + ALERT_KEY
    cfg = load_alertcenter({
        "svr": {"bind": "udp@127.0.0.1:0", "max_pkg_size": 10240},
        "redis": {"name": master, "addr": sentinels, "db": 0},
    })
    center = AlertCenter(cfg.svr.bind, cfg.svr.max_pkg_size, make_redis(cfg.redis), key=key)
    await center.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(build_alert("sentinel: hello"), addr_of(center, "udp"))
        await wait_until_async(lambda: center.pushed == 1, 30)
        direct = redis.Redis(host=redis_server[0], port=redis_server[1])
        assert direct.lrange(key, 0, -1) == [b"sentinel: hello"]
        direct.close()
    finally:
        await center.stop()


async def test_buffered_while_redis_down_bounded(redis_server: tuple[str, int],
                                                 redis_prefix: str) -> None:
    key = redis_prefix + ALERT_KEY
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens there
    center = AlertCenter(["udp@127.0.0.1:0"], 10240,
                         make_redis(RedisConfig(None, [("127.0.0.1", dead_port)]), timeout=0.5),
                         buffer_limit=3, key=key)
    await center.start()
    try:
        for i in range(5):
            center.submit(f"h: alert {i}".encode())
        await wait_until_async(lambda: center.redis_down, 30)
        assert center.pushed == 0 and center.dropped == 2
        assert center.backlog() == [b"h: alert 2", b"h: alert 3", b"h: alert 4"]
        # Redis is back (here: the client now points at the live server)
        old = center.redis
        center.redis = make_redis(RedisConfig(None, [redis_server]))
        await old.aclose()
        await wait_until_async(lambda: center.pushed == 3, 30)  # the retry finds it
        center.submit(b"h: alert 5")
        await wait_until_async(lambda: center.pushed == 4, 30)
        assert not center.redis_down
        client = redis.Redis(host=redis_server[0], port=redis_server[1])
        assert client.lrange(key, 0, -1) == [b"h: alert 2", b"h: alert 3", b"h: alert 4",
                                             b"h: alert 5"]
        client.close()
    finally:
        await center.stop()


async def test_build_for_run_service(redis_server: tuple[str, int]) -> None:
    center = await build({"svr": {"bind": "udp@127.0.0.1:0", "max_pkg_size": 10240},
                          "redis": {"addr": f"{redis_server[0]}:{redis_server[1]}"}})
    assert isinstance(center, AlertCenter) and center.key == "alert:message"
    await center.redis.aclose()


def free_tcp_udp_port() -> int:
    """A port that both TCP and UDP can bind now, outside the ephemeral range (so that no
    outgoing connection of another test takes it meanwhile)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 32000)
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def start_alertcenter(ac_dir: Path, port: int,
                      sentinel_server: tuple[list[str], str]) -> subprocess.Popen[str]:
    """The alertcenter as its own process on UDP and TCP ``port``, writing through Sentinel."""
    sentinels, master = sentinel_server
    ac_dir.mkdir()
    ac_config = ac_dir / "alertcenter.json"
    ac_config.write_text(json.dumps({
        "log": {"path": str(ac_dir / "alertcenter"), "flag": "fatal,error,warn,info"},
        "svr": {"bind": [f"udp@127.0.0.1:{port}", f"tcp@127.0.0.1:{port}"], "max_pkg_size": 10240},
        "redis": {"name": master, "addr": sentinels},
    }))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["EXCHANGE_LOCK_DIR"] = str(ac_dir)
    code = ("import sys; from exchange_server.alertcenter import build, validate; "
            "from exchange_server.process import run_service; "
            "sys.exit(run_service('alertcenter', sys.argv[1], build, validate=validate))")
    return subprocess.Popen([sys.executable, "-c", code, str(ac_config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_alertcenter(alertcenter: subprocess.Popen[str], ac_dir: Path) -> None:
    deadline = time.monotonic() + 60
    while not (ac_dir / "alertcenter.log").exists() or "server start" not in (
            ac_dir / "alertcenter.log").read_text():
        assert alertcenter.poll() is None, alertcenter.communicate()
        assert time.monotonic() < deadline, "alertcenter did not start"
        time.sleep(0.05)


def test_fatal_log_line_to_redis_list_end_to_end(tmp_path: Path,
                                                  sentinel_server: tuple[list[str], str],
                                                  redis_server: tuple[str, int]) -> None:
    """A service process logs CRITICAL -> UDP -> the alertcenter process -> Sentinel's master
    -> ``alert:message``; the watchdog's "terminated by signal" line arrives there too."""
    token = uuid.uuid4().hex[:12]
    host = f"host-{token}"
    port = free_tcp_udp_port()
    ac_dir = tmp_path / "ac"
    alertcenter = start_alertcenter(ac_dir, port, sentinel_server)
    svc_dir = tmp_path / "svc"
    svc_dir.mkdir()
    worker = Worker(svc_dir, alert_addr=f"127.0.0.1:{port}", host=host,
                    alert=f"cannot write operlog {token}")
    client = redis.Redis(host=redis_server[0], port=redis_server[1])
    try:
        wait_alertcenter(alertcenter, ac_dir)
        watchdog = worker.start("--watchdog")
        first = worker.worker_pid()

        def alerts() -> list[str]:
            values: list[bytes] = client.lrange(ALERT_KEY, 0, -1)  # type: ignore[assignment]
            return [v.decode() for v in values if host.encode() in v]

        deadline = time.monotonic() + 60
        while not alerts():
            assert time.monotonic() < deadline, "no alert in Redis"
            time.sleep(0.05)
        (text,) = alerts()
        assert text.startswith(f"{host}: [fatal]")
        assert text.endswith(f"cannot write operlog {token}")
        # the watchdog reports a worker killed by a signal, and the new worker alerts again
        os.kill(first, signal.SIGKILL)
        worker.worker_pid(timeout=60, not_pid=first)
        deadline = time.monotonic() + 60
        while len(alerts()) < 3:
            assert time.monotonic() < deadline, alerts()
            time.sleep(0.05)
        assert any(f"process: {first}, name: {worker.name} terminated by signal: 'Killed'" in a
                   for a in alerts())
        watchdog.send_signal(signal.SIGTERM)
        assert watchdog.wait(timeout=10) == 0
        alertcenter.send_signal(signal.SIGTERM)
        assert alertcenter.wait(timeout=10) == 0
        assert "alert message: " + host in (ac_dir / "alertcenter.log").read_text()
    finally:
        leftovers: list[bytes] = client.lrange(ALERT_KEY, 0, -1)  # type: ignore[assignment]
        for value in leftovers:
            if host.encode() in value:
                client.lrem(ALERT_KEY, 0, value)  # type: ignore[arg-type]
        client.close()
        worker.cleanup()
        if alertcenter.poll() is None:
            alertcenter.kill()
            alertcenter.wait()
        wait_dead(alertcenter.pid)


def test_leader_change_line_reaches_the_alert_list(tmp_path: Path,
                                                    sentinel_server: tuple[list[str], str],
                                                    redis_server: tuple[str, int]) -> None:
    """Each change of matchengine leader is a FATAL line of the new active (issue 16): a
    process named matchengine logging it through the process runner's logging reaches
    ``alert:message`` whole, with its host, as the operator's alert consumers read it."""
    token = uuid.uuid4().hex[:12]
    host = f"me-{token}"
    line = f"matchengine leader change: epoch 7 now held by host-b:4242 (was host-a:{token})"
    port = free_tcp_udp_port()
    ac_dir = tmp_path / "ac"
    alertcenter = start_alertcenter(ac_dir, port, sentinel_server)
    svc_dir = tmp_path / "svc"
    svc_dir.mkdir()
    worker = Worker(svc_dir, name="matchengine", alert_addr=f"127.0.0.1:{port}", host=host,
                    alert=line)
    client = redis.Redis(host=redis_server[0], port=redis_server[1])

    def alerts() -> list[str]:
        values: list[bytes] = client.lrange(ALERT_KEY, 0, -1)  # type: ignore[assignment]
        return [v.decode() for v in values if host.encode() in v]

    try:
        wait_alertcenter(alertcenter, ac_dir)
        proc = worker.start()
        deadline = time.monotonic() + 60
        while not alerts():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no alert in Redis"
            time.sleep(0.05)
        (text,) = alerts()
        assert text.startswith(f"{host}: [fatal]") and text.endswith(line)
        assert line in (svc_dir / "log" / "matchengine.log").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        for value in client.lrange(ALERT_KEY, 0, -1):  # type: ignore[union-attr]
            if host.encode() in value:
                client.lrem(ALERT_KEY, 0, value)
        client.close()
        worker.cleanup()
        if alertcenter.poll() is None:
            alertcenter.send_signal(signal.SIGTERM)
            alertcenter.wait(timeout=10)
        wait_dead(alertcenter.pid)
