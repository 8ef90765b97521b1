"""The message bus between the matchengine and its consumers (engine.md 14).

* ``BusPublisher`` (an EventSink of the matchengine) turns events into the original's
  ``deals`` / ``orders`` / ``balances`` messages (and the CoinEx fork's ``stops``) and keeps a
  durable mark (``publisher``).
* Two adapters behind one interface (``base.Transport`` + ``base.BusReader``):
  ``KafkaTransport`` / ``KafkaBusReader`` (production, ``kafka``) and ``InProcessBus``
  (embedded mode, ``memory``).
"""

from exchange_server.bus.base import (
    ALL_TOPICS,
    BALANCES,
    DEALS,
    ORDERS,
    STOPS,
    TOPICS,
    BusReader,
    Message,
    Subscription,
)
from exchange_server.bus.mark import Mark, MarkFile
from exchange_server.bus.memory import InProcessBus
from exchange_server.bus.publisher import BusPublisher

__all__ = ["ALL_TOPICS", "BALANCES", "DEALS", "ORDERS", "STOPS", "TOPICS", "BusPublisher",
           "BusReader", "InProcessBus", "Mark", "MarkFile", "Message", "Subscription"]
