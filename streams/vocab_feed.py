"""Feeds ``tags.vocab`` into the worker's live vocabulary.

Every worker needs the whole vocabulary, not a partition's share, so this is
not a consumer-group agent: a background thread assigns every partition of
the compacted topic from the beginning and applies each entry. The same thread
embeds new tags, a chunk at a time, between records and whenever the topic is
quiet, so a flood of new tags is embedded here while items go on being graded
against the tags embedded so far. A record it cannot apply is dead-lettered
(keyed by its topic, partition and offset, which ``enrich audit`` dedupes: every
worker reads the whole topic at every start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, Producer, TopicPartition

from enrich import metrics
from enrich.errors import InvalidItem
from enrich.pipeline import RawEvent, SourceRef, dead_letter
from enrich.schemas import DeadLetter, VocabEntry, decode_vocab, encode
from enrich.tagging.vocabulary import TagVocabulary
from streams.kafka_tools import CatchUp, consumer, group_noise, producer
from streams.settings import Settings
from streams.topology import ITEMS_DLQ, TAGS_VOCAB

log = logging.getLogger(__name__)


def tombstone(key: bytes | None) -> VocabEntry:
    """The deletion a null value on ``key`` means."""
    try:
        tag = (key or b"").decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidItem("bad_tag", f"tombstone key is not UTF-8 ({(key or b'')[:32].hex()})") from None
    if not tag:
        raise InvalidItem("bad_tag", "tombstone without a key")
    return VocabEntry(tag=tag, deleted=True)


class VocabularyFeed:
    def __init__(self, settings: Settings, vocabulary: TagVocabulary,
                 dead_letters: Callable[[DeadLetter], None] | None = None) -> None:
        """``dead_letters``: where a record the feed cannot apply goes (default: ``items.dlq``)."""
        self._settings = settings
        self._vocab = vocabulary
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vocab-feed", daemon=True)
        self._dlq: Producer | None = None
        self._dead_letter = dead_letters or self._to_dlq
        self._embed_failed_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def ready(self) -> bool:
        """The topic read to its end and every tag in it embedded."""
        return self.caught_up.is_set() and not self._vocab.pending

    def _apply(self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int) -> None:
        """One record of the topic; a bad one is logged, counted, dead-lettered and skipped, never applied."""
        try:
            self._vocab.apply(tombstone(key) if value is None else decode_vocab(value))
        except InvalidItem as err:
            error = err
            log.warning("skipping bad tags.vocab record at %d@%d: %s", partition, offset, err)
        except Exception as exc:  # noqa: BLE001 - the feed must outlive any record
            error = InvalidItem("internal_error", f"{type(exc).__name__}: {exc}")
            log.exception("skipping tags.vocab record at %d@%d that failed: %s", partition, offset, exc)
        else:
            return
        metrics.VOCAB_REJECTED.labels(error.reason).inc()
        letter = dead_letter(RawEvent(key, value or b"", SourceRef(topic, partition, offset)), error, None,
                             self._settings.max_message_bytes)
        metrics.DLQ.labels(letter.reason, letter.stage).inc()
        self._dead_letter(letter)

    def _to_dlq(self, letter: DeadLetter) -> None:
        if self._dlq is None:
            self._dlq = producer(self._settings)
        self._dlq.produce(self._settings.topic(ITEMS_DLQ), value=encode(letter), key=letter.key,
                          on_delivery=_log_refused)

    def _embed_some(self) -> None:
        """Embed one chunk of the pending tags; a failing backend is retried a few seconds later."""
        if not self._vocab.pending or time.monotonic() - self._embed_failed_at < 2.0:
            return
        try:
            done = self._vocab.embed_pending(self._settings.vocab_embed_chunk)
        except Exception as exc:  # noqa: BLE001 - the backend may be down; items wait for it the same way
            self._embed_failed_at = time.monotonic()
            log.warning("embedding new tags failed (%d pending; retried in 2s): %s", self._vocab.pending, exc)
            return
        metrics.VOCAB_PENDING.set(self._vocab.pending)
        if done and not self._vocab.pending:
            log.info("every tag embedded: %d tags", len(self._vocab))

    def _run(self) -> None:
        # A broker error outside any record (metadata, a closed consumer) restarts the feed from the
        # beginning of the compacted topic; the vocabulary never freezes silently.
        while not self._stop.is_set():
            try:
                self._consume()
                return
            except Exception:  # noqa: BLE001
                log.exception("the tags.vocab feed failed; reading the topic again in 2s")
                metrics.VOCAB_REJECTED.labels("feed_restart").inc()
                self._stop.wait(2.0)

    def _consume(self) -> None:
        topic = self._settings.topic(TAGS_VOCAB)
        c = consumer(self._settings, "unused-vocab-reader", enable_partition_eof=True)
        try:
            md = c.list_topics(topic, timeout=10)
            parts = list(md.topics[topic].partitions) if topic in md.topics else []
            if not parts:
                log.warning("topic %s not found; the vocabulary stays empty", topic)
                self.caught_up.set()
                return
            catch_up = CatchUp(c, topic, parts)
            c.assign([TopicPartition(topic, p, 0) for p in parts])
            while not self._stop.is_set():
                if self._dlq is not None:
                    self._dlq.poll(0)
                if self._vocab.pending >= self._settings.vocab_embed_chunk:
                    self._embed_some()
                m = c.poll(0.2)
                if m is None:
                    self._embed_some()
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        catch_up.on_eof(m.partition(), m.offset())
                        if catch_up.done and not self.caught_up.is_set():
                            log.info("vocabulary loaded: %d tags (%d to embed)", len(self._vocab),
                                     self._vocab.pending)
                            self.caught_up.set()
                        self._embed_some()
                    elif not group_noise(m.error()):
                        log.warning("vocab feed error: %s", m.error().str())
                        time.sleep(0.5)
                    continue
                self._apply(m.key(), m.value(), m.topic(), m.partition(), m.offset())
                metrics.VOCAB_SIZE.set(len(self._vocab))
                metrics.VOCAB_PENDING.set(self._vocab.pending)
        finally:
            c.close()
            if self._dlq is not None:
                self._dlq.flush(5)
                self._dlq = None


def _log_refused(err: KafkaError | None, _msg: object) -> None:
    if err is not None:
        log.error("a tags.vocab dead letter was refused by the broker: %s", err.str())
