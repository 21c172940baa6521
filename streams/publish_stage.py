"""The second stage: number each code tuple's collisions and publish the outputs, on a consumer of its own.

It runs in a thread of the worker with its own Kafka consumer (group ``<ENRICH_GROUP_ID>.publish``) and
producer, not as a second Faust agent. Under a backlog the first stage's agent keeps its input buffer full,
and Faust's one consumer hands records to the agents one at a time, in fetch order: a record of
``items.coded`` waited behind ``items.new`` records the first stage had no room for, so items that were
already enriched waited tens of seconds and then came out in floods (``enrich bench --backlog``,
docs/architecture.md). Here the stage fetches ``items.coded`` alone, so an enriched item leaves as soon as its
micro-batch is numbered.

Each micro-batch: the ``items.coded`` records of the batch are numbered (``DigitStore``), their outputs, the new
digits and any dead letters are sent, and the input offsets are committed only after the broker acknowledged
every output (at least once: a crash replays the batch, and a replayed item keeps its digit). With
``ENRICH_EXACTLY_ONCE`` the outputs, the digits and the input offsets are one Kafka transaction, so a
``read_committed`` consumer sees each item's outputs once. An error no retry can mend (a record the broker
refuses, a newer release's record) stops the worker with the batch unacknowledged, as the first stage does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from mode import Service

from enrich import metrics
from enrich.errors import InvalidItem
from enrich.pipeline import RawEvent, SourceRef, dead_letter
from enrich.schemas import CodedVersionError, DeadLetter, decode_coded, encode, now_ms
from streams.collision_digits import DigitStore
from streams.settings import Settings
from streams.topology import ITEMS_CODED, ITEMS_DLQ, ITEMS_ENRICHED, RECALL_NEIGHBORS, RECALL_TAGS, SID_DIGITS

log = logging.getLogger(__name__)

PUBLISH_GROUP_SUFFIX = ".publish"
# A commit refused with these means the group moved on without this member: not a failure of the batch.
REJOINED = {KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS}


class Abandoned(Exception):
    """The stage was stopped while a batch waited for the broker: nothing of it was committed."""


def publish_group(settings: Settings) -> str:
    """The consumer group of the second stage (its committed offsets and lag on ``items.coded``)."""
    return settings.group_id + PUBLISH_GROUP_SUFFIX


@dataclass
class Batch:
    """What one micro-batch of ``items.coded`` sends, and the offsets it then commits."""

    outputs: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # (topic, key, value)
    digits: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (partition, key, value)
    dead: list[DeadLetter] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    enriched: list[int] = field(default_factory=list)  # the first stage's enriched_at of each item
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition
    starts: dict[tuple[str, int], int] = field(default_factory=dict)  # first offset per partition


def number(settings: Settings, digits: DigitStore, messages: list[Message]) -> Batch:
    """Number one micro-batch (pure but for the digit store's reads of ``sid.digits``)."""
    batch = Batch()
    for m in messages:
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        batch.offsets[(topic, partition)] = offset + 1
        batch.starts.setdefault((topic, partition), offset)
        source = SourceRef(topic, partition, offset)
        for rejected in digits.ensure_loaded(partition):
            r = rejected.record
            batch.dead.append(dead_letter(RawEvent(r.key, r.value or b"", SourceRef(
                settings.topic(r.topic), r.partition, r.offset)), rejected.error, None, settings.max_message_bytes))
        try:
            coded = decode_coded(m.value(), m.key())
        except CodedVersionError:
            log.error("a newer release's record at %s[%d]@%d", topic, partition, offset)
            raise
        except InvalidItem as err:  # someone else wrote to the internal topic: keep it, skip it
            batch.dead.append(dead_letter(RawEvent(m.key(), m.value() or b"", source), err, None,
                                          settings.max_message_bytes))
            continue
        if settings.exactly_once:
            digit, new_record, replay = digits.assign_once(partition, coded.key, coded.item_id,
                                                           coded.record["created_at"])
            if replay:  # the first stage enriched this input again after a restart: published already
                continue
        else:
            digit, new_record = digits.assign(partition, coded.key, coded.item_id)
        if new_record is not None:
            batch.digits.append((partition, *new_record))
        done = coded.finish(digit)
        item_key = done.item_id.encode()
        batch.outputs += [(ITEMS_ENRICHED, item_key, done.enriched), (RECALL_NEIGHBORS, item_key, done.neighbor)]
        batch.outputs += [(RECALL_TAGS, item_key, edge) for edge in done.edges]
        batch.created.append(done.created_at)
        batch.enriched.append(int(coded.record.get("enriched_at") or 0) or done.created_at)
    return batch


class PublishStage:
    """The second stage in its own thread; ``on_fatal`` is called (from that thread) with the error that stopped
    it, and should stop the worker."""

    def __init__(self, settings: Settings, on_fatal: Callable[[BaseException], None],
                 digits: DigitStore | None = None) -> None:
        self.settings = settings
        self.digits = digits or DigitStore(settings)
        self.on_fatal = on_fatal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assigned: set[int] = set()
        self.last_poll = 0.0  # monotonic time of the last poll: /readyz says when the stage has stopped polling
        self.error: BaseException | None = None
        self._lag_consumer: Consumer | None = None  # a second client of the same group, read by other threads
        self.waiting_since: float | None = None  # while the broker has not yet acknowledged a batch's writes

    @property
    def coded_topic(self) -> str:
        return self.settings.topic(ITEMS_CODED)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="publish-stage", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand (its outputs acknowledged, its offsets committed), then leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind on each assigned ``items.coded`` partition: high watermark minus committed offset, as
        ``kafka-consumer-groups --describe`` counts it (for the lag metric)."""
        consumer = self._lag_consumer
        if consumer is None or not self.assigned:
            return {}
        tps = [TopicPartition(self.coded_topic, p) for p in sorted(self.assigned)]
        try:
            committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=5)}
            out = {}
            for tp in tps:
                _, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                done = committed.get(tp.partition, -1)
                out[(tp.topic, tp.partition)] = max(0, high - (done if done >= 0 else 0))
            return out
        except KafkaException as exc:
            log.debug("lag of the publish stage not measured: %s", exc)
            return {}

    @property
    def ready(self) -> bool:
        """Running, and polling (a poll returns within the batch wait; a batch takes at most its send timeout)."""
        return self.alive and self.error is None and time.monotonic() - self.last_poll < 120

    def _consumer(self) -> Consumer:
        s = self.settings
        cfg = s.kafka_client_config() | {
            "group.id": publish_group(s), "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": int(s.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(min(3.0, s.session_timeout_s / 4) * 1000),
            "fetch.wait.max.ms": s.fetch_max_wait_ms,
            # the first stage may write items.coded in transactions: never read what it aborted
            "isolation.level": "read_committed",
            "max.poll.interval.ms": 300_000}
        return Consumer(cfg)

    def _producer(self) -> Producer:
        s = self.settings
        cfg = s.kafka_client_config() | {
            "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "message.max.bytes": s.max_message_bytes + 64 * 1024}
        if s.exactly_once:
            # Fenced by the consumer group's generation (KIP-447), so the id needs only be unique per process.
            cfg |= {"transactional.id": f"{publish_group(s)}-{uuid.uuid4().hex[:12]}",
                    "transaction.timeout.ms": 60_000}
        return Producer(cfg)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {tp.partition for tp in partitions}
        log.info("publish stage assigned %s[%s]", self.coded_topic, ",".join(str(tp.partition) for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called inside poll, between batches: nothing numbered under the old assignment is unsent.
        revoked = {tp.partition for tp in partitions}
        self.assigned -= revoked
        self.digits.forget(revoked)

    def _run(self) -> None:
        consumer = producer = None
        try:
            consumer, producer = self._consumer(), self._producer()
            self._lag_consumer = self._consumer()
            if self.settings.exactly_once:
                producer.init_transactions(30)
            consumer.subscribe([self.coded_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_revoke)
            while not self._stop.is_set():
                self.last_poll = time.monotonic()
                messages = consumer.consume(self.settings.batch_size, self.settings.batch_wait_s)
                records = []
                for m in messages:
                    err = m.error()
                    if err is None:
                        records.append(m)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("publish stage consumer: %s", err.str())
                if records:
                    self._publish(consumer, producer, records)
        except Abandoned as exc:
            log.info("%s", exc)
        except BaseException as exc:  # noqa: BLE001 - reported to the worker, which stops
            self.error = exc
            log.exception("publish stage stopped; its batch stays uncommitted and replays after a restart")
            self.on_fatal(exc)
        finally:
            if producer is not None:
                producer.flush(10)
            if consumer is not None:
                consumer.close()  # leaves the group: its partitions move to the other workers at once
            if self._lag_consumer is not None:
                self._lag_consumer.close()
                self._lag_consumer = None

    def waiting_for(self) -> list[str]:
        """What the stage waits for, in words, for /readyz."""
        if not self.alive:
            return [f"the publish stage, which stopped: {self.error}"] if self.error else ["the publish stage to start"]
        if self.broker_wait_s() > 1.0:
            return [f"the broker to acknowledge the publish stage's outputs ({self.broker_wait_s():.0f}s; "
                    "its offsets are committed only after that)"]
        return []

    def broker_wait_s(self) -> float:
        since = self.waiting_since
        return 0.0 if since is None else time.monotonic() - since

    def _publish(self, consumer: Consumer, producer: Producer, records: list[Message]) -> None:
        t0 = time.perf_counter()
        batch = number(self.settings, self.digits, records)
        self.waiting_since = time.monotonic()
        try:
            self._write(consumer, producer, batch)
        finally:
            self.waiting_since = None
        metrics.OUTPUT_BYTES.inc(sum(len(k) + len(v) for _, k, v in batch.outputs))
        for d in batch.dead:
            metrics.DLQ.labels(d.reason, d.stage).inc()
        metrics.STAGE_SECONDS.labels("publish").observe(time.perf_counter() - t0)
        done = now_ms()
        metrics.ITEMS_OUT.inc(len(batch.created))
        for c in batch.created:
            metrics.END_TO_END.observe(max(0.0, (done - c) / 1000))
        for e in batch.enriched:
            metrics.ITEM_AGE.labels("published").observe(max(0.0, (done - e) / 1000))

    def _write(self, consumer: Consumer, producer: Producer, batch: Batch) -> None:
        """The batch's records and its offsets: one transaction, or sent, acknowledged, then committed. Writes
        wait for the broker as long as the producer retries (``message.timeout.ms``): a broker outage or a lost
        quorum holds the batch, it does not fail it."""
        if not self.settings.exactly_once:
            self._send(producer, batch)
            self._commit(consumer, self._offsets(batch))
            return
        producer.begin_transaction()
        try:
            self._send(producer, batch)
            producer.send_offsets_to_transaction(self._offsets(batch), consumer.consumer_group_metadata(), 60)
            self._retrying(lambda: producer.commit_transaction(30))
        except BaseException as exc:
            try:  # readers of the outputs would otherwise wait for the transaction's timeout
                producer.abort_transaction(30)
            except KafkaException as abort_exc:
                log.warning("could not abort the publish transaction: %s", abort_exc)
            err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                # e.g. the group rebalanced while the batch was written: nothing of it is visible; the partitions'
                # owner numbers it again from what sid.digits holds, so this worker's memory of it must go too
                log.warning("publish transaction aborted (%s); the batch replays", err.str())
                partitions = {p for _, p in batch.offsets}
                self.digits.forget(partitions)
                self._rewind(consumer, batch)
                return
            raise

    def _settle(self, producer: Producer) -> None:
        """Until every queued record has its delivery report (the producer retries a broker that is down until
        ``message.timeout.ms``, then reports the failure); given up when the stage is stopped."""
        while producer.flush(1.0) > 0:
            if self._stop.is_set():
                producer.purge()
                producer.flush(1.0)
                raise Abandoned("stopped while waiting for the broker; the batch replays")

    def _retrying(self, call: Callable[[], None]) -> None:
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not (isinstance(err, KafkaError) and err.retriable()) or self._stop.is_set():
                    raise
                log.warning("publish stage: %s; retrying", err.str())

    @staticmethod
    def _rewind(consumer: Consumer, batch: Batch) -> None:
        for (topic, partition), start in batch.starts.items():
            try:
                consumer.seek(TopicPartition(topic, partition, start))
            except KafkaException:  # no longer assigned: its next owner starts from the committed offset
                pass

    def _commit(self, consumer: Consumer, offsets: list[TopicPartition]) -> None:
        """Commit, retrying what a broker failure makes retriable (a coordinator moving to another broker). A
        commit refused because the group moved on (this member was evicted while the broker was down) is not an
        error: the outputs are acknowledged, and the partitions' next owner replays the batch, keeping its
        digits."""
        delay = 0.1
        while True:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.code() in REJOINED:
                    log.warning("publish stage: commit refused (%s); the batch replays on its partitions' owner",
                                err.str())
                    return
                if not (isinstance(err, KafkaError) and err.retriable()) or self._stop.is_set():
                    raise
                log.warning("commit of the publish stage's offsets failed, retrying: %s", err.str())
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    @staticmethod
    def _offsets(batch: Batch) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]

    def _send(self, producer: Producer, batch: Batch) -> None:
        """Send the batch's records and wait for every delivery report (``_settle``); raise if the broker refused
        any."""
        s = self.settings
        failures: list[str] = []

        def report(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(err.str())

        sends: list[tuple[str, bytes | None, bytes, int | None]] = [
            (s.topic(t), k, v, None) for t, k, v in batch.outputs]
        sends += [(s.topic(ITEMS_DLQ), d.key, encode(d), None) for d in batch.dead]
        # the digits go to the sid.digits partition numbered like the items.coded partition that owns them
        sends += [(s.topic(SID_DIGITS), k, v, p) for p, k, v in batch.digits]
        for topic, key, value, partition in sends:
            kwargs = {} if partition is None else {"partition": partition}
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=report, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.05)
        self._settle(producer)
        if failures:
            raise KafkaException(KafkaError(KafkaError._FAIL, f"{len(failures)} outputs refused by the broker "
                                                              f"({'; '.join(sorted(set(failures))[:3])})"))


class Publishing(Service):
    """The publish stage as a service of the app: started before the consumer, stopped after it (the batch in
    hand finishes and commits). A stage that stopped on an error stops the worker."""

    def __init__(self, settings: Settings, app: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.stage = PublishStage(settings, self._fatal)

    def _fatal(self, exc: BaseException) -> None:
        loop = self.loop
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.app.crash(exc)))

    async def on_start(self) -> None:
        self.stage.start()

    async def on_stop(self) -> None:
        await asyncio.to_thread(self.stage.stop)
