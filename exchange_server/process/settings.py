"""The config blocks every service process reads: ``process``, ``log``, ``alert`` (config.md 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange_server.common.config import ConfigError, Node, SvrConfig, read_svr
from exchange_server.common.configread import block, load_fields, setting
from exchange_server.rpc.addr import parse_host_port, parse_sock_addr

SHIFTS = ("size", "min", "hour", "day")


def _shift(node: Node, key: str, value: str) -> str:
    shift = str(value).lower()
    return shift if shift in SHIFTS else "day"  # the original: anything else means by day


def _log_format(node: Node, key: str, value: str) -> str:
    if value not in ("text", "json"):
        raise ConfigError(f"{node.where(key)}: must be \"text\" or \"json\"")
    return str(value)


@dataclass(frozen=True)
class ProcessConfig:
    file_limit: int = setting(0, minimum=0)
    core_limit: int = setting(0, minimum=0)


@dataclass(frozen=True)
class LogSettings:
    """The original's ``log`` block.  ``path`` is a prefix: files are ``<path>.log``,
    ``<path>.log.1``, ... (shift ``size``) or ``<path>.YYYYMMDD[HH[MM]].log[.N]``."""

    path: str
    flag: str
    shift: str = setting("size", then=_shift)
    pid: bool = True
    fork: bool = True
    max: int = setting(100_000_000, minimum=0)
    num: int = setting(100, minimum=0)
    keep: int = setting(7, minimum=0)
    #: Extension: "text" (the original's line format) or "json" (one JSON object a line).
    format: str = setting("text", then=_log_format)


def _alert_addr(node: Node, key: str, default: Any) -> tuple[str, int]:
    text = node.string(key)
    try:
        return parse_host_port(text)
    except ValueError as e:
        raise ConfigError(f"{node.where(key)}: {e}") from None


@dataclass(frozen=True)
class AlertConfig:
    host: str
    addr: tuple[str, int] = setting(read=_alert_addr)


def read_monitor(node: Node) -> SvrConfig:
    cfg = read_svr(node)
    for i, text in enumerate(cfg.bind):
        try:
            addr = parse_sock_addr(text)
        except ValueError as e:
            raise ConfigError(f"{node.where('bind')}[{i}]: {e}") from None
        if addr.kind not in ("tcp", "stream"):
            raise ConfigError(f"{node.where('bind')}[{i}]: the monitor listens on tcp@ or stream@")
    return cfg


def read_metrics(node: Node) -> SvrConfig:
    cfg = read_svr(Node({"max_pkg_size": 1024, **node.data}, node.path))
    for i, text in enumerate(cfg.bind):
        try:
            addr = parse_sock_addr(text)
        except ValueError as e:
            raise ConfigError(f"{node.where('bind')}[{i}]: {e}") from None
        if addr.kind != "tcp":
            raise ConfigError(f"{node.where('bind')}[{i}]: metrics are served on tcp@ip:port")
    return cfg


#: ``required`` tag of the ``alert`` block: required except in the alertcenter
ALERT = "alert"


@dataclass(frozen=True, kw_only=True)
class ProcessSettings:
    process: ProcessConfig = setting(default_factory=ProcessConfig,
                                     read=lambda node, key, _: read_process(node.obj(key, None)))
    log: LogSettings
    alert: AlertConfig | None = setting(None, required=ALERT, read=block(lambda n: read_alert(n)))
    monitor: SvrConfig | None = setting(None, read=block(read_monitor))
    debug: bool = False
    #: Extension: ``"metrics": {"bind": "tcp@ip:port"}`` serves Prometheus ``GET /metrics``.
    metrics: SvrConfig | None = setting(None, read=block(read_metrics))


def read_process(node: Node | None) -> ProcessConfig:
    """The optional ``process`` block (0 = leave the limit alone)."""
    return ProcessConfig() if node is None else load_fields(ProcessConfig, node)


def read_log_settings(node: Node) -> LogSettings:
    return load_fields(LogSettings, node)


def read_alert(node: Node) -> AlertConfig:
    """``{"addr": "ip:port", "host": "name"}``: where FATAL log lines are sent by UDP."""
    return load_fields(AlertConfig, node, first=("addr",))


def read_process_settings(data: Any, alert_required: bool = True) -> ProcessSettings:
    """The process-level blocks of a service config (``alert`` is required except in the
    alertcenter; ``monitor`` is optional)."""
    return load_fields(ProcessSettings, Node(data), optional=() if alert_required else (ALERT,),
                       first=("process", "alert"))
