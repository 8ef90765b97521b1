"""Exact decimal arithmetic with the original's rounding and text format.

The original links libmpdec (the same library behind CPython's ``decimal``), uses ROUND_DOWN
everywhere and prints with "to-sci-string".  We keep all of that, but run with 60 significant
digits instead of decimal128's 34 so that no realistic product or sum is ever rounded: the only
rounding that happens is the explicit truncation to a precision.
"""

from __future__ import annotations

import decimal
import re
from decimal import ROUND_DOWN, Decimal
from typing import Any

CONTEXT = decimal.Context(
    prec=60,
    rounding=ROUND_DOWN,
    Emax=999_999,
    Emin=-999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

ZERO = Decimal(0)
ONE = Decimal(1)

#: Inputs with this many integer digits or more (at or above 10**(MAX_INTEGER_DIGITS - 1)) are
#: refused: "fewer than 24 integer digits" (docs/compatibility.md); the history tables cannot
#: store more.
MAX_INTEGER_DIGITS = 24

#: The longest decimal text we are willing to parse.
MAX_TEXT_LENGTH = 80

# ASCII digits only: Python's Decimal() would also take underscores, spaces, NaN and Unicode digits.
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,6})?\Z")

_QUANTS = [Decimal(1).scaleb(-p) for p in range(0, 41)]


def use_engine_context() -> None:
    """Install the engine's context in the calling thread (operators use the thread context)."""
    decimal.setcontext(CONTEXT)


def quantum(prec: int) -> Decimal:
    """The Decimal 1e-prec, as used by quantize()."""
    return _QUANTS[prec]


def truncate(value: Decimal, prec: int) -> Decimal:
    """Truncate toward zero to ``prec`` decimal places (the original's mpd_rescale)."""
    return value.quantize(_QUANTS[prec], rounding=ROUND_DOWN, context=CONTEXT)


#: Parsed request decimals by (text, prec): prices, amounts and fee rates repeat a lot, and a
#: dict lookup is several times cheaper than regex + Decimal() + quantize.  Decimals are
#: immutable, so sharing them is safe.  Cleared when full.
_PARSE_CACHE: dict[tuple[str, int | None], Decimal] = {}
_PARSE_CACHE_MAX = 65536


def parse(text: object, prec: int | None = None) -> Decimal | None:
    """Parse a decimal string from a request, truncated to ``prec`` places.

    Returns None for anything that is not a finite plain decimal number of sane size, which the
    callers turn into "invalid argument".  Negative zero is normalised to zero.
    """
    if type(text) is not str:
        return None
    key = (text, prec)
    value = _PARSE_CACHE.get(key)
    if value is None:
        value = _parse(text, prec)
        if value is None:
            return None
        if len(_PARSE_CACHE) >= _PARSE_CACHE_MAX:
            _PARSE_CACHE.clear()
        _PARSE_CACHE[key] = value
    return value


def _parse(text: str, prec: int | None) -> Decimal | None:
    if len(text) > MAX_TEXT_LENGTH or not _DECIMAL_RE.match(text):
        return None
    value = Decimal(text)
    if value and value.adjusted() + 1 >= MAX_INTEGER_DIGITS:  # adjusted() = digits - 1
        return None
    if prec is not None:
        value = value.quantize(_QUANTS[prec], rounding=ROUND_DOWN, context=CONTEXT)
    if not value and value.is_signed():
        value = value.copy_abs()
    return value


#: ``normalize`` that never rounds, clamps or goes subnormal unnoticed: any such signal is
#: trapped, and ``fmt`` then takes the text of the value itself.
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    rounding=ROUND_DOWN,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Rounded, decimal.Clamped,
           decimal.Subnormal],
)
_normalized = _EXACT.normalize


def fmt(value: Decimal) -> str:
    """The original's output format: to-sci-string, lowercase ``e``, trailing zeros stripped.

    Zeros are only stripped when the text has no exponent, so values below 1e-6 keep forms like
    ``1e-8`` or ``0e-16`` exactly as the C server prints them.

    Why through ``normalize`` first: stripping the zeros of the text (``rstrip("0")``) costs
    per zero, and a deal's amounts carry a dozen (``57.0570000000000000``); every order object
    written formats up to four of them.  A non-zero value whose normalized text has no
    exponent is exactly that stripped text (normalizing drops the coefficient's trailing zeros
    and keeps the adjusted exponent, so the plain or scientific form is the same, and a zero
    stripped past the point shows as ``E+``); zeros, those with an exponent and anything
    ``normalize`` would signal for take the text of the value itself.
    """
    if value:
        try:
            text = str(_normalized(value))
        except decimal.DecimalException:
            pass
        else:
            if "E" not in text:
                return text
    text = str(value)
    if "E" in text:
        return text.lower()
    # zeros then the point: "12.500" -> "12.5", "12.000" -> "12." -> "12" (one point at most)
    return text.rstrip("0").rstrip(".") if "." in text else text


#: The last characters of the ``fmt`` texts that only the value decides: a text without ``e``
#: ending in one of these is ``str(normalize(value))`` (``fmt``'s first path), so every equal
#: value has it, whatever its exponent.  (``fmt``'s other texts without ``e`` end in ``0``: an
#: integer whose normalized form has an exponent, ``100`` for ``1E+2``; a zero is ``0``.)
#: Why: an order all of whose amount is dealt has ``deal_stock`` equal to its amount, and the
#: amount's text is at hand where the order object is written: a comparison is a third of
#: ``fmt``.
VALUE_TEXT_ENDS = "123456789"


#: ``fmt``'s text of request params' decimals, by the object's identity (see ``fmt_param``).  An
#: entry holds its object, so no other object can have that id while the entry is there.  Public:
#: ``order_info`` reads it in place (four calls less per order object).
PARAM_TEXTS: dict[int, tuple[Decimal, str]] = {}
_FMT_PARAM_MAX = 4096


#: The last order object's fee rates and their texts, ``(taker_fee, maker_fee, taker_text,
#: maker_text)`` in its one slot, by the objects' identity (``order_info`` and ``orderjson``
#: read the slot once, inline, and on a miss take :func:`fee_texts`, which replaces the tuple
#: whole, so a reader in another thread never sees one order's rates with another's texts).
#: Why: a market's orders nearly all carry the same two fee rate objects (parse's cache and
#: the methods' tables share them), and two identity checks spare two ``PARAM_TEXTS``
#: lookups, each of which makes and hashes an int of ``id()``.  It holds its objects, so an
#: identity that matches is that very object.
LAST_FEE_TEXTS: list[tuple[Any, Any, str, str]] = [(None, None, "", "")]


def fmt_param(value: Decimal) -> str:
    """``fmt(value)`` for a decimal read from a request param (an order's price, amount and fee
    rates), remembered by the object's identity.  Why: every order object written (replies,
    ``orders`` messages) formats these, and they are the same few objects again and again
    (parse's cache and the methods' tables of accepted texts share them); a lookup costs
    half of ``fmt``.  Decimals are immutable, so a remembered text cannot go stale."""
    hit = PARAM_TEXTS.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    text = fmt(value)
    if len(PARAM_TEXTS) >= _FMT_PARAM_MAX:
        PARAM_TEXTS.clear()
    PARAM_TEXTS[id(value)] = (value, text)
    return text


def fee_texts(taker_fee: Decimal, maker_fee: Decimal) -> tuple[Any, Any, str, str]:
    """The texts of an order's fee rates, put in ``LAST_FEE_TEXTS``' slot and returned as it
    holds them.  The miss path of the slot, shared by the two writers of order objects
    (``order_info``, ``orderjson``), which test the slot inline: a market's orders nearly all
    carry the same two rate objects, so this runs when they change, not per order."""
    texts = (taker_fee, maker_fee, fmt_param(taker_fee),
             "0" if maker_fee is ZERO else fmt_param(maker_fee))
    LAST_FEE_TEXTS[0] = texts
    return texts


def fmt_raw(value: Decimal) -> str:
    """to-sci-string without zero stripping (Kafka messages, market.last)."""
    text = str(value)
    return text.lower() if "E" in text else text
