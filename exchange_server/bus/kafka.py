"""The Kafka adapter (production): librdkafka through confluent-kafka.

Producer: ``acks=all``, ``enable.idempotence=true`` (no duplicates or reordering from
librdkafka's own retries), ``linger.ms=1`` (the original's ``queue.buffering.max.ms = 1``),
partition 0 as the original, and ``message.timeout.ms=0``: a message is retried until the
broker takes it, however long the outage lasts; the publisher's bound keeps memory in check.
Delivery reports are served by a background thread and handed to the event loop.  Any
delivery error or fatal producer error rebuilds the producer and makes the publisher resend
everything unacknowledged, in order (at-least-once).

Consumer: a plain assigned consumer on partition 0 from a given offset (no consumer-group
offsets: consumers store their own, e.g. marketprice in Redis ``k:offset``).  Fetching runs in
a worker thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from exchange_server.bus.base import (
    OPER_ID_HEADER,
    AckCallback,
    BatchIterator,
    Message,
    ResetCallback,
    decode_oper_id,
    encode_oper_id,
)

log = logging.getLogger("exchange_server.bus.kafka")
kafka_log = logging.getLogger("exchange_server.bus.librdkafka")

#: The original produces (and consumes) partition 0 only.
PARTITION = 0
#: Seconds to wait before rebuilding a producer after an error.
RESET_DELAY = 1.0

_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}


def producer_config(brokers: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": brokers,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 1,
        "message.timeout.ms": 0,
        "logger": kafka_log,
    }
    if extra:
        config.update(extra)
    return config


class KafkaTransport:
    """Producer side: ``send`` queues into librdkafka; acknowledgements come back in order."""

    stable_offsets = False

    def __init__(self, brokers: str, topic_prefix: str = "",
                 config: dict[str, Any] | None = None, reset_delay: float = RESET_DELAY) -> None:
        self.brokers = brokers
        self.topic_prefix = topic_prefix
        self.extra_config = dict(config or {})
        self.reset_delay = reset_delay
        self._producer: Producer | None = None
        self._generation = 0
        self._resetting = False
        self._on_acked: AckCallback | None = None
        self._on_reset: ResetCallback | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: (generation, topic name, error or None) appended by librdkafka's callbacks
        self._reports: deque[tuple[int, str, KafkaError | None]] = deque()
        self._dispatch_lock = threading.Lock()
        self._dispatch_scheduled = False
        self._thread: threading.Thread | None = None
        self._running = False
        self._names: dict[str, str] = {}
        self._logical: dict[str, str] = {}

    def topic_name(self, topic: str) -> str:
        name = self._names.get(topic)
        if name is None:
            name = self._names[topic] = self.topic_prefix + topic
            self._logical[name] = topic
        return name

    # -- transport --------------------------------------------------------------------------------

    def open(self, on_acked: AckCallback, on_reset: ResetCallback) -> None:
        self._on_acked = on_acked
        self._on_reset = on_reset
        self._loop = asyncio.get_running_loop()
        self._producer = self._make_producer()
        self._running = True
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-producer-poll",
                                        daemon=True)
        self._thread.start()

    def send(self, topic: str, value: bytes, oper_id: int) -> bool:
        producer = self._producer
        if producer is None or self._resetting:
            return False
        try:
            producer.produce(self.topic_name(topic), value, partition=PARTITION,
                             headers=[(OPER_ID_HEADER, encode_oper_id(oper_id))])
        except BufferError:
            return False  # librdkafka's queue is full: the publisher retries in 0.1 s
        except KafkaException as e:
            log.error("kafka produce on %s failed: %s", topic, e)
            self._schedule_reset()
            return False
        return True

    async def close(self, timeout: float) -> None:
        producer = self._producer
        self._running = False
        if producer is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, producer.flush, max(timeout, 0.0))
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        self._dispatch()
        if producer is not None:
            left = len(producer)
            if left:
                log.warning("kafka producer closed with %d messages undelivered", left)
                producer.purge()
                producer.flush(0)
        self._producer = None
        self._on_acked = None

    def set_brokers(self, brokers: str) -> None:
        """Switch to other brokers: a new producer, and everything unacknowledged is resent."""
        self.brokers = brokers
        self._reset(delay=0.0)

    # -- internals --------------------------------------------------------------------------------

    def _make_producer(self) -> Producer:
        self._generation += 1
        generation = self._generation
        reports = self._reports
        logical = self._logical

        def delivered(err: KafkaError | None, msg: Any) -> None:
            reports.append((generation, logical.get(msg.topic(), msg.topic()), err))

        def error(err: KafkaError) -> None:
            if err.fatal():
                reports.append((generation, "", err))
            else:
                kafka_log.info("kafka: %s", err)

        config = producer_config(self.brokers, self.extra_config)
        config["on_delivery"] = delivered
        config["error_cb"] = error
        return Producer(config)

    def _poll_loop(self) -> None:
        while self._running:
            producer = self._producer
            if producer is None:  # being rebuilt
                time.sleep(0.05)
                continue
            try:
                producer.poll(0.05)
            except Exception:  # pragma: no cover - librdkafka callbacks never raise here
                log.exception("kafka poll failed")
            del producer
            if self._reports:
                self._wake()

    def _wake(self) -> None:
        with self._dispatch_lock:
            if self._dispatch_scheduled or self._loop is None:
                return
            self._dispatch_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._dispatch)
        except RuntimeError:  # loop closed
            pass

    def _dispatch(self) -> None:
        with self._dispatch_lock:
            self._dispatch_scheduled = False
        reports = self._reports
        counts: dict[str, int] = {}
        failed: set[str] = set()
        reset = False
        generation = self._generation
        while reports:
            gen, topic, err = reports.popleft()
            if gen != generation:
                continue
            if err is None:
                if topic not in failed:
                    counts[topic] = counts.get(topic, 0) + 1
                continue
            if err.code() in _PURGED:
                continue
            if topic:
                failed.add(topic)
                log.error("kafka delivery on %s failed: %s", topic, err)
            else:
                log.error("kafka producer fatal error: %s", err)
            reset = True
        if self._on_acked is not None:
            for topic, n in counts.items():
                self._on_acked(topic, n)
        if reset:
            self._schedule_reset()

    def _schedule_reset(self) -> None:
        if not self._resetting:
            self._reset(self.reset_delay)

    def _reset(self, delay: float) -> None:
        """Drop the producer (its in-flight messages are resent by the publisher)."""
        self._resetting = True
        old, self._producer = self._producer, None
        self._generation += 1  # ignore whatever the old producer still reports
        if old is not None:
            # purged and destroyed on a thread of its own: destroying can take a while
            threading.Thread(target=_dispose, args=(old,), name="kafka-producer-dispose",
                             daemon=True).start()
            del old
        assert self._loop is not None
        self._loop.call_later(delay, self._rebuild)

    def _rebuild(self) -> None:
        if not self._running:
            self._resetting = False
            return
        self._producer = self._make_producer()
        self._resetting = False
        log.info("kafka producer rebuilt (brokers %s): resending unacknowledged messages",
                 self.brokers)
        if self._on_reset is not None:
            self._on_reset()


def _dispose(producer: Producer) -> None:
    with contextlib.suppress(Exception):
        producer.purge()
        producer.flush(0)


# -- consumer ------------------------------------------------------------------------------------


def consumer_config(brokers: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": brokers,
        "group.id": f"exchange-server-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
        "logger": kafka_log,
    }
    if extra:
        config.update(extra)
    return config


class KafkaBusReader:
    """Consumer side: one assigned consumer per subscription."""

    def __init__(self, brokers: str, topic_prefix: str = "",
                 config: dict[str, Any] | None = None) -> None:
        self.brokers = brokers
        self.topic_prefix = topic_prefix
        self.extra_config = dict(config or {})

    def subscribe(self, topic: str, from_offset: int | None = None,
                  durable: str | None = None) -> KafkaSubscription:
        return KafkaSubscription(self, self.topic_prefix + topic, from_offset)

    def watermarks(self, topic: str, timeout: float = 10.0) -> tuple[int, int]:
        """(low, high) offsets of partition 0; blocking (start-up, tools, tests)."""
        consumer = Consumer(consumer_config(self.brokers, self.extra_config))
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic_prefix + topic, PARTITION), timeout=timeout)
            return int(low), int(high)
        finally:
            consumer.close()


class KafkaSubscription(BatchIterator):
    def __init__(self, reader: KafkaBusReader, name: str, from_offset: int | None) -> None:
        self.reader = reader
        self.name = name
        self.from_offset = from_offset
        self._consumer: Consumer | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        self._buffer: list[Message] = []
        self._index = 0
        self._closed = False
        self._last_error = ""

    def _open(self) -> Consumer:
        consumer = Consumer(consumer_config(self.reader.brokers, self.reader.extra_config))
        offset = confluent_kafka.OFFSET_END if self.from_offset is None else self.from_offset
        consumer.assign([TopicPartition(self.name, PARTITION, offset)])
        return consumer

    def _fetch(self, max_messages: int, timeout: float) -> list[Message]:
        if self._closed:
            return []
        if self._consumer is None:
            self._consumer = self._open()
        batch: list[Message] = []
        # librdkafka's consume(n, timeout) waits the whole timeout unless n messages arrive:
        # wait for the first one only, then take whatever else is already there.
        messages = self._consumer.consume(1, timeout)
        if messages and max_messages > 1:
            messages += self._consumer.consume(max_messages - 1, 0)
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF and str(err) != self._last_error:
                    self._last_error = str(err)  # logged once until it changes
                    log.warning("kafka consumer %s: %s", self.name, err)
                continue
            self._last_error = ""
            oper_id = None
            headers: Any = msg.headers()
            if headers:
                for key, raw in headers:
                    if key == OPER_ID_HEADER:
                        oper_id = decode_oper_id(raw)
            offset = msg.offset()
            assert offset is not None
            batch.append(Message(offset, msg.value() or b"", oper_id))
        return batch

    async def next_batch(self, max_messages: int = 1000) -> list[Message]:
        """At least one message (an empty list only once the subscription is closed)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            batch = await loop.run_in_executor(self._executor, self._fetch, max_messages, 0.2)
            if batch:
                return batch
        return []

    def commit(self, offset: int) -> None:
        """Kafka consumers keep their offsets themselves (e.g. Redis ``k:offset``)."""

    async def close(self) -> None:
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_consumer)
        self._executor.shutdown(wait=False)

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

