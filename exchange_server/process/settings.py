"""The config blocks every service process reads: ``process``, ``log``, ``alert`` (config.md 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange_server.common.config import ConfigError, Node, SvrConfig, read_svr
from exchange_server.rpc.addr import parse_host_port, parse_sock_addr

SHIFTS = ("size", "min", "hour", "day")


@dataclass(frozen=True)
class ProcessConfig:
    file_limit: int = 0
    core_limit: int = 0


@dataclass(frozen=True)
class LogSettings:
    """The original's ``log`` block.  ``path`` is a prefix: files are ``<path>.log``,
    ``<path>.log.1``, ... (shift ``size``) or ``<path>.YYYYMMDD[HH[MM]].log[.N]``."""

    path: str
    flag: str
    shift: str = "size"
    pid: bool = True
    fork: bool = True
    max: int = 100_000_000
    num: int = 100
    keep: int = 7
    #: Extension: "text" (the original's line format) or "json" (one JSON object a line).
    format: str = "text"


@dataclass(frozen=True)
class AlertConfig:
    host: str
    addr: tuple[str, int]


@dataclass(frozen=True)
class ProcessSettings:
    process: ProcessConfig
    log: LogSettings
    alert: AlertConfig | None
    monitor: SvrConfig | None
    debug: bool = False
    #: Extension: ``"metrics": {"bind": "tcp@ip:port"}`` serves Prometheus ``GET /metrics``.
    metrics: SvrConfig | None = None


def read_process(node: Node | None) -> ProcessConfig:
    """The optional ``process`` block (0 = leave the limit alone)."""
    if node is None:
        return ProcessConfig()
    return ProcessConfig(
        file_limit=node.integer("file_limit", 0, 0),
        core_limit=node.integer("core_limit", 0, 0),
    )


def read_log_settings(node: Node) -> LogSettings:
    shift = str(node.string("shift", "size")).lower()
    if shift not in SHIFTS:
        shift = "day"  # the original: anything but size/hour/min means by day
    return LogSettings(
        path=node.string("path"),
        flag=node.string("flag"),
        shift=shift,
        pid=node.boolean("pid", True),
        fork=node.boolean("fork", True),
        max=node.integer("max", 100_000_000, 0),
        num=node.integer("num", 100, 0),
        keep=node.integer("keep", 7, 0),
        format=_log_format(node),
    )


def _log_format(node: Node) -> str:
    value = str(node.string("format", "text"))
    if value not in ("text", "json"):
        raise ConfigError(f"{node.where('format')}: must be \"text\" or \"json\"")
    return value


def read_alert(node: Node) -> AlertConfig:
    """``{"addr": "ip:port", "host": "name"}``: where FATAL log lines are sent by UDP."""
    text = node.string("addr")
    try:
        addr = parse_host_port(text)
    except ValueError as e:
        raise ConfigError(f"{node.where('addr')}: {e}") from None
    return AlertConfig(host=node.string("host"), addr=addr)


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


def read_process_settings(data: Any, alert_required: bool = True) -> ProcessSettings:
    """The process-level blocks of a service config (``alert`` is required except in the
    alertcenter; ``monitor`` is optional)."""
    root = Node(data)
    process = root.obj("process", None)
    alert = root.obj("alert") if alert_required else root.obj("alert", None)
    monitor = root.obj("monitor", None)
    metrics = root.obj("metrics", None)
    return ProcessSettings(
        process=read_process(process),
        log=read_log_settings(root.obj("log")),
        alert=read_alert(alert) if alert is not None else None,
        monitor=read_monitor(monitor) if monitor is not None else None,
        debug=root.boolean("debug", False),
        metrics=read_metrics(metrics) if metrics is not None else None,
    )


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

