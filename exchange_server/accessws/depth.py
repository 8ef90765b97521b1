"""The depth diff sent in ``depth.update`` with clean=false (websocket.md 6, "Depth diff").

Per side, the old and the new level lists are walked in book order (asks ascending, bids
descending):

* same price: if the amount differs, the new ``[price, amount]``;
* a price only in the new list (it sorts first): the new level;
* a price only in the old list: ``[price, "0"]``.

Then, if the new list is shorter than the subscription's limit, every remaining old level is
sent as ``[price, "0"]`` (it left the book; with a full new list it only left the window), and
every remaining new level is sent.  A side without changes is left out of the diff object.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

Level = list[str]


def _num(text: Any) -> Decimal:
    if type(text) is not str:
        raise ValueError("depth level is not a pair of strings")
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"depth level value {text!r} is not a number") from None


def _pair(level: Any) -> tuple[Any, Any]:
    if type(level) is not list or len(level) < 2:
        raise ValueError("depth level is not a pair")
    return level[0], level[1]


def side_diff(old: list[Any], new: list[Any], limit: int, ascending: bool) -> list[Any]:
    """Changes that turn the ``old`` levels of one side into the ``new`` ones."""
    out: list[Any] = []
    i = j = 0
    n_old = len(old)
    n_new = len(new)
    while i < n_old and j < n_new:
        p_old, a_old = _pair(old[i])
        p_new, a_new = _pair(new[j])
        if p_old == p_new and a_old == a_new:  # the common case, without parsing
            i += 1
            j += 1
            continue
        price_old = _num(p_old)
        price_new = _num(p_new)
        if price_old == price_new:
            if _num(a_old) != _num(a_new):
                out.append(new[j])
            i += 1
            j += 1
        elif (price_new < price_old) == ascending:
            out.append(new[j])
            j += 1
        else:
            out.append([p_old, "0"])
            i += 1
    if n_new < limit:
        for k in range(i, n_old):
            out.append([_pair(old[k])[0], "0"])
    out.extend(new[j:])
    return out


def depth_diff(old: dict[str, Any], new: dict[str, Any], limit: int) -> dict[str, Any] | None:
    """The diff object (``asks`` and/or ``bids``), or None when nothing changed."""
    diff: dict[str, Any] = {}
    asks = side_diff(_side(old, "asks"), _side(new, "asks"), limit, True)
    if asks:
        diff["asks"] = asks
    bids = side_diff(_side(old, "bids"), _side(new, "bids"), limit, False)
    if bids:
        diff["bids"] = bids
    return diff or None


def _side(depth: dict[str, Any], key: str) -> list[Any]:
    side = depth.get(key, [])
    if type(side) is not list:
        raise ValueError(f"depth {key} is not a list")
    return side


def apply_diff(book: dict[str, list[Level]], diff: dict[str, Any], limit: int) -> None:
    """What a client does with a diff (used by tests and the benchmark): update the levels in
    place, drop "0" amounts, keep book order and at most ``limit`` levels per side."""
    for key, ascending in (("asks", True), ("bids", False)):
        changes = diff.get(key)
        if not changes:
            continue
        levels = {Decimal(p): [p, a] for p, a in book.get(key, [])}
        for price, amount in changes:
            if Decimal(amount) == 0:
                levels.pop(Decimal(price), None)
            else:
                levels[Decimal(price)] = [price, amount]
        ordered = sorted(levels.items(), key=lambda kv: kv[0], reverse=not ascending)
        book[key] = [level for _, level in ordered][:limit]
