"""Durable storage of the matchengine: the operation log and the snapshots ("slices").

One interface, two backends: SQLite files under the data directory (embedded mode) and
MySQL/MariaDB with the original's ``trade_log`` layout (production).  The service only talks to
:class:`EngineStore`; the backends live in ``store_sqlite`` and ``store_mysql``.

Threading: a store object is used by one thread at a time.  Appends run in the log writer's
thread; start-up reads run before it starts.  After ``fork()`` the child must not touch the
parent's connection: it calls :meth:`EngineStore.clone` and uses the fresh copy.

Integrity: a byte changed on disk must not silently change balances at the next start.  Every
operation log record this project writes carries ``checksum`` = :func:`record_checksum`, a
CRC-32 over the stored text of its id, time and detail, and every slice this project publishes
carries in ``slice_history.checksum`` a :func:`state_checksum` over its rows; both are verified
when read.  A row whose checksum is NULL (written by the original ViaBTC server, or by this
project before the column existed) is accepted unverified.  CRC-32 detects every change of one
digit or a truncation; it is no defence against a deliberate forger with write access to the
database, which nothing stored next to the data could be.
"""

from __future__ import annotations

import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from exchange_server.common.floattext import known_text
from exchange_server.matchengine.core.engine import EngineState


class OperRecord(NamedTuple):
    """One logged operation: the original's operlog row.

    ``method`` is the log name (``update_balance``, ``limit_order``, ``market_order``,
    ``cancel_order``) and ``params`` the request params exactly as received.  ``time`` is the
    command's time, which replay feeds back to the engine, so restored orders keep their times.

    A NamedTuple, not a frozen dataclass: one is made per write on the event loop's thread,
    and a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``.
    """

    id: int
    time: float
    method: str
    params: list[Any]


@dataclass(frozen=True)
class SliceInfo:
    """A row of ``slice_history``: the slice taken at ``time`` covers operations up to
    ``end_oper_id`` and the id counters at that point."""

    time: int
    end_oper_id: int
    end_order_id: int
    end_deals_id: int
    #: :func:`state_checksum` of the slice's rows; None for a slice without one (the original's)
    checksum: int | None = field(default=None, compare=False)


class StoreError(Exception):
    """The store cannot be used (corrupt log, gap in ids, unreachable database)."""


class Deposed(StoreError):
    """A write fenced off: the leader lease's epoch is no longer the one this process holds
    (another matchengine took over, matchprocess/leader.py).  Nothing of the write was
    committed, and no retry can succeed."""


class OperLogGap(StoreError):
    """The operation log skips an id: the one error for a gap, whoever replays the log
    (restore, the rebuild after a storage failure, the history follower)."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(f"operation log gap: expected id {expected}, found {found}")
        self.expected = expected
        self.found = found


#: thin_slices keeps this many of the newest slices whatever their age.
SLICES_KEPT_NEWEST = 2

#: What an operator reads after a damaged-record error (docs/operations.md has the procedure).
REPAIR_HINT = "see \"Damaged operation log or slice\" in docs/operations.md"


def record_checksum(oper_id: int, time: float, detail: str) -> int:
    """CRC-32 of an operation log record as stored: ``"<id> <repr(time)> <detail>"``.

    ``detail`` is the stored text whatever encoder produced it; the time is a double, stored and
    read back bit-exact, so ``repr`` gives the same text on both sides.  A float's text is
    the one the reply's order object wrote, when it did (floattext: its id looked up)."""
    text = known_text(time) if type(time) is float else repr(float(time))
    # the CRC of the head then the detail is the CRC of the two joined: one text, one encode
    return zlib.crc32(f"{oper_id} {text} {detail}".encode())


def check_record(oper_id: int, time: float, detail: Any, stored: Any) -> None:
    """StoreError unless a record read back matches its stored checksum (None: unchecked)."""
    if not isinstance(time, (int, float)):
        raise StoreError(f"operation log record id {oper_id} is damaged (time {time!r} is not a"
                         f" number); {REPAIR_HINT}")
    if stored is None:
        return
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    if not isinstance(detail, str) or record_checksum(oper_id, time, detail) != int(stored):
        raise StoreError(f"operation log record id {oper_id} is damaged (checksum mismatch:"
                         f" changed or truncated on disk); {REPAIR_HINT}")


def order_row_crc(oid: int, market: str, source: str | None, kind: int, side: int, user: int,
                  ctime: float, mtime: float, texts: Sequence[str], option: int,
                  client_id: str | None) -> int:
    """One order's term of :func:`state_checksum`, from its stored texts (``texts``: the
    decimals in ORDER_DECIMALS order as ``str(Decimal)`` wrote them).  A slice reader sums
    these over the rows it reads instead of formatting every loaded Decimal again."""
    # the text of repr(("o", oid, ..., client_id)), formatted directly (twice as fast)
    (price, amount, taker_fee, maker_fee, left, freeze, deal_stock, deal_money,
     deal_fee) = texts
    return zlib.crc32(
        f"('o', {oid!r}, {market!r}, {source!r}, {kind!r}, {side!r}, {user!r}, {ctime!r},"
        f" {mtime!r}, {price!r}, {amount!r}, {taker_fee!r}, {maker_fee!r}, {left!r},"
        f" {freeze!r}, {deal_stock!r}, {deal_money!r}, {deal_fee!r}, {option!r},"
        f" {client_id!r})".encode())


def decimals_of_texts(texts: Iterable[str]) -> dict[str, Decimal]:
    """Each distinct text parsed once: a slice's decimals repeat (prices, fee rates, zeros),
    so loading shares one immutable Decimal per text (faster, and less memory).  ArithmeticError
    for a text that is not a number."""
    return {text: Decimal(text) for text in set(texts)}


def balance_row_crc(user: int, asset: str, kind: int, text: str) -> int:
    """One balance's term of :func:`state_checksum` from its stored text: the text of
    ``repr(("b", user, asset, kind, text))``."""
    return zlib.crc32(f"('b', {user!r}, {asset!r}, {kind!r}, {text!r})".encode())


def state_checksum(state: Any, orders_crc: int | None = None,
                   balances_crc: int | None = None) -> int:
    """A checksum of a slice's content, independent of row order (tables are read back by id,
    not in the order they were written): the sum mod 2**32 of the CRC-32 of each row's text.
    ``orders_crc`` / ``balances_crc``: the sums of the orders' / balances' terms
    (:func:`order_row_crc`, :func:`balance_row_crc`), already computed by the reader."""
    total = 0
    crc = zlib.crc32
    if orders_crc is not None:
        total += orders_crc
    else:
        for o in state.orders:
            total += order_row_crc(o.id, o.market, o.source, o.type, o.side, o.user,
                                   float(o.ctime), float(o.mtime),
                                   [str(o.price), str(o.amount), str(o.taker_fee),
                                    str(o.maker_fee), str(o.left), str(o.freeze),
                                    str(o.deal_stock), str(o.deal_money), str(o.deal_fee)],
                                   int(o.option), o.client_id)
    for s in state.stops:
        total += crc(repr(("s", s.id, s.market, s.source, s.type, s.side, s.user, float(s.ctime),
                           float(s.mtime), str(s.stop_price), str(s.price), str(s.amount),
                           str(s.taker_fee), str(s.maker_fee), int(s.option), s.client_id,
                           int(s.state), str(s.freeze))).encode())
    if balances_crc is not None:
        total += balances_crc
    else:
        for user, asset, kind, value in state.balances:
            total += balance_row_crc(int(user), asset, int(kind), str(value))
    for user, asset, business, business_id, when in state.updates:
        total += crc(repr(("u", int(user), asset, business, int(business_id),
                           float(when))).encode())
    for kind, name, detail in state.config:
        total += crc(repr(("c", kind, name, json.dumps(detail, sort_keys=True))).encode())
    return (total + len(state.orders) + len(state.balances)) & 0xFFFFFFFF


def check_slice(info: SliceInfo, state: Any, orders_crc: int | None = None,
                balances_crc: int | None = None) -> None:
    """StoreError unless a loaded slice matches the checksum of its history row
    (``orders_crc``, ``balances_crc``: see :func:`state_checksum`)."""
    if (info.checksum is not None
            and state_checksum(state, orders_crc, balances_crc) != info.checksum):
        raise StoreError(f"slice {info.time} (slice_history, end_oper_id {info.end_oper_id}) is"
                         f" damaged (checksum mismatch); {REPAIR_HINT}")


class EngineStore(ABC):
    @abstractmethod
    def open(self) -> None:
        """Connect and create the schema if it is missing (idempotent)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def clone(self) -> EngineStore:
        """A new, unopened store with the same settings (for a forked child)."""

    def takeover_point(self) -> int:
        """The last operation written by an original ViaBTC matchengine whose database this
        store took over (records at or below it follow the original's integer rules on replay,
        matchengine/original.py); 0 when there is none."""
        return 0

    # -- operation log ---------------------------------------------------------------------------

    @abstractmethod
    def append(self, records: Sequence[OperRecord]) -> None:
        """Write the records in one transaction; they are durable when this returns."""

    @abstractmethod
    def last_oper_id(self) -> int:
        """The highest logged id, 0 when the log is empty."""

    @abstractmethod
    def read_operlog(self, after_id: int) -> Iterator[OperRecord]:
        """Every record with id > after_id in id order."""

    def read_operlog_rows(self, after_id: int) -> Iterator[list[tuple[int, float, str, Any]]]:
        """The records with id > after_id in id order, as pages of ``(id, time, method,
        params)`` tuples: what replay reads (a backend reads them in bulk, without building an
        OperRecord each).  This default pages :meth:`read_operlog`."""
        page: list[tuple[int, float, str, Any]] = []
        for r in self.read_operlog(after_id):
            page.append((r.id, r.time, r.method, r.params))
            if len(page) >= 1000:
                yield page
                page = []
        if page:
            yield page

    @abstractmethod
    def reset_to(self, oper_id: int) -> None:
        """Make the store hold nothing beyond operation ``oper_id``, proving it can write.

        Used when the storage answers again after a failed or timed-out commit: records
        beyond the last acknowledged id (a timed-out commit may have landed after all) and the
        slices that cover them are deleted, and a probe row is written (a full disk answers
        reads but refuses this).  StoreError while the storage still fails."""

    # -- slices -----------------------------------------------------------------------------------

    @abstractmethod
    def latest_slice(self) -> SliceInfo | None:
        """The newest published slice."""

    @abstractmethod
    def list_slices(self) -> list[SliceInfo]:
        """All published slices, oldest first."""

    @abstractmethod
    def read_slice(self, info: SliceInfo) -> EngineState:
        """Load a published slice's orders, balances and dedup entries (counters from info)."""

    @abstractmethod
    def write_slice_data(self, info: SliceInfo, state: EngineState) -> None:
        """Write the slice's tables (replacing any half-written one of the same time).  The
        slice is not visible to ``latest_slice`` until :meth:`publish_slice`."""

    @abstractmethod
    def publish_slice(self, info: SliceInfo) -> None:
        """Insert the ``slice_history`` row, making the slice the newest one."""

    @abstractmethod
    def delete_slice(self, info: SliceInfo) -> None:
        """Drop a slice's tables and its history row."""

    @abstractmethod
    def drop_unpublished_slices(self, before: int) -> list[int]:
        """Drop the tables of every slice older than ``before`` that has no ``slice_history``
        row (a slice writer killed before it published leaves them); their times.  A
        published slice is never touched; ``before`` must be old enough that no writer can
        still be at work on such a slice (see the service's ``SLICE_ABANDONED_AFTER``)."""

    def delete_old_slices(self, now: int, keeptime: int) -> None:
        """The original's retention: once a slice at least as new as ``now - keeptime`` exists,
        every older slice is removed."""
        slices = self.list_slices()
        limit = now - keeptime
        if not any(s.time >= limit for s in slices):
            return
        for s in slices:
            if s.time < limit:
                self.delete_slice(s)

    def thin_slices(self, interval: int, newest: int = SLICES_KEPT_NEWEST) -> None:
        """Slices by operation count come every few seconds under load; without thinning the
        retention window would fill with them.  Kept: the ``newest`` most recent slices (what
        a restart loads) and the oldest slice of every ``interval`` period (as many as time
        slices alone leave, for a sink that is far behind); the others are removed."""
        slices = self.list_slices()
        periods: set[int] = set()
        for s in slices[:max(0, len(slices) - newest)]:
            period = s.time // interval
            if period in periods:
                self.delete_slice(s)
            periods.add(period)
