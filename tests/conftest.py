"""Shared fixtures.

MySQL/MariaDB: tests marked ``mysql`` (or using a fixture param marked so) run against the real
server started by ``scripts/services.sh up``; settings come from EXCHANGE_MYSQL_HOST / _PORT /
_USER / _PASSWORD.  An unreachable server makes those tests FAIL, so a missing server is never
mistaken for a green run; set EXCHANGE_TEST_NO_MYSQL=1 to deselect them instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from exchange_server.common.config import MysqlConfig
from exchange_server.storage import mysql as mysql_db


def _no_mysql() -> bool:
    return os.environ.get("EXCHANGE_TEST_NO_MYSQL", "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _no_mysql():
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (drop if item.get_closest_marker("mysql") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def mysql_server_config() -> MysqlConfig:
    """The test server's settings, without a database name."""
    return MysqlConfig(
        host=os.environ.get("EXCHANGE_MYSQL_HOST", "127.0.0.1"),
        port=int(os.environ.get("EXCHANGE_MYSQL_PORT", "3306")),
        user=os.environ.get("EXCHANGE_MYSQL_USER", "exchange"),
        password=os.environ.get("EXCHANGE_MYSQL_PASSWORD", "exchange"),
        name="",
    )


@pytest.fixture(scope="session")
def mysql_server() -> MysqlConfig:
    """The reachable test server (fails the test with instructions if it is not)."""
    cfg = mysql_server_config()
    try:
        conn = mysql_db.connect(cfg, database=False, connect_timeout=30)
        conn.close()
    except pymysql.MySQLError as e:
        pytest.fail(
            f"MariaDB is not reachable at {cfg.user}@{cfg.host}:{cfg.port} ({e}).\n"
            "Start it with `scripts/services.sh up` (or set EXCHANGE_TEST_NO_MYSQL=1 to deselect"
            " the MySQL tests).",
            pytrace=False,
        )
    return cfg


@pytest.fixture
def mysql_config(mysql_server: MysqlConfig) -> Iterator[Callable[..., MysqlConfig]]:
    """Factory: ``mysql_config(prefix="test")`` gives a MysqlConfig naming a fresh, uniquely
    named database (created by whoever opens it); every one is dropped at teardown."""
    names: list[str] = []

    def make(prefix: str = "test") -> MysqlConfig:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        names.append(name)
        return MysqlConfig(host=mysql_server.host, port=mysql_server.port,
                           user=mysql_server.user, password=mysql_server.password, name=name)

    yield make

    if names:
        conn = mysql_db.connect(mysql_server, database=False)
        try:
            with conn.cursor() as cur:
                for name in names:
                    cur.execute(f"DROP DATABASE IF EXISTS {mysql_db.quote_name(name)}")
            conn.commit()
        finally:
            conn.close()


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def history_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A ``tests.support.history_support.HistoryBackend`` on SQLite, then on the real MariaDB
    (trade history stores and readers; every database it makes is dropped at teardown)."""
    from tests.support.history_support import HistoryBackend

    make = request.getfixturevalue("mysql_config") if request.param == "mysql" else None
    backend = HistoryBackend(request.param, tmp_path, make)
    yield backend
    backend.close()


# -- Kafka, Redis and Redis Sentinel (bus and marketprice tests) ----------------------------------
# Real servers from `scripts/services.sh up`; settings from `scripts/services.sh env`.  An
# unreachable server FAILS the tests that need it (never skips them).

_SERVICES_HINT = "Start the test servers with `bash scripts/services.sh up`."


@pytest.fixture(scope="session")
def kafka_brokers() -> str:
    """Bootstrap servers of the reachable test Kafka broker."""
    from confluent_kafka.admin import AdminClient

    brokers = os.environ.get("EXCHANGE_KAFKA_BROKERS", "127.0.0.1:9092")
    admin = AdminClient({"bootstrap.servers": brokers, "socket.timeout.ms": 5000})
    try:
        admin.list_topics(timeout=10)
    except Exception as e:
        pytest.fail(f"Kafka is not reachable at {brokers} ({e}).\n{_SERVICES_HINT}", pytrace=False)
    return brokers


@pytest.fixture
def kafka_topics(kafka_brokers: str) -> Iterator[Callable[[], str]]:
    """Factory: ``kafka_topics()`` creates fresh ``<prefix>deals|orders|balances`` topics (one
    partition each) and returns the prefix; they are deleted at teardown."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_brokers})
    created: list[str] = []

    def make() -> str:
        prefix = f"test-{uuid.uuid4().hex[:12]}-"
        names = [prefix + t for t in ("deals", "orders", "balances")]
        futures = admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1)
                                       for n in names])
        for future in futures.values():
            future.result(timeout=30)
        created.extend(names)
        return prefix

    yield make

    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:
                pass


def redis_server_addr() -> tuple[str, int]:
    return (os.environ.get("EXCHANGE_REDIS_HOST", "127.0.0.1"),
            int(os.environ.get("EXCHANGE_REDIS_PORT", "6379")))


@pytest.fixture(scope="session")
def redis_server() -> tuple[str, int]:
    """(host, port) of the reachable test Redis server."""
    import redis

    host, port = redis_server_addr()
    try:
        redis.Redis(host=host, port=port, socket_timeout=30).ping()
    except Exception as e:
        pytest.fail(f"Redis is not reachable at {host}:{port} ({e}).\n{_SERVICES_HINT}",
                    pytrace=False)
    return host, port


@pytest.fixture(scope="session")
def sentinel_server(redis_server: tuple[str, int]) -> tuple[list[str], str]:
    """(sentinel "host:port" list, master name) of the reachable test Redis Sentinel."""
    from redis.sentinel import Sentinel

    addr = os.environ.get("EXCHANGE_SENTINEL_ADDR", "127.0.0.1:26379")
    name = os.environ.get("EXCHANGE_SENTINEL_MASTER", "mymaster")
    host, _, port = addr.rpartition(":")
    try:
        master = Sentinel([(host, int(port))], socket_timeout=30).discover_master(name)
    except Exception as e:
        pytest.fail(f"Redis Sentinel is not reachable at {addr} (master {name}: {e}).\n"
                    f"{_SERVICES_HINT}", pytrace=False)
    assert master
    return [addr], name


@pytest.fixture
def redis_prefix(redis_server: tuple[str, int]) -> Iterator[str]:
    """A fresh key prefix in the test Redis; every key under it is deleted at teardown."""
    import redis

    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis(host=redis_server[0], port=redis_server[1])
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


# -- Debian tools the deployment tests run for real (nginx, openssl) ------------------------------


def ensure_debian_command(command: str, packages: tuple[str, ...]) -> str:
    """The path of ``command``, installing the first Debian package of ``packages`` that
    installs if it is missing (as root, without letting the package start its own server).
    FAILS the test when it cannot be had."""
    import shutil
    import subprocess

    def find() -> str | None:
        found = shutil.which(command)
        if found:
            return found
        for directory in ("/usr/sbin", "/usr/bin", "/sbin"):
            candidate = Path(directory) / command
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        return None

    path = find()
    if path:
        return path
    if os.geteuid() != 0:
        pytest.fail(f"{command} is missing and only root can install it "
                    f"(apt-get install {packages[0]})", pytrace=False)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:  # keep the package's maintainer scripts from starting a server
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    output = ""
    try:
        for attempt in ("install", "update"):
            if attempt == "update":
                result = subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True,
                                        text=True, timeout=600)
                output += result.stdout[-2000:] + result.stderr[-2000:]
            for package in packages:
                result = subprocess.run(
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
                    env=env, capture_output=True, text=True, timeout=600)
                output += result.stdout[-2000:] + result.stderr[-2000:]
                path = find()
                if result.returncode == 0 and path:
                    return path
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    pytest.fail(f"{command} could not be installed (apt-get install {' or '.join(packages)}):\n"
                f"{output}", pytrace=False)


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """nginx from Debian's packages (installed if missing)."""
    return ensure_debian_command("nginx", ("nginx", "nginx-light"))


@pytest.fixture(scope="session")
def openssl_binary() -> str:
    """openssl from Debian's packages (installed if missing)."""
    return ensure_debian_command("openssl", ("openssl",))
