"""accessws configuration: the original's JSON config (config.md, accessws), plus defaults.

``load_accessws(data)`` reads the original's file with errors naming the field; with
``embedded=True`` every block that only matters to a standalone process (``svr``, ``monitor``,
the three rpc clients, the two Kafka consumers, ``log``, ``auth_url``, ``sign_url``) may be
absent.  ``AccessWsConfig()`` alone is a usable embedded configuration (no auth server: then
``server.auth`` / ``server.sign`` answer error 3 "service unavailable").

Fields marked *extension* are not in the original; they bound what one connection may cost.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from exchange_server.common import decimals
from exchange_server.common.config import (
    ConfigError,
    LogConfig,
    Node,
    SvrConfig,
    read_log,
    read_svr,
)

#: The original's sample ``depth_limit`` (config.md).
DEFAULT_DEPTH_LIMIT: tuple[int, ...] = (1, 5, 10, 20, 30, 50, 100)
#: The original's sample ``depth_merge``: "0" (no merging) and the powers of ten up to 0.1.
DEFAULT_DEPTH_MERGE: tuple[str, ...] = (
    "0", "0.00000001", "0.0000001", "0.000001", "0.00001", "0.0001", "0.001", "0.01", "0.1",
)

#: Where ``exchange-server run`` serves WebSocket clients unless told otherwise.
DEFAULT_WS_BIND = "tcp@127.0.0.1:8090"


@dataclass(frozen=True)
class WsSvrConfig:
    """``svr`` block of a WebSocket server."""

    bind: tuple[str, ...] = (DEFAULT_WS_BIND,)
    #: Largest message (after reassembly of fragments) accepted; bigger -> connection closed.
    max_pkg_size: int = 102400
    #: Seconds without any frame from the client before the connection is closed.
    keep_alive: int = 3600
    #: Sub-protocol that must be among the client's ``Sec-WebSocket-Protocol`` if it sends one.
    protocol: str = "chat"
    #: When non-empty, the ``Origin`` header must end with it.
    origin: str = ""
    #: SO_RCVBUF / SO_SNDBUF of accepted sockets (0: the system's default), as the original.
    read_mem: int = 0
    write_mem: int = 0


@dataclass(frozen=True)
class RpcClientConfig:
    """An rpc client block (``matchengine``, ``marketprice``, ``readhistory``)."""

    name: str
    addr: tuple[str, ...]
    max_pkg_size: int
    reconnect_timeout: float = 0.0
    heartbeat_timeout: float = 3.0


@dataclass(frozen=True)
class KafkaConsumerConfig:
    """A Kafka consumer block (``orders``, ``balances``).  accessws always starts at the end."""

    brokers: str
    topic: str
    partition: int = 0
    limit: int = 1000
    offset: int = 0


@dataclass(frozen=True)
class ProcessConfig:
    file_limit: int = 0
    core_limit: int = 0


@dataclass
class AccessWsConfig:
    svr: WsSvrConfig = field(default_factory=WsSvrConfig)
    monitor: SvrConfig | None = None
    matchengine: RpcClientConfig | None = None
    marketprice: RpcClientConfig | None = None
    readhistory: RpcClientConfig | None = None
    orders: KafkaConsumerConfig | None = None
    balances: KafkaConsumerConfig | None = None
    #: Extension (the CoinEx fork's stop orders): the ``stops`` topic, optional (default: topic
    #: "stops" on the brokers of ``orders``).
    stops: KafkaConsumerConfig | None = None
    worker_num: int = 1
    auth_url: str | None = None
    sign_url: str | None = None
    backend_timeout: float = 1.0
    cache_timeout: float = 0.5
    deals_interval: float = 0.5
    price_interval: float = 0.5
    state_interval: float = 0.5
    today_interval: float = 0.5
    kline_interval: float = 0.5
    depth_interval: float = 0.5
    depth_limit: tuple[int, ...] = DEFAULT_DEPTH_LIMIT
    depth_merge: tuple[Decimal, ...] = tuple(Decimal(v) for v in DEFAULT_DEPTH_MERGE)
    debug: bool = False
    process: ProcessConfig = field(default_factory=ProcessConfig)
    log: LogConfig | None = None
    #: Bytes a connection may have waiting to be sent (beyond the kernel's socket buffer); past
    #: it the client is too slow (or dead) and the connection is dropped.  From ``svr.buf_limit``
    #: as in the original, where 0 means no limit; here 0 or absent gives this default.
    send_buffer_limit: int = 1 << 20
    # -- extensions -------------------------------------------------------------------------------
    #: Requests per second one connection may make (token bucket refilled at this rate); a
    #: client going faster is throttled (its frames are read later), never answered wrongly.
    rate_limit: float = 100.0
    #: Bucket size: requests one connection may make in a burst.
    rate_burst: int = 200
    #: Requests of one connection waiting for a backend or the auth server at once; reading
    #: that connection pauses while it has this many.
    max_pending: int = 64
    #: TCP connections one process holds at once, handshakes under way included (0: no limit);
    #: more are closed right after the TCP accept.
    max_connections: int = 10000
    #: Seconds a TCP connection may take to send its complete HTTP upgrade request before it
    #: is closed (0: no limit).
    handshake_timeout: float = 10.0
    #: Elements one ``*.subscribe`` list may have (more: error 1).
    max_subscribe_list: int = 256
    #: Concurrent calls to the auth server / sign server (the original's thread pools).
    auth_concurrency: int = 10
    sign_concurrency: int = 5
    #: Entries in the query cache before it is emptied early (the original: only every 60 s).
    cache_max_entries: int = 10000
    raw: dict[str, Any] = field(default_factory=dict)

    def allowed_merge(self, interval: str) -> bool:
        """``depth.subscribe``'s interval is numerically one of ``depth_merge``."""
        value = decimals.parse(interval)
        return value is not None and value in self.depth_merge


def _read_ws_svr(node: Node) -> WsSvrConfig:
    return WsSvrConfig(
        bind=tuple(node.str_or_list("bind")),
        max_pkg_size=node.integer("max_pkg_size", minimum=1),
        keep_alive=node.integer("keep_alive", 3600, minimum=1),
        protocol=node.string("protocol", "chat"),
        origin=node.string("origin", ""),
        read_mem=node.integer("read_mem", 0, minimum=0),
        write_mem=node.integer("write_mem", 0, minimum=0),
    )


def _read_rpc_client(node: Node) -> RpcClientConfig:
    heartbeat = node.real("heartbeat_timeout", 0.0, 0.0)
    if heartbeat == 0.0:
        heartbeat = 3.0
    return RpcClientConfig(
        name=node.string("name"),
        addr=tuple(node.str_or_list("addr")),
        max_pkg_size=node.integer("max_pkg_size", minimum=1),
        reconnect_timeout=node.real("reconnect_timeout", 0.0, 0.0),
        heartbeat_timeout=min(600.0, max(2.0, heartbeat)),
    )


def _read_kafka_consumer(node: Node) -> KafkaConsumerConfig:
    return KafkaConsumerConfig(
        brokers=node.string("brokers"),
        topic=node.string("topic"),
        partition=node.integer("partition", 0, minimum=0),
        limit=node.integer("limit", 1000, minimum=1),
        offset=node.integer("offset", 0),
    )


def _read_process(node: Node) -> ProcessConfig:
    return ProcessConfig(
        file_limit=node.integer("file_limit", 0, minimum=0),
        core_limit=node.integer("core_limit", 0, minimum=0),
    )


def _read_depth_limit(root: Node) -> tuple[int, ...]:
    values = root.array("depth_limit")
    out: list[int] = []
    for i, v in enumerate(values):
        if type(v) is not int or v <= 0:
            raise ConfigError(f"depth_limit[{i}]: must be a positive integer")
        out.append(v)
    return tuple(out)


def _read_depth_merge(root: Node) -> tuple[Decimal, ...]:
    values = root.array("depth_merge")
    out: list[Decimal] = []
    for i, v in enumerate(values):
        parsed = decimals.parse(v)
        if parsed is None or parsed < 0:
            raise ConfigError(f"depth_merge[{i}]: must be a non-negative decimal number in a string")
        out.append(parsed)
    return tuple(out)


def _interval(root: Node, key: str) -> float:
    value: float = root.real(key, 0.5, 0.0)
    if value <= 0:
        raise ConfigError(f"{root.where(key)}: must be > 0")
    return value


def load_accessws(data: Any, *, embedded: bool = False) -> AccessWsConfig:
    """Build the accessws config from the original's JSON (already parsed).

    Standalone, ``svr``, ``monitor``, the rpc clients, ``orders``, ``balances``, ``auth_url``,
    ``sign_url``, ``depth_limit`` and ``depth_merge`` are required as in the original; embedded,
    they may be left out (defaults: the sample depth lists, no auth server).
    """
    root = Node(data)
    optional = embedded

    def block(key: str) -> Node | None:
        if optional and not root.has(key):
            return None
        node: Node = root.obj(key)
        return node

    svr = block("svr")
    monitor = block("monitor")
    clients = {name: block(name) for name in ("matchengine", "marketprice", "readhistory")}
    orders = block("orders")
    balances = block("balances")
    log = root.obj("log", None) if optional else root.obj("log")
    process = root.obj("process", None)
    auth_default: Any = None if optional else _REQUIRED
    auth_url = _string_or_required(root, "auth_url", auth_default)
    sign_url = _string_or_required(root, "sign_url", auth_default)
    depth_limit = _read_depth_limit(root) if (root.has("depth_limit") or not optional) \
        else DEFAULT_DEPTH_LIMIT
    depth_merge = _read_depth_merge(root) if (root.has("depth_merge") or not optional) \
        else tuple(Decimal(v) for v in DEFAULT_DEPTH_MERGE)
    defaults = AccessWsConfig()
    config = AccessWsConfig(
        svr=_read_ws_svr(svr) if svr is not None else WsSvrConfig(),
        monitor=read_svr(monitor) if monitor is not None else None,
        matchengine=_client(clients["matchengine"]),
        marketprice=_client(clients["marketprice"]),
        readhistory=_client(clients["readhistory"]),
        orders=_read_kafka_consumer(orders) if orders is not None else None,
        balances=_read_kafka_consumer(balances) if balances is not None else None,
        stops=_read_kafka_consumer(root.obj("stops")) if root.has("stops") else None,
        worker_num=root.integer("worker_num", 1, minimum=1),
        auth_url=auth_url,
        sign_url=sign_url,
        backend_timeout=_positive(root, "backend_timeout", 1.0),
        cache_timeout=root.real("cache_timeout", 0.5, 0.0),
        deals_interval=_interval(root, "deals_interval"),
        price_interval=_interval(root, "price_interval"),
        state_interval=_interval(root, "state_interval"),
        today_interval=_interval(root, "today_interval"),
        kline_interval=_interval(root, "kline_interval"),
        depth_interval=_interval(root, "depth_interval"),
        depth_limit=depth_limit,
        depth_merge=depth_merge,
        debug=root.boolean("debug", False),
        process=_read_process(process) if process is not None else ProcessConfig(),
        log=read_log(log) if log is not None else None,
        send_buffer_limit=_buf_limit(svr, defaults.send_buffer_limit),
        rate_limit=_positive(root, "rate_limit", defaults.rate_limit),
        rate_burst=root.integer("rate_burst", defaults.rate_burst, minimum=1),
        max_pending=root.integer("max_pending", defaults.max_pending, minimum=1),
        max_connections=root.integer("max_connections", defaults.max_connections, minimum=0),
        handshake_timeout=root.real("handshake_timeout", defaults.handshake_timeout, 0.0),
        max_subscribe_list=root.integer("max_subscribe_list", defaults.max_subscribe_list,
                                        minimum=1),
        auth_concurrency=root.integer("auth_concurrency", defaults.auth_concurrency, minimum=1),
        sign_concurrency=root.integer("sign_concurrency", defaults.sign_concurrency, minimum=1),
        cache_max_entries=root.integer("cache_max_entries", defaults.cache_max_entries,
                                       minimum=1),
        raw=data,
    )
    return config


_REQUIRED = object()


def _string_or_required(root: Node, key: str, default: Any) -> str | None:
    if default is _REQUIRED:
        value: str = root.string(key)
    else:
        value = root.string(key, default)
    if value is not None and not value:
        raise ConfigError(f"{root.where(key)}: must not be empty")
    return value


def _positive(root: Node, key: str, default: float) -> float:
    value: float = root.real(key, default, 0.0)
    if value <= 0:
        raise ConfigError(f"{root.where(key)}: must be > 0")
    return value


def _buf_limit(svr: Node | None, default: int) -> int:
    if svr is None:
        return default
    value: int = svr.integer("buf_limit", 0, minimum=0)
    return value or default


def _client(node: Node | None) -> RpcClientConfig | None:
    return _read_rpc_client(node) if node is not None else None


@dataclass(frozen=True)
class Bind:
    """One parsed ``bind`` entry: ``tcp@host:port`` or ``stream@/unix/path``."""

    kind: str  # "tcp" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""


def parse_bind(text: str) -> Bind:
    """``tcp@ip:port`` and ``stream@path`` (what a WebSocket server can listen on)."""
    kind, sep, rest = text.partition("@")
    if not sep:
        raise ConfigError(f"{text!r}: expected tcp@host:port or stream@path")
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{text!r}: expected tcp@host:port")
        return Bind("tcp", host=host.strip("[]"), port=int(port))
    if kind == "stream":
        if not rest:
            raise ConfigError(f"{text!r}: expected stream@path")
        return Bind("unix", path=rest)
    raise ConfigError(f"{text!r}: only tcp@ and stream@ binds can serve WebSocket clients")


def apply_process_limits(process: ProcessConfig) -> None:
    """``process.file_limit`` / ``core_limit``: raise RLIMIT_NOFILE / RLIMIT_CORE (0: leave),
    as the original does at start-up (capped at the hard limit when not privileged)."""
    for limit, value in ((resource.RLIMIT_NOFILE, process.file_limit),
                         (resource.RLIMIT_CORE, process.core_limit)):
        if not value:
            continue
        soft, hard = resource.getrlimit(limit)
        target = value if hard == resource.RLIM_INFINITY else min(value, hard)
        try:
            resource.setrlimit(limit, (max(soft, target), hard))
        except (ValueError, OSError):
            pass
