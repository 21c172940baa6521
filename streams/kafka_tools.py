"""confluent-kafka helpers for everything that is not the Faust worker:
topic creation, publishing, and reading topics back (CLI, demo, tests)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from enrich.errors import Stop
from streams.settings import Settings
from streams.topology import ITEMS_CODED, ITEMS_DLQ, SID_DIGITS, TOPIC_NAMES, topic_specs

log = logging.getLogger(__name__)


class KafkaToolError(Stop):
    pass


def create_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create the service's topics as ``streams.topology`` specifies them (idempotent: existing ones are
    left as they are; `enrich topics check` reports how they differ). Returns the names created."""
    admin, md = _cluster(settings, timeout_s)
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


def _cluster(settings: Settings, timeout_s: float) -> tuple[AdminClient, Any]:
    """An admin client and the cluster's metadata (brokers, topics, partitions), or the error with the fix."""
    admin = admin_client(settings)
    try:
        return admin, admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaToolError(f"cannot reach the broker at {settings.broker}: {exc.args[0].str()}") from exc


def topic_drift(settings: Settings, timeout_s: float = 15.0, cluster: tuple[AdminClient, Any] | None = None
                ) -> list[str]:
    """How the cluster's topics differ from the specification, one line each (empty: none)."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin, md = cluster or _cluster(settings, timeout_s)
    drift = []
    present = []
    for spec in topic_specs(settings):
        name = settings.topic(spec.name)
        topic = md.topics.get(name)
        if topic is None or topic.error is not None:
            drift.append(f"{name}: missing (run `enrich topics create`)")
            continue
        present.append((spec, name))
        if len(topic.partitions) != spec.partitions:
            drift.append(f"{name}: {len(topic.partitions)} partitions, the spec says {spec.partitions}")
        replicas = min((len(p.replicas) for p in topic.partitions.values()), default=0)
        if replicas != spec.replication_factor:
            drift.append(f"{name}: replication factor {replicas}, the spec says {spec.replication_factor}")
    if present:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for _, n in present],
                                         request_timeout=timeout_s)
        for (spec, name), fut in zip(present, futures.values(), strict=True):
            try:
                actual = {k: c.value for k, c in fut.result(timeout=timeout_s).items()}
            except KafkaException as exc:
                drift.append(f"{name}: cannot read its configs ({exc.args[0].str()})")
                continue
            for key, want in spec.configs().items():
                if key in actual and actual[key] != want:
                    drift.append(f"{name}: {key}={actual[key]}, the spec says {want}")
                elif key not in actual:
                    log.info("%s: the broker does not report %s; not checked", name, key)
    return drift


def check_topics(settings: Settings, timeout_s: float = 15.0) -> None:
    """Fail fast, with the fix, when the worker's topics are missing or sid.digits cannot mirror items.coded;
    log any other drift from the specification."""
    admin, md = _cluster(settings, timeout_s)
    missing = [settings.topic(t) for t in TOPIC_NAMES if settings.topic(t) not in md.topics]
    if missing:
        denied = _denied(admin, missing, timeout_s)
        if denied:
            raise KafkaToolError(
                f"not authorised to use {', '.join(denied)} as {settings.sasl_username or 'this principal'}: grant "
                "the workers' principal the ACLs `enrich topics acls --principal User:NAME` lists")
        raise KafkaToolError(f"topics missing: {', '.join(missing)}; run `enrich topics create`")
    coded, digits = (len(md.topics[settings.topic(t)].partitions) for t in (ITEMS_CODED, SID_DIGITS))
    if coded != digits:
        raise KafkaToolError(f"{settings.topic(SID_DIGITS)} has {digits} partitions but "
                             f"{settings.topic(ITEMS_CODED)} has {coded}; they must match (each items.coded "
                             "partition keeps its collision digits in the sid.digits partition of the same number)")
    for line in topic_drift(settings, timeout_s, (admin, md)):
        log.warning("topic drift: %s (see `enrich topics check`)", line)
    check_message_limit(settings, admin, timeout_s)


def _denied(admin: AdminClient, names: list[str], timeout_s: float) -> list[str]:
    """Of topics not in the cluster's metadata, those that exist but this principal may not describe (a broker
    lists only the topics a principal may see)."""
    denied = []
    for name in names:
        try:
            topic = admin.list_topics(topic=name, timeout=timeout_s).topics.get(name)
        except KafkaException:
            continue
        if topic is not None and topic.error is not None and \
                topic.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            denied.append(name)
    return denied


def check_message_limit(settings: Settings, admin: AdminClient | None = None, timeout_s: float = 10.0) -> int | None:
    """``items.dlq``'s ``max.message.bytes`` as the broker reports it; raises when it is below the size
    the worker cuts dead letters to (``ENRICH_MAX_MESSAGE_BYTES``). None when the broker cannot say."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = admin or admin_client(settings)
    topic = settings.topic(ITEMS_DLQ)
    try:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)], request_timeout=timeout_s)
        configs = next(iter(futures.values())).result(timeout=timeout_s)
        limit = int(configs["max.message.bytes"].value)
    except (KafkaException, KeyError, ValueError, TypeError) as exc:
        log.warning("cannot read max.message.bytes of %s (%s); assuming ENRICH_MAX_MESSAGE_BYTES=%d fits",
                    topic, exc, settings.max_message_bytes)
        return None
    if limit < settings.max_message_bytes:
        raise KafkaToolError(f"{topic} takes records of at most {limit} bytes (max.message.bytes) but dead "
                             f"letters are cut to ENRICH_MAX_MESSAGE_BYTES={settings.max_message_bytes}; "
                             f"set ENRICH_MAX_MESSAGE_BYTES={limit} or raise the topic's max.message.bytes")
    return limit


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_client_config())


def producer(settings: Settings, **overrides: object) -> Producer:
    """The tools' producer: idempotent, taking records up to ``ENRICH_MAX_MESSAGE_BYTES``."""
    return Producer({**settings.kafka_client_config(), "enable.idempotence": True, "linger.ms": 5,
                     "message.max.bytes": settings.max_message_bytes} | {k.replace("_", "."): v
                                                                          for k, v in overrides.items()})


def consumer(settings: Settings, group: str, **overrides: object) -> Consumer:
    """The tools' consumer: ``group`` never commits unless ``enable_auto_commit`` says so (a reader, not a
    worker); overrides are librdkafka settings with ``_`` for ``.``."""
    return Consumer(settings.consumer_config(group) | {k.replace("_", "."): v for k, v in overrides.items()})


def group_noise(err: KafkaError) -> bool:
    """An error a reader that never commits may ignore: librdkafka looks up the coordinator of any consumer's
    group, and a least-privilege principal may use no group but its workers' (docs/operations.md, ACLs)."""
    return err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED


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


class CatchUp:
    """Tells when a reader has reached the end its partitions had when it started reading.

    The end is a partition-EOF event at or past the high watermark taken at the start, never the
    watermark alone: the bundled broker (Tansu 0.6) answers ListOffsets with the last record batch's
    base offset + 1, which stops a watermark-only reader at the first record of the last batch.
    The consumer must be configured with ``enable.partition.eof``."""

    def __init__(self, consumer: Consumer, topic: str, partitions: Iterable[int], timeout_s: float = 10.0) -> None:
        self.ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)[1]
                     for p in partitions}
        self._pending = set(self.ends)

    def on_eof(self, partition: int, offset: int) -> None:
        if offset >= self.ends.get(partition, 0):
            self._pending.discard(partition)

    @property
    def done(self) -> bool:
        return not self._pending


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0

    @classmethod
    def of(cls, m: Message, prefix: str) -> Record:
        """A consumed message, its topic named without the settings' prefix."""
        return cls(m.topic()[len(prefix):], m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])


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


def read_to_end(settings: Settings, topics: Iterable[str], timeout_s: float = 120.0,
                partition: int | None = None) -> list[Record]:
    """Every record the topics hold now (``partition``: only that partition of each), read from the
    beginning without a consumer group."""
    c = consumer(settings, f"snapshot-{time.time_ns()}", enable_partition_eof=True)
    try:
        md = c.list_topics(timeout=10)
        catch_up: dict[str, CatchUp] = {}
        tps = []
        for t in topics:
            name = settings.topic(t)
            if name not in md.topics or md.topics[name].error is not None:
                raise KafkaToolError(f"topic {name} does not exist; run `enrich topics create`")
            parts = list(md.topics[name].partitions) if partition is None else [partition]
            catch_up[name] = CatchUp(c, name, parts)
            tps += [TopicPartition(name, p, OFFSET_BEGINNING) for p in parts]
        c.assign(tps)
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while not all(cu.done for cu in catch_up.values()):
            if time.monotonic() > deadline:
                raise KafkaToolError(f"could not read {', '.join(catch_up)} to the end within {timeout_s:.0f}s")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if group_noise(m.error()):
                    continue
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaToolError(m.error().str())
                catch_up[m.topic()].on_eof(m.partition(), m.offset())
                continue
            out.append(Record.of(m, settings.topic_prefix))
        return out
    finally:
        c.close()
