"""The worker's confluent-kafka helpers: the start-up topic check, its admin, producer and consumer settings,
and reading a compacted topic to its end (the vocabulary feed, the digit store, the publish stage).

What only the tools use (topic creation, checked publishing, tailing readers) is ``ops.kafka.clients``."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from enrich.errors import Stop
from streams.settings import Settings
from streams.topology import ITEMS_CODED, ITEMS_DLQ, SID_DIGITS, TOPIC_NAMES, topic_specs

log = logging.getLogger(__name__)


class KafkaToolError(Stop):
    pass


def cluster_metadata(settings: Settings, timeout_s: float) -> tuple[AdminClient, Any]:
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

    admin, md = cluster or cluster_metadata(settings, timeout_s)
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
    admin, md = cluster_metadata(settings, timeout_s)
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
