"""Texts of float times, remembered by the float object's identity.

Why: an operation's clock reading is one float object that is written as text twice in the
matching process: in the reply's order object (``orderjson``, the loop's thread) and in its
operation log record's checksum (``store.record_checksum``, the writer thread).
``float.__repr__`` costs some 5,000 instructions (David Gay's shortest digits); a lookup by
``id()`` a few hundred.  An entry holds its object, so no other object can have that id while
the entry is there; an entry is one tuple, so a reader in another thread sees a whole one.
"""

from __future__ import annotations

#: text of a float by its id: (the float, its ``float.__repr__``)
TEXTS: dict[int, tuple[float, str]] = {}
#: entries kept before the table starts again (a maker's order carries an older time)
TEXTS_MAX = 4096


def float_text(value: float) -> str:
    """``float.__repr__(value)``, remembered (``value`` must be a float)."""
    hit = TEXTS.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    text = float.__repr__(value)
    if len(TEXTS) >= TEXTS_MAX:
        TEXTS.clear()
    TEXTS[id(value)] = (value, text)
    return text


def known_text(value: float) -> str:
    """``float.__repr__(value)``: remembered if it was written before, not remembered if not
    (for texts written once, e.g. a record's time read back)."""
    hit = TEXTS.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    return float.__repr__(value)
