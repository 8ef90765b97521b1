"""Logging from the original's ``log`` block, plus FATAL alerts to the alertcenter.

Levels.  The ``flag`` is the original's set of enabled levels (``fatal,error,warn,info,notice,
debug,trace``); a record is written when its level's bit is set.  Python levels map as
CRITICAL = fatal, ERROR = error, WARNING = warn, INFO = info, 25 = notice, DEBUG = debug,
5 = trace.  SIGTTIN enables the next disabled level, SIGTTOU disables the most verbose enabled
one (:class:`LevelControl`, as dlog_level_up / dlog_level_down).

Files (:class:`DlogFileHandler`, a stdlib ``BaseRotatingHandler``) keep the original's names:

* shift ``size``: ``<path>.log``; when it reaches ``max`` bytes it becomes ``<path>.log.1``
  (older ones move up to ``.log.<num-1>``, the oldest is dropped; ``num`` 1 = just truncate);
* shift ``min`` / ``hour`` / ``day``: ``<path>.YYYYMMDDHHMM.log`` / ``.YYYYMMDDHH.log`` /
  ``.YYYYMMDD.log`` (local time), each also shifted by size within its period; files of periods
  older than ``keep`` periods are deleted.

Lines look like the original's: ``[2024-05-01 12:00:00.123456] [pid] [info]file.py:12(func): msg``
(``[pid]`` when ``log.pid`` is true).  ``log.fork`` (shift in a forked child) does not apply.

Alerts (:class:`AlertHandler`): every FATAL (CRITICAL) record that the flag lets through is also
sent by UDP to ``alert.addr`` as ``373d26968a5a2b698045<host>: [fatal]file:line(func): msg\\n``,
at most 10240 bytes (the text is cut so that the newline always ends the datagram; newlines
inside the message become spaces so one record is one alert line).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import logging.handlers
import os
import re
import socket
import sys
import time
from typing import Any

from exchange_server.process.settings import AlertConfig, LogSettings

ALERT_MAGIC = b"373d26968a5a2b698045"
ALERT_MAX_SIZE = 10240

NOTICE = 25
TRACE = 5
logging.addLevelName(NOTICE, "NOTICE")
logging.addLevelName(TRACE, "TRACE")

#: The original's flag bits, in order (bit 0 = fatal ... bit 6 = trace).
FLAG_NAMES = ("fatal", "error", "warn", "info", "notice", "debug", "trace")
_FLAG_LEVELS = (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, NOTICE,
                logging.DEBUG, TRACE)
_LEVEL_TAGS = {logging.CRITICAL: "fatal", logging.ERROR: "error", logging.WARNING: "warn",
               logging.INFO: "info", NOTICE: "notice", logging.DEBUG: "debug", TRACE: "trace"}


def read_flag(flag: str) -> int:
    """``"fatal,error,warn"`` -> bit mask (unknown words ignored, as the original)."""
    mask = 0
    for word in re.split(r"[\s,]+", flag.lower()):
        if word in FLAG_NAMES:
            mask |= 1 << FLAG_NAMES.index(word)
    return mask


def level_bit(levelno: int) -> int:
    """The flag bit of a record's level."""
    if levelno >= logging.CRITICAL:
        return 0
    if levelno >= logging.ERROR:
        return 1
    if levelno >= logging.WARNING:
        return 2
    if levelno >= NOTICE:
        return 4
    if levelno >= logging.INFO:
        return 3
    if levelno >= logging.DEBUG:
        return 5
    return 6


class LevelControl(logging.Filter):
    """The enabled-levels mask, applied as a handler filter; SIGTTIN/SIGTTOU move it."""

    def __init__(self, mask: int) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(self.mask & (1 << level_bit(record.levelno)))

    @property
    def threshold(self) -> int:
        """The lowest enabled Python level (the root logger's level)."""
        enabled = [lvl for i, lvl in enumerate(_FLAG_LEVELS) if self.mask & (1 << i)]
        return min(enabled) if enabled else logging.CRITICAL + 10

    def apply(self) -> None:
        logging.getLogger().setLevel(self.threshold)

    def level_up(self) -> None:
        for i in range(8):
            if not self.mask & (1 << i):
                self.mask |= 1 << i
                break
        self.apply()

    def level_down(self) -> None:
        for i in range(7, -1, -1):
            if self.mask & (1 << i):
                self.mask &= ~(1 << i)
                break
        self.apply()

    def describe(self) -> str:
        return ",".join(name for i, name in enumerate(FLAG_NAMES) if self.mask & (1 << i))


class DlogFormatter(logging.Formatter):
    def __init__(self, pid: bool = True) -> None:
        super().__init__()
        self.pid = pid

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        usec = int((record.created % 1) * 1_000_000)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", t)
        tag = _LEVEL_TAGS.get(record.levelno) or FLAG_NAMES[level_bit(record.levelno)]
        pid = f"[{record.process}] " if self.pid else ""
        line = (f"[{stamp}.{usec:06d}] {pid}[{tag}]{record.filename}:{record.lineno}"
                f"({record.funcName}): {record.getMessage()}")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """Structured logs: one JSON object a line (``log.format: "json"``), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": record.created,
            "level": _LEVEL_TAGS.get(record.levelno) or FLAG_NAMES[level_bit(record.levelno)],
            "pid": record.process,
            "logger": record.name,
            "where": f"{record.filename}:{record.lineno}",
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


_PERIODS = {"min": 60, "hour": 3600, "day": 86400}
_STAMPS = {"min": "%Y%m%d%H%M", "hour": "%Y%m%d%H", "day": "%Y%m%d"}


class DlogFileHandler(logging.handlers.BaseRotatingHandler):
    """The original's log files (see the module docstring)."""

    def __init__(self, base: str, shift: str = "size", max_bytes: int = 100_000_000,
                 num: int = 100, keep: int = 7, clock: Any = time.time) -> None:
        self.base = base
        self.shift = shift
        self.max_bytes = max_bytes
        self.num = num
        self.keep = keep
        self.clock = clock
        #: set in a process that shares the files with another writer (the watchdog): reopen
        #: when the file was moved away by the other process.
        self.check_moved = False
        self._last_unlink = 0.0
        directory = os.path.dirname(base)
        if directory:
            os.makedirs(directory, exist_ok=True)
        super().__init__(self.current_name(), "a", encoding="utf-8", delay=False)

    def suffix(self, now: float) -> str:
        if self.shift == "size":
            return ""
        return "." + time.strftime(_STAMPS[self.shift], time.localtime(now))

    def current_name(self, now: float | None = None) -> str:
        return f"{self.base}{self.suffix(self.clock() if now is None else now)}.log"

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - stdlib API
        name = self.current_name()
        if name != self.baseFilename:
            self._switch(name)
            return False
        if self.stream is None:
            self.stream = self._open()
        if self.check_moved:
            try:
                moved = os.stat(self.baseFilename).st_ino != os.fstat(self.stream.fileno()).st_ino
            except OSError:
                moved = True
            if moved:
                self.stream.close()
                self.stream = self._open()
        if self.max_bytes <= 0:
            return False
        try:
            return self.stream.tell() >= self.max_bytes
        except (OSError, ValueError):
            return False

    def _switch(self, name: str) -> None:
        if self.stream is not None:
            self.stream.close()
        self.baseFilename = os.path.abspath(name)
        self.stream = self._open()
        self._unlink_expired()

    def doRollover(self) -> None:  # noqa: N802 - stdlib API
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        name = self.baseFilename
        if self.num == 1:
            with contextlib.suppress(OSError):
                os.unlink(name)
        else:
            last = self.num - 1 if self.num > 1 else self._count_existing(name)
            for i in range(last - 1, -1, -1):
                src = f"{name}.{i}" if i else name
                if os.path.exists(src):
                    with contextlib.suppress(OSError):
                        os.replace(src, f"{name}.{i + 1}")
        self.stream = self._open()

    @staticmethod
    def _count_existing(name: str) -> int:
        """num = 0: keep every file (the original counts the existing ones)."""
        i = 1
        while os.path.exists(f"{name}.{i}"):
            i += 1
        return i

    def _unlink_expired(self) -> None:
        if self.shift == "size" or self.keep <= 0:
            return
        period = _PERIODS[self.shift]
        now = self.clock()
        if now - self._last_unlink < period:
            return
        self._last_unlink = now
        oldest = self.suffix(now - period * self.keep)[1:]
        width = len(oldest)
        pattern = f"{glob.escape(self.base)}.{'[0-9]' * width}.log*"
        for path in glob.glob(pattern):
            stamp = path[len(self.base) + 1:len(self.base) + 1 + width]
            if stamp <= oldest:
                with contextlib.suppress(OSError):
                    os.unlink(path)


class AlertHandler(logging.Handler):
    """Sends FATAL records to the alertcenter by UDP (one datagram per record)."""

    def __init__(self, host: str, addr: tuple[str, int]) -> None:
        super().__init__(logging.CRITICAL)
        self.host = host
        self.addr = addr
        self._sock: socket.socket | None = None
        self._pid = 0

    def alert_text(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message}: {type(exc).__name__}: {exc}"
        message = message.replace("\r", " ").replace("\n", " ")
        return (f"{self.host}: [fatal]{record.filename}:{record.lineno}({record.funcName}): "
                f"{message}")

    def packet(self, record: logging.LogRecord) -> bytes:
        return build_alert(self.alert_text(record))

    def _socket(self) -> socket.socket:
        pid = os.getpid()
        if self._sock is None or self._pid != pid:
            family = socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
            self._pid = pid
        return self._sock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._socket().sendto(self.packet(record), self.addr)
        except OSError:
            pass
        except Exception:  # pragma: no cover - formatting errors
            self.handleError(record)

    def close(self) -> None:
        if self._sock is not None and self._pid == os.getpid():
            self._sock.close()
        self._sock = None
        super().close()


def build_alert(text: str) -> bytes:
    """magic + text + "\\n", cut to 10240 bytes (on a UTF-8 boundary, newline kept)."""
    data = text.encode("utf-8", "replace")
    room = ALERT_MAX_SIZE - len(ALERT_MAGIC) - 1
    if len(data) > room:
        data = data[:room].decode("utf-8", "ignore").encode()
    return ALERT_MAGIC + data + b"\n"


class LoggingSetup:
    """What :func:`setup_logging` installed: the level mask and the handlers."""

    def __init__(self, levels: LevelControl, handlers: list[logging.Handler]) -> None:
        self.levels = levels
        self.handlers = handlers

    def file_handlers(self) -> list[DlogFileHandler]:
        return [h for h in self.handlers if isinstance(h, DlogFileHandler)]

    def after_fork(self, shared: bool) -> None:
        """In a forked process: reopen the files; ``shared`` = another process writes them
        too (the watchdog side), so follow files that the other one shifts away."""
        for handler in self.file_handlers():
            handler.check_moved = shared
            if handler.stream is not None:
                handler.stream.close()
            handler.stream = handler._open()

    def close(self) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()


def setup_logging(log: LogSettings | None, alert: AlertConfig | None = None,
                  stderr: bool = False) -> LoggingSetup:
    """Replace the root logger's handlers with the original's log file (and alerts)."""
    levels = LevelControl(read_flag(log.flag) if log is not None else read_flag("fatal,error,warn,info"))
    formatter: logging.Formatter
    if log is not None and log.format == "json":
        formatter = JsonFormatter()
    else:
        formatter = DlogFormatter(pid=log.pid if log is not None else True)
    handlers: list[logging.Handler] = []
    if log is not None:
        handlers.append(DlogFileHandler(log.path, log.shift, log.max, log.num, log.keep))
    if stderr or log is None:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(levels)
    if alert is not None:
        alert_handler = AlertHandler(alert.host, alert.addr)
        alert_handler.addFilter(levels)
        handlers.append(alert_handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        with contextlib.suppress(Exception):
            old.close()
    for handler in handlers:
        root.addHandler(handler)
    levels.apply()
    return LoggingSetup(levels, handlers)
