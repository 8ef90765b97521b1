"""The core's decimal arithmetic, on the engine's own context, never the thread's.

Why: Decimal operators round with the calling thread's context, so an engine driven from a
thread that never installed the 60-digit ROUND_DOWN context (``common.decimals.CONTEXT``) would
round sums and products differently.  The core calls these instead of ``+ - * /`` and passes
``CONTEXT`` to ``quantize``; comparisons and construction from text do not round.
"""

from __future__ import annotations

from exchange_server.common.decimals import CONTEXT

__all__ = ["CONTEXT", "add", "div", "mul", "neg", "sub"]

add = CONTEXT.add
sub = CONTEXT.subtract
mul = CONTEXT.multiply
div = CONTEXT.divide
neg = CONTEXT.minus
