"""The operator console: the original matchengine's ``cli`` port, answering as it did.

Why: operators and their scripts query the original's console with telnet or nc (``status``,
``balance list/get/summary``, ``market summary``, ``makeslice``) and parse its fixed-width
text, so the text is kept byte for byte (spec/cli.md): same headers, padding, usage lines and
libmpdec ``to_sci`` numbers.  The numbers in ``status`` are this project's real counters: the
operation log's uncommitted records, the history follower's backlog and the bus publisher's
unacknowledged messages per topic.

Protocol as the original's: one command per ``\\n``-terminated line (at most 4096 bytes), split
into words like ``sdssplitargs`` (Redis) does; several commands may share a connection; an empty
line gets no answer.  Hardened where the original was not (docs/compatibility.md): a line with
unbalanced quotes or longer than 4096 bytes gets an ``error:`` line (the latter also closes the
connection), idle connections are closed, and the number of connections is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal

from exchange_server.bus.base import TOPICS
from exchange_server.bus.publisher import BusPublisher
from exchange_server.common.config import ConfigError
from exchange_server.common.decimals import CONTEXT, ZERO
from exchange_server.matchengine.core.market import Market
from exchange_server.matchengine.core.model import ASK, BID, Side
from exchange_server.matchengine.service import MatchEngineService
from exchange_server.matchprocess.follower import FollowerProcess
from exchange_server.rpc.addr import SockAddr, parse_sock_addr

log = logging.getLogger("exchange_server.console")

#: The original's max packet size: a command line with its ``\n``.
MAX_LINE = 4096
#: Seconds a connection may stay silent (or not read its reply) before it is closed.
IDLE_TIMEOUT = 300.0
#: Connections served at once; more are told so and closed.
MAX_CONNECTIONS = 32
#: The embedded mode's default port (the original's sample config: ``tcp@127.0.0.1:7317``).
DEFAULT_PORT = 7317

Handler = Callable[[list[str]], Awaitable[str]]

# -- command-line words (sdssplitargs) -----------------------------------------------------------

#: C ``isspace``: skipped between words and required after a closing quote.
_SPACE = " \t\n\v\f\r"
#: What ends an unquoted word.
_WORD_END = " \t\n\r"
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}
_HEX = frozenset("0123456789abcdefABCDEF")


def split_args(line: str) -> list[str] | None:
    """The words of a command line as Redis' ``sdssplitargs`` splits them; None when quotes
    are unbalanced (or a closing quote is followed by something else than a space)."""
    line = line.split("\0", 1)[0]  # a C string ends there
    words: list[str] = []
    i = 0
    while True:
        while i < len(line) and line[i] in _SPACE:
            i += 1
        if i >= len(line):
            return words
        word, i = _word(line, i)
        if word is None:
            return None
        words.append(word)


def _word(line: str, i: int) -> tuple[str | None, int]:
    out: list[str] = []
    quote = ""
    while i < len(line):
        c = line[i]
        if quote == '"':
            if c == "\\" and line[i + 1:i + 2] == "x" and len(line) > i + 3 and \
                    line[i + 2] in _HEX and line[i + 3] in _HEX:
                out.append(chr(int(line[i + 2:i + 4], 16)))
                i += 4
                continue
            if c == "\\" and i + 1 < len(line):
                out.append(_ESCAPES.get(line[i + 1], line[i + 1]))
                i += 2
                continue
        elif quote == "'" and c == "\\" and line[i + 1:i + 2] == "'":
            out.append("'")
            i += 2
            continue
        if quote and c == quote:
            if i + 1 < len(line) and line[i + 1] not in _SPACE:
                return None, i
            return "".join(out), i + 1
        if not quote and c in _WORD_END:
            return "".join(out), i + 1
        if not quote and c in "\"'":
            quote = c
        else:
            out.append(c)
        i += 1
    return (None, i) if quote else ("".join(out), i)


_STRTOUL = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_ULONG = 2 ** 64


def user_id_arg(text: str) -> int:
    """``(uint32_t) strtoul(text, NULL, 0)``, as the original reads ``balance get USER``:
    decimal, 0x-hex or 0-octal prefix, anything unparsable is 0, out of range wraps."""
    match = _STRTOUL.match(text)
    if match is None:
        return 0
    sign, digits = match.groups()
    base = 16 if digits[:2] in ("0x", "0X") else 8 if digits.startswith("0") else 10
    significant = (digits[2:] if base == 16 else digits).lstrip("0") or "0"
    value = int(significant, base) if len(significant) <= 24 else _ULONG - 1
    value = min(value, _ULONG - 1)
    if sign == "-":
        value = -value % _ULONG
    return value & 0xFFFFFFFF


# -- the commands ---------------------------------------------------------------------------------

def _sum(values: list[Decimal]) -> Decimal:
    """libmpdec-style sum from an exact zero (so an empty sum reads ``0``)."""
    total = ZERO
    for value in values:
        total = CONTEXT.add(total, value)
    return total


def _balance_row(user: int, asset: str, kind: str, amount: Decimal) -> str:
    return f"{user:<10} {asset:<16} {kind:<10} {amount}\n"


BALANCE_HEADER = f"{'user':<10} {'asset':<16} {'type':<10} amount\n"
SUMMARY_HEADER = (f"{'asset':<16} {'total':<30} {'available':<10} {'available':<30} "
                  f"{'freeze':<10} {'freeze':<30}\n")
MARKET_HEADER = (f"{'market':<10} {'ask count':<10} {'ask amount':<20} {'bid count':<10} "
                 f"{'bid amount':<20}\n")


class Console:
    """The commands, answered from the running matchengine (its event loop, its thread)."""

    def __init__(self, service: MatchEngineService, follower: FollowerProcess | None = None,
                 publisher: BusPublisher | None = None) -> None:
        self.service = service
        self.follower = follower
        self.publisher = publisher
        #: registered commands (``help`` lists them; it is not one of them, as in the original)
        self.commands: dict[str, Handler] = {
            "status": self.status,
            "balance": self.balance,
            "market": self.market,
            "makeslice": self.makeslice,
        }

    async def execute(self, line: bytes) -> bytes:
        """The reply to one command line (empty: send nothing)."""
        args = split_args(line.decode("latin-1"))
        if args is None:
            return b"error: unbalanced quotes in the command line\n"
        if not args:
            return b""
        if args[0] == "help":
            return "".join(f"{name}\n" for name in self.commands).encode()
        handler = self.commands.get(args[0])
        if handler is None:
            return b"command not found\n"
        try:
            reply = await handler(args[1:])
        except Exception:
            log.exception("console command %r failed", args[0])
            return b"error: internal error (see the matchengine's log)\n"
        return reply.encode()

    # -- status -----------------------------------------------------------------------------------

    async def status(self, args: list[str]) -> str:
        service, engine = self.service, self.service.engine
        lines = [
            f"order last ID: {engine.order_id}",
            f"deals last ID: {engine.deal_id}",
            f"operlog last ID: {service.oper_id}",
            f"operlog pending: {service.oper_id - service.durable_id}",
            f"history pending {self.history_pending()}",
        ]
        lines += [f"message {topic} pending: {self.message_pending(topic)}" for topic in TOPICS]
        return "".join(f"{line}\n" for line in lines)

    def history_pending(self) -> int:
        """Operations the history follower has not applied yet plus the history rows it has
        not written yet (0: the history database holds everything)."""
        if self.follower is None:
            return 0
        behind = max(0, self.service.oper_id - self.follower.applied.value)
        return behind + max(0, self.follower.pending.value)

    def message_pending(self, topic: str) -> int:
        return self.publisher.pending(topic) if self.publisher is not None else 0

    # -- balance ----------------------------------------------------------------------------------

    async def balance(self, args: list[str]) -> str:
        if args and args[0] == "list":
            return self.balance_list(args[1] if len(args) == 2 else None)
        if args and args[0] == "get":
            return self.balance_get(args)
        if args and args[0] == "summary":
            return self.balance_summary()
        return "usage: balance list/get/summary\n"

    def balance_list(self, asset: str | None) -> str:
        rows = [BALANCE_HEADER]
        for (user, name), (available, frozen) in self.service.engine.balances.accounts.items():
            if asset is not None and name != asset:
                continue
            if available:
                rows.append(_balance_row(user, name, "available", available))
            if frozen:
                rows.append(_balance_row(user, name, "freeze", frozen))
        return "".join(rows)

    def balance_get(self, args: list[str]) -> str:
        if len(args) != 2:
            return "usage: balance get user_id\n"
        user = user_id_arg(args[1])
        accounts = self.service.engine.balances.accounts
        rows = [BALANCE_HEADER]
        for name in self.service.engine.assets:
            account = accounts.get((user, name))
            if account is None:
                continue
            if account[0]:
                rows.append(_balance_row(user, name, "available", account[0]))
            if account[1]:
                rows.append(_balance_row(user, name, "freeze", account[1]))
        return "".join(rows)

    def balance_summary(self) -> str:
        per_asset: dict[str, tuple[list[Decimal], list[Decimal]]] = {
            name: ([], []) for name in self.service.engine.assets}
        for (_, name), (available, frozen) in self.service.engine.balances.accounts.items():
            lists = per_asset.get(name)
            if lists is None:
                continue
            if available:
                lists[0].append(available)
            if frozen:
                lists[1].append(frozen)
        rows = [SUMMARY_HEADER]
        for name, (availables, frozens) in per_asset.items():
            total = _sum(availables + frozens)
            rows.append(f"{name:<16} {total!s:<30} {len(availables):<10} "
                        f"{_sum(availables)!s:<30} {len(frozens):<10} {_sum(frozens)!s:<30}\n")
        return "".join(rows)

    # -- market -----------------------------------------------------------------------------------

    async def market(self, args: list[str]) -> str:
        if args and args[0] == "summary":
            return self.market_summary()
        return "usage market summary\n"

    def market_summary(self) -> str:
        rows = [MARKET_HEADER]
        for market in self.service.engine.markets.values():
            asks = _lefts(market, ASK)
            bids = _lefts(market, BID)
            rows.append(f"{market.name:<10} {len(asks):<10} {_sum(asks)!s:<20} "
                        f"{len(bids):<10} {_sum(bids)!s:<20}\n")
        return "".join(rows)

    # -- makeslice --------------------------------------------------------------------------------

    async def makeslice(self, args: list[str]) -> str:
        """Take a slice now and answer once it is published."""
        await self.service.make_slice_now()
        return "OK\n"


def _lefts(market: Market, side: Side) -> list[Decimal]:
    return [order.left for order in market.side_orders(side)]


# -- the listener ---------------------------------------------------------------------------------

def parse_console_address(text: str) -> SockAddr:
    """The ``cli`` config value: ``tcp@ip:port`` or ``stream@/unix/path``."""
    try:
        addr = parse_sock_addr(text)
    except ValueError as e:
        raise ConfigError(f"cli: {e}") from None
    if addr.kind not in ("tcp", "stream"):
        raise ConfigError(f"cli: {text!r}: the console listens on tcp@ip:port or stream@/path")
    return addr


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ConsoleServer:
    """Serves a :class:`Console` on one address with asyncio streams."""

    def __init__(self, console: Console, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.console = console
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._server: asyncio.AbstractServer | None = None
        self._unix_path: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.address = ""

    async def start(self, addr: SockAddr) -> None:
        try:
            await self._listen(addr)
        except OSError as e:
            raise OSError(e.errno, f"console: cannot listen on {addr}: {e.strerror or e}") from e
        log.info("console listening on %s", self.address)
        if addr.kind == "tcp" and not _is_loopback(addr.host):
            log.warning("console on %s, not a loopback address: whoever reaches it reads every "
                        "balance and can trigger slices", self.address)

    async def _listen(self, addr: SockAddr) -> None:
        # limit: the longest line is MAX_LINE bytes with its "\n" (readuntil counts without)
        if addr.kind == "stream":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(addr.path)
            self._server = await asyncio.start_unix_server(self._serve, addr.path,
                                                           limit=MAX_LINE - 1)
            self._unix_path = addr.path
            self.address = str(addr)
        else:
            self._server = await asyncio.start_server(self._serve, addr.host or None, addr.port,
                                                      limit=MAX_LINE - 1, reuse_address=True)
            host, port = self._server.sockets[0].getsockname()[:2]
            self.address = str(SockAddr("tcp", host, port))

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2]) if self.address.startswith("tcp@") else 0

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unix_path)
            self._unix_path = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self._tasks) >= self.max_connections:
                await self._send(writer, b"error: too many console connections\n")
                return
            self._tasks.add(task)
            await self._session(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), self.idle_timeout)
            except asyncio.IncompleteReadError:
                return  # closed; a last line without "\n" is never a command (as the original)
            except asyncio.LimitOverrunError:
                await self._send(writer, f"error: command line longer than {MAX_LINE} bytes\n"
                                 .encode())
                return
            reply = await self.console.execute(line)
            if reply:
                await self._send(writer, reply)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.idle_timeout)
