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
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from exchange_server.common import decimals
from exchange_server.common.config import ConfigError, LogConfig, Node, SvrConfig
from exchange_server.common.configread import STANDALONE, block, load_fields, setting
from exchange_server.process.settings import ProcessConfig, read_process
from exchange_server.rpc.config import RpcClientConfig, read_rpc_client

#: The original's sample ``depth_limit`` (config.md).
DEFAULT_DEPTH_LIMIT: tuple[int, ...] = (1, 5, 10, 20, 30, 50, 100)
#: The original's sample ``depth_merge``: "0" (no merging) and the powers of ten up to 0.1.
DEFAULT_DEPTH_MERGE: tuple[str, ...] = (
    "0", "0.00000001", "0.0000001", "0.000001", "0.00001", "0.0001", "0.001", "0.01", "0.1",
)

#: Where ``exchange-server run`` serves WebSocket clients unless told otherwise.
DEFAULT_WS_BIND = "tcp@127.0.0.1:8090"


def _above_zero(node: Node, key: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{node.where(key)}: must be > 0")
    return value


def _not_empty(node: Node, key: str, value: str | None) -> str | None:
    if value is not None and not value:
        raise ConfigError(f"{node.where(key)}: must not be empty")
    return value


@dataclass(frozen=True)
class WsSvrConfig:
    """``svr`` block of a WebSocket server (``bind`` and ``max_pkg_size`` required in a file)."""

    bind: tuple[str, ...] = setting((DEFAULT_WS_BIND,), required=True)
    #: Largest message (after reassembly of fragments) accepted; bigger -> connection closed.
    max_pkg_size: int = setting(102400, minimum=1, required=True)
    #: Seconds without any frame from the client before the connection is closed.
    keep_alive: int = setting(3600, minimum=1)
    #: Sub-protocol that must be among the client's ``Sec-WebSocket-Protocol`` if it sends one.
    protocol: str = "chat"
    #: When non-empty, the ``Origin`` header must end with it.
    origin: str = ""
    #: SO_RCVBUF / SO_SNDBUF of accepted sockets (0: the system's default), as the original.
    read_mem: int = setting(0, minimum=0)
    write_mem: int = setting(0, minimum=0)
    #: The original's send buffer bound (0: none); see ``AccessWsConfig.send_buffer_limit``.
    buf_limit: int = setting(0, minimum=0)


@dataclass(frozen=True)
class KafkaConsumerConfig:
    """A Kafka consumer block (``orders``, ``balances``).  accessws always starts at the end."""

    brokers: str
    topic: str
    partition: int = setting(0, minimum=0)
    limit: int = setting(1000, minimum=1)
    offset: int = 0


def _read_depth_limit(root: Node, key: str, default: Any) -> tuple[int, ...]:
    values = root.array(key)
    out: list[int] = []
    for i, v in enumerate(values):
        if type(v) is not int or v <= 0:
            raise ConfigError(f"depth_limit[{i}]: must be a positive integer")
        out.append(v)
    return tuple(out)


def _read_depth_merge(root: Node, key: str, default: Any) -> tuple[Decimal, ...]:
    values = root.array(key)
    out: list[Decimal] = []
    for i, v in enumerate(values):
        parsed = decimals.parse(v)
        if parsed is None or parsed < 0:
            raise ConfigError(f"depth_merge[{i}]: must be a non-negative decimal number in a string")
        out.append(parsed)
    return tuple(out)


def _standalone_block(cls: type) -> Any:
    """A block required in a standalone file, optional embedded; never ``null``."""
    return setting(None, required=STANDALONE,
                   read=block(lambda node: load_fields(cls, node), null=False))


def _rpc_client_block() -> Any:
    """A backend's rpc client block, read as every service reads one (rpc/config.py)."""
    return setting(None, required=STANDALONE, read=block(read_rpc_client, null=False))


def _interval() -> Any:
    return setting(0.5, minimum=0.0, then=_above_zero)


@dataclass
class AccessWsConfig:
    svr: WsSvrConfig = setting(default_factory=WsSvrConfig, required=STANDALONE)
    monitor: SvrConfig | None = _standalone_block(SvrConfig)
    matchengine: RpcClientConfig | None = _rpc_client_block()
    marketprice: RpcClientConfig | None = _rpc_client_block()
    readhistory: RpcClientConfig | None = _rpc_client_block()
    orders: KafkaConsumerConfig | None = _standalone_block(KafkaConsumerConfig)
    balances: KafkaConsumerConfig | None = _standalone_block(KafkaConsumerConfig)
    #: Extension (the CoinEx fork's stop orders): the ``stops`` topic, optional (default: topic
    #: "stops" on the brokers of ``orders``).
    stops: KafkaConsumerConfig | None = setting(
        None, read=block(lambda node: load_fields(KafkaConsumerConfig, node), null=False))
    worker_num: int = setting(1, minimum=1)
    auth_url: str | None = setting(None, required=STANDALONE, then=_not_empty)
    sign_url: str | None = setting(None, required=STANDALONE, then=_not_empty)
    backend_timeout: float = setting(1.0, minimum=0.0, then=_above_zero)
    cache_timeout: float = setting(0.5, minimum=0.0)
    deals_interval: float = _interval()
    price_interval: float = _interval()
    state_interval: float = _interval()
    today_interval: float = _interval()
    kline_interval: float = _interval()
    depth_interval: float = _interval()
    depth_limit: tuple[int, ...] = setting(DEFAULT_DEPTH_LIMIT, required=STANDALONE,
                                           read=_read_depth_limit)
    depth_merge: tuple[Decimal, ...] = setting(tuple(Decimal(v) for v in DEFAULT_DEPTH_MERGE),
                                               required=STANDALONE, read=_read_depth_merge)
    debug: bool = False
    process: ProcessConfig = setting(default_factory=ProcessConfig,
                                     read=lambda node, key, _: read_process(node.obj(key, None)))
    log: LogConfig | None = setting(None, required=STANDALONE)
    #: Bytes a connection may have waiting to be sent (beyond the kernel's socket buffer); past
    #: it the client is too slow (or dead) and the connection is dropped.  From ``svr.buf_limit``
    #: as in the original, where 0 means no limit; here 0 or absent gives this default.
    send_buffer_limit: int = setting(1 << 20, skip=True)
    # -- extensions -------------------------------------------------------------------------------
    #: Requests per second one connection may make (token bucket refilled at this rate); a
    #: client going faster is throttled (its frames are read later), never answered wrongly.
    rate_limit: float = setting(100.0, minimum=0.0, then=_above_zero)
    #: Bucket size: requests one connection may make in a burst.
    rate_burst: int = setting(200, minimum=1)
    #: Requests of one connection waiting for a backend or the auth server at once; reading
    #: that connection pauses while it has this many.
    max_pending: int = setting(64, minimum=1)
    #: TCP connections one process holds at once, handshakes under way included (0: no limit);
    #: more are closed right after the TCP accept.
    max_connections: int = setting(10000, minimum=0)
    #: Seconds a TCP connection may take to send its complete HTTP upgrade request before it
    #: is closed (0: no limit).
    handshake_timeout: float = setting(10.0, minimum=0.0)
    #: Elements one ``*.subscribe`` list may have (more: error 1).
    max_subscribe_list: int = setting(256, minimum=1)
    #: Concurrent calls to the auth server / sign server (the original's thread pools).
    auth_concurrency: int = setting(10, minimum=1)
    sign_concurrency: int = setting(5, minimum=1)
    #: Entries in the query cache before it is emptied early (the original: only every 60 s).
    cache_max_entries: int = setting(10000, minimum=1)
    raw: dict[str, Any] = setting(default_factory=dict, skip=True)

    def allowed_merge(self, interval: str) -> bool:
        """``depth.subscribe``'s interval is numerically one of ``depth_merge``."""
        value = decimals.parse(interval)
        return value is not None and value in self.depth_merge


#: the blocks checked first, in the original's order (which error a broken file reports)
_FIRST = ("svr", "monitor", "matchengine", "marketprice", "readhistory", "orders", "balances",
          "log")


def load_accessws(data: Any, *, embedded: bool = False) -> AccessWsConfig:
    """Build the accessws config from the original's JSON (already parsed).

    Standalone, ``svr``, ``monitor``, the rpc clients, ``orders``, ``balances``, ``auth_url``,
    ``sign_url``, ``depth_limit`` and ``depth_merge`` are required as in the original; embedded,
    they may be left out (defaults: the sample depth lists, no auth server).
    """
    config = load_fields(AccessWsConfig, Node(data), embedded=embedded, first=_FIRST, raw=data)
    if config.svr.buf_limit:
        config = replace(config, send_buffer_limit=config.svr.buf_limit)
    return config


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
