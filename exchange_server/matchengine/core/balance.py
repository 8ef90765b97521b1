"""Per-user balances: available and frozen amounts of each asset.

An account (user, asset) holds ``[available, frozen]`` in one list, so the matching loop finds
both with a single lookup.  Like the original, every stored value is truncated to the asset's
``prec_save`` and a balance that becomes zero counts as absent: an account whose two values
are both zero is removed, and zero values are never reported (queries, summaries, slices).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import ROUND_DOWN, Decimal
from itertools import repeat
from operator import sub

from exchange_server.common.decimals import ZERO, quantum
from exchange_server.matchengine.core.arith import CONTEXT
from exchange_server.matchengine.core.config import AssetSpec
from exchange_server.matchengine.core.model import Totals

AVAILABLE = 1
FREEZE = 2

#: ``value.quantize(q, ROUND_DOWN, CONTEXT)`` (CONTEXT rounds down): the same result, without
#: the method's keyword argument parsing and rounding lookup, on every balance change
_quantize = CONTEXT.quantize


# Comparisons are with the Decimal ZERO, never the int 0: a Decimal compared with an int
# converts the int into a new Decimal first (twice the cost, on every balance change).  Where a
# deal tests a new value for ``> ZERO`` (trade, freeze), ``value and not value.is_signed()``
# says the same of any finite value for 60% of a comparison's cost (which looks up the
# thread's decimal context): 100 instructions, three to four times an order.


class BalanceError(Exception):
    """An impossible balance operation inside the engine: a bug, never a user error."""


def _subtraction(index: int, doc: str) -> Callable[[Balances, int, str, Decimal], Decimal]:
    """A method taking ``amount`` from part ``index`` of an account (0 available, 1 frozen) and
    returning its new total.  A part that reaches zero is the ZERO object, and an account
    whose two parts are zero is removed; going negative is a :class:`BalanceError`."""
    other = 1 - index

    def subtract(self: Balances, user: int, asset: str, amount: Decimal) -> Decimal:
        key = (user, asset)
        account = self.accounts.get(key)
        if account is None:
            if amount:
                raise BalanceError(f"balance of user {user} {asset} would go negative")
            return ZERO
        value = account[index] - amount
        if value > ZERO:
            account[index] = _quantize(value, self._quant[asset])
        elif value == ZERO:
            account[index] = ZERO
            if not account[other]:
                del self.accounts[key]
                return ZERO
        else:
            raise BalanceError(f"balance of user {user} {asset} would go negative")
        frozen = account[1]  # _total(account), inlined: this runs for every balance change
        return account[0] if frozen is ZERO else account[0] + frozen

    subtract.__doc__ = doc
    return subtract


class Balances:
    def __init__(self, assets: Sequence[AssetSpec]) -> None:
        self.assets = {a.name: a for a in assets}
        self._quant = {a.name: quantum(a.prec_save) for a in assets}
        self.accounts: dict[tuple[int, str], list[Decimal]] = {}

    def add_asset(self, asset: AssetSpec) -> None:
        self.assets[asset.name] = asset
        self._quant[asset.name] = quantum(asset.prec_save)

    def get_available(self, user: int, asset: str) -> Decimal:
        account = self.accounts.get((user, asset))
        return account[0] if account is not None else ZERO

    def total(self, user: int, asset: str) -> Decimal:
        account = self.accounts.get((user, asset))
        return _total(account) if account is not None else ZERO

    def add(self, user: int, asset: str, amount: Decimal) -> Decimal:
        """available += amount (amount >= 0).  Returns the account's new total (as ``total``:
        the matching loop records it with every change)."""
        key = (user, asset)
        account = self.accounts.get(key)
        if account is None:
            if not amount:
                return ZERO
            account = self.accounts[key] = [
                _quantize(amount, self._quant[asset]), ZERO]
        else:
            account[0] = _quantize(account[0] + amount, self._quant[asset])
        frozen = account[1]  # _total(account), inlined: this runs for every balance change
        return account[0] if frozen is ZERO else account[0] + frozen

    # sub and sub_frozen: one body, made twice by _subtraction (each call in a deal would
    # otherwise go through a shared helper: one Python call more, three to four per order).
    sub = _subtraction(0, "available -= amount; the caller has checked that it is enough.  "
                          "Returns the new total.")
    sub_frozen = _subtraction(1, "frozen -= amount (a resting order's funds leave in a deal).  "
                                 "Returns the new total.")

    def trade(self, user: int, out_asset: str, out: Decimal, from_frozen: bool, in_asset: str,
              got: Decimal, fee: Decimal) -> Totals:
        """One side of a deal: ``sub`` (or ``sub_frozen``) ``out`` of ``out_asset``, ``add``
        ``got`` of ``in_asset``, then ``sub`` the ``fee`` from it if there is one; the account's
        parts after each of the three (:data:`Totals`: the last pair equals the second without
        a fee, a removed account's parts are ZERO), whose sums (``model.total_of``) are the new
        totals.

        Why one method: a deal makes these three changes for each of its two orders, and one
        call instead of three (and one account lookup for the asset both received and paid as
        a fee) is a tenth of a deal's cost.  It is exactly those calls, in that order.  Why
        the parts and not their sums: only the balance history adds them up (``total_of``), and
        the six additions a deal would make here were 2% of an order placed."""
        accounts = self.accounts
        quant = self._quant
        key = (user, out_asset)
        account = accounts.get(key)
        if account is None:
            if out:
                raise BalanceError(f"balance of user {user} {out_asset} would go negative")
            out_available = out_frozen = ZERO
        else:
            index = 1 if from_frozen else 0
            value = account[index] - out
            if value and not value.is_signed():
                account[index] = _quantize(value, quant[out_asset])
            elif value < ZERO:
                raise BalanceError(f"balance of user {user} {out_asset} would go negative")
            elif account[1 - index]:
                account[index] = ZERO
            else:  # both parts zero: the account goes (its total is ZERO)
                del accounts[key]
                account = [ZERO, ZERO]
            out_available, out_frozen = account
        key = (user, in_asset)
        account = accounts.get(key)
        q = quant[in_asset]
        if account is None:
            if not got:
                if fee:
                    raise BalanceError(f"balance of user {user} {in_asset} would go negative")
                return out_available, out_frozen, ZERO, ZERO, ZERO, ZERO
            account = accounts[key] = [_quantize(got, q), ZERO]
        else:
            account[0] = _quantize(account[0] + got, q)
        available, frozen = account
        if not fee:
            return out_available, out_frozen, available, frozen, available, frozen
        value = available - fee
        if value and not value.is_signed():
            account[0] = _quantize(value, q)
        elif value == ZERO:
            account[0] = ZERO
            if not frozen:
                del accounts[key]
                return out_available, out_frozen, available, frozen, ZERO, ZERO
        else:
            raise BalanceError(f"balance of user {user} {in_asset} would go negative")
        return out_available, out_frozen, available, frozen, account[0], frozen

    def freeze(self, user: int, asset: str, amount: Decimal) -> None:
        """Move ``amount`` from available to frozen.  (a subtraction then an add, written out: this
        runs for every order that rests.)  An account whose available part empties while
        nothing was frozen is removed and filed anew, as the original does: it moves to the end
        of the listing."""
        key = (user, asset)
        account = self.accounts.get(key)
        if account is None:
            if amount:
                raise BalanceError(f"balance of user {user} {asset} would go negative")
            return
        quant = self._quant[asset]
        value = account[0] - amount
        if value and not value.is_signed():
            account[0] = _quantize(value, quant)
        elif value == ZERO:
            account[0] = ZERO
            if not account[1]:
                del self.accounts[key]
                if amount:
                    self.accounts[key] = [ZERO, _quantize(amount, quant)]
                return
        else:
            raise BalanceError(f"balance of user {user} {asset} would go negative")
        account[1] = _quantize(account[1] + amount, quant)

    def unfreeze(self, user: int, asset: str, amount: Decimal) -> None:
        """Move ``amount`` from frozen back to available."""
        self.sub_frozen(user, asset, amount)
        self.add(user, asset, amount)

    def set(self, user: int, asset: str, kind: int, amount: Decimal) -> None:
        """Load a value from a snapshot."""
        key = (user, asset)
        account = self.accounts.get(key)
        if account is None:
            account = self.accounts[key] = [ZERO, ZERO]
        account[kind - 1] = amount.quantize(self._quant[asset], ROUND_DOWN, CONTEXT) if amount else ZERO
        if not account[0] and not account[1]:
            del self.accounts[key]

    def load(self, rows: Sequence[tuple[int, str, int, Decimal]]) -> None:
        """Load a snapshot's values, (user, asset, kind, amount) of known assets: exactly
        ``set`` for each row in turn.  Why: a restart loads every balance (tens of thousands
        to millions); when the balances start empty and every row is a plain non-zero value
        of kind AVAILABLE or FREEZE (what a slice holds), the accounts are built with C-level
        passes, no Python step per row.  Anything else takes ``set`` row by row."""
        if self.accounts or not rows:
            self._load_each(rows)
            return
        users, assets, kinds, amounts = zip(*rows, strict=True)
        if not set(kinds) <= {AVAILABLE, FREEZE}:
            self._load_each(rows)
            return
        values = list(map(Decimal.quantize, amounts, map(self._quant.__getitem__, assets),
                          repeat(ROUND_DOWN), repeat(CONTEXT)))
        if not all(values):  # a zero value: set's rules for it (and perhaps a removal)
            self._load_each(rows)
            return
        keys = list(zip(users, assets, strict=True))
        accounts = self.accounts
        # accounts in the order their first row comes, as set creates them
        accounts.update(zip(keys, map(list, repeat((ZERO, ZERO), len(keys))), strict=True))
        deque(map(list.__setitem__, map(accounts.__getitem__, keys),
                  map(sub, kinds, repeat(1)), values), 0)

    def _load_each(self, rows: Iterable[tuple[int, str, int, Decimal]]) -> None:
        for user, asset, kind, amount in rows:
            self.set(user, asset, kind, amount)

    def items(self) -> Iterator[tuple[int, str, int, Decimal]]:
        """Every non-zero balance as (user, asset, kind, amount): available ones first."""
        for (user, asset), account in self.accounts.items():
            if account[0]:
                yield user, asset, AVAILABLE, account[0]
        for (user, asset), account in self.accounts.items():
            if account[1]:
                yield user, asset, FREEZE, account[1]


def _total(account: list[Decimal]) -> Decimal:
    """available + frozen.  Stored values have an exponent of -prec_save <= 0, so adding the
    exponent-0 ZERO would change nothing, not even the exponent: it is skipped (the common
    case)."""
    available, frozen = account
    return available if frozen is ZERO else available + frozen
