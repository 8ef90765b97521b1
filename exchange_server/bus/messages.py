"""The original's Kafka message bodies (engine.md 14), built from engine events.

All three are ``json_dumps(x, 0)`` in the C code: one line, ``", "`` and ``": "`` separators,
decimals as to-sci-string *without* zero stripping (the order object inside ``orders`` is the
usual order info, which is stripped).

The CoinEx fork's ``stops`` topic (extensions.md 1.5) is written the same way:
``{"event": 1 put / 2 fired / 3 cancelled, "order": <stop object> + "status", "order_id": id of
the order a fired stop spawned (0: none), "stock": asset, "money": asset}``; ``status`` is 0 for
put and cancel, 1 (order placed) or 2 (order refused) for fired.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from exchange_server.bus.base import BALANCES, DEALS, ORDERS, STOPS, Message
from exchange_server.common.decimals import fmt_raw
from exchange_server.common.jsonfmt import dumps
from exchange_server.matchengine.core.model import (
    BalanceUpdated,
    Deal,
    Event,
    OrderChanged,
    StopChanged,
    stop_info,
)
from exchange_server.matchengine.orderjson import deal_json, taken_order_json


def deal_message(d: Deal) -> bytes:
    """``[time, market, ask_order_id, bid_order_id, ask_user_id, bid_user_id, price, amount,
    ask_fee, bid_fee, taker_side, deal_id, stock, money]`` (written from a template:
    orderjson.py)."""
    return deal_json(d).encode()


def order_message(e: OrderChanged) -> bytes:
    """``{"event": n, "order": <order info>, "stock": asset, "money": asset}``."""
    return (f'{{"event": {e.event:d}, "order": {taken_order_json(e.order)}, '
            f'"stock": {encode_basestring(e.stock)}, "money": {encode_basestring(e.money)}}}'
            ).encode()


def balance_message(e: BalanceUpdated) -> bytes:
    """``[time, user_id, asset, business, change]``."""
    return dumps([e.time, e.user, e.asset, e.business, fmt_raw(e.change)]).encode()


def stop_message(e: StopChanged) -> bytes:
    """``{"event": n, "order": <stop object> + "status", "order_id": n, "stock", "money"}``."""
    stop = stop_info(e.stop)
    stop["status"] = e.status
    return dumps({"event": e.event, "order": stop, "order_id": e.order_id, "stock": e.stock,
                  "money": e.money}).encode()


#: event type -> (topic, its message): the events the original publishes.  Why a table and not
#: an isinstance chain: most of an operation's events are history-only (a deal's balance
#: changes, finished orders), and each went through four failed checks.
ENCODERS: dict[type, tuple[str, Callable[[Any], bytes]]] = {
    Deal: (DEALS, deal_message),
    OrderChanged: (ORDERS, order_message),
    BalanceUpdated: (BALANCES, balance_message),
    StopChanged: (STOPS, stop_message),
}


def published_events(events: list[Event]) -> list[tuple[str, bytes, Event]]:
    """(topic, body, the event it was written from) for every event of one operation that the
    original publishes, in event order (so per topic in the order the original pushed them)."""
    encoders = ENCODERS
    messages: list[tuple[str, bytes, Event]] = []
    for e in events:
        encoder = encoders.get(type(e))
        if encoder is not None:
            messages.append((encoder[0], encoder[1](e), e))
    return messages


class LazyMessage(Message):
    """A message of the in-process bus whose body is written from its event when read.

    Why: in embedded mode the consumers read the events' fields (marketprice every deal,
    accessws every order), and most bodies were never read as text: writing the JSON of every
    order and deal message was most of the bus's cost per order.  The events are immutable
    (named tuples of numbers, strings, decimals and snapshots), so the text written later is
    the very text that would have been written at publication: byte-identical to the
    original's.  Not kept: a consumer reading it twice writes it twice (none does)."""

    __slots__ = ()

    @property
    def value(self) -> bytes:
        event = self.event
        return ENCODERS[type(event)][1](event)


def encode_events(events: list[Event]) -> list[tuple[str, bytes]]:
    """(topic, body) of ``published_events``."""
    return [(topic, body) for topic, body, _ in published_events(events)]
