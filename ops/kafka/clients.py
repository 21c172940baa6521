"""The tools' Kafka clients: topic creation, publishing with checked delivery, and readers that tail topics.

The worker's own Kafka helpers (the start-up topic check, its consumers and producers, the catch-up reader of
compacted topics) are ``streams.kafka_tools``; what only the tools, the tests and the local stack use is here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import OFFSET_END, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from streams.kafka_tools import KafkaToolError, Record, cluster_metadata, consumer, group_noise, producer
from streams.settings import Settings
from streams.topology import topic_specs


def create_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create the service's topics as ``streams.topology`` specifies them (idempotent: existing ones are
    left as they are; `enrich topics check` reports how they differ). Returns the names created."""
    admin, md = cluster_metadata(settings, timeout_s)
    specs = topic_specs(settings)
    brokers = len(md.brokers)
    if settings.replication_factor > brokers:
        raise KafkaToolError(f"ENRICH_REPLICATION_FACTOR={settings.replication_factor} but {settings.broker} has "
                             f"{brokers} broker{'s' if brokers != 1 else ''}: set ENRICH_REPLICATION_FACTOR={brokers} "
                             f"and ENRICH_MIN_INSYNC_REPLICAS={max(1, min(brokers - 1, 2))} (or fewer), or add brokers")
    new = [NewTopic(settings.topic(t.name), num_partitions=t.partitions, replication_factor=t.replication_factor,
                    config=t.configs()) for t in specs]
    created = []
    for name, fut in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaToolError(f"cannot create topic {name} on {settings.broker}: {err.str()}") from exc
    return created


class Deliveries:
    """Sends through one producer and counts a record as sent only when its delivery report says so
    (``flush()`` returning 0 is not enough: it also returns 0 once failed records left the queue)."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer, self.topic = producer, topic
        self.sent = 0
        self.pending = 0
        self.failed: list[str] = []

    def _report(self, err: KafkaError | None, _msg: object) -> None:
        self.pending -= 1
        if err is None:
            self.sent += 1
        else:
            self.failed.append(err.str())

    def produce(self, value: bytes | None, key: bytes | None, **kwargs: object) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, on_delivery=self._report, **kwargs)
                self.pending += 1
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:
                raise KafkaToolError(f"cannot publish to {self.topic}: {exc.args[0].str()}") from exc

    def abandon(self, timeout_s: float = 5.0) -> None:
        """Give up on what is not yet acknowledged: drop the queued records (nothing of a batch the caller
        gave up on is sent later) and serve their reports. A report still pending holds this object through
        its callback, and so the producer, whose client would then outlive its caller, retrying a broker
        that may be gone."""
        if self.pending:
            self.producer.purge()
            self.producer.flush(timeout_s)

    def settle(self, timeout_s: float) -> int:
        """Wait for every report; raise unless every record was acknowledged. Returns the records sent."""
        self.producer.flush(timeout_s)
        if self.failed or self.pending:
            raise KafkaToolError(f"{self.topic}: {len(self.failed)} records refused by the broker "
                                 f"({'; '.join(sorted(set(self.failed))[:3])}), {self.pending} without a report "
                                 f"after {timeout_s:g}s")
        return self.sent


def publish(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
            timeout_s: float = 30.0, partition: int | None = None) -> int:
    """Publish (key, value) pairs and wait for every delivery report; raises on any failure.
    ``partition``: all into that partition instead of the key's."""
    out = Deliveries(producer(settings), settings.topic(topic))
    where = {} if partition is None else {"partition": partition}
    try:
        for key, value in records:
            out.produce(value, key, **where)
        return out.settle(timeout_s)
    finally:
        out.abandon()


class TopicReader:
    """Reads topics from the beginning without a consumer group commit (a tail, not a worker)."""

    def __init__(self, settings: Settings, topics: Iterable[str], from_beginning: bool = True) -> None:
        self._c = consumer(settings, f"reader-{time.time_ns()}", auto_offset_reset="earliest")
        start = 0 if from_beginning else OFFSET_END
        names = [settings.topic(t) for t in topics]
        md = self._c.list_topics(timeout=10)
        tps = []
        for name in names:
            if name not in md.topics or md.topics[name].error is not None:
                raise KafkaToolError(f"topic {name} does not exist; run `enrich topics create`")
            tps += [TopicPartition(name, p, start) for p in md.topics[name].partitions]
        self._c.assign(tps)
        self._prefix = settings.topic_prefix

    def poll(self, timeout_s: float = 0.5, max_records: int = 500) -> list[Record]:
        out = []
        for m in self._c.consume(max_records, timeout_s):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF or group_noise(m.error()):
                    continue
                raise KafkaToolError(m.error().str())
            out.append(Record.of(m, self._prefix))
        return out

    def lag(self) -> dict[str, int]:
        """Per topic (unprefixed), the records between this reader's position and the end of its partitions."""
        out: dict[str, int] = {}
        for tp in self._c.position(self._c.assignment()):
            _, high = self._c.get_watermark_offsets(tp, timeout=5, cached=False)
            behind = high - tp.offset if tp.offset >= 0 else high  # no position yet: all of it
            name = tp.topic[len(self._prefix):] if tp.topic.startswith(self._prefix) else tp.topic
            out[name] = out.get(name, 0) + max(0, behind)
        return out

    def close(self) -> None:
        self._c.close()
