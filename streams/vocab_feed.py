"""Feeds ``tags.vocab`` into the worker's live vocabulary.

Every worker needs the whole vocabulary, not a partition's share, so this is
not a consumer-group agent: a background thread assigns every partition of
the compacted topic from the beginning and applies each entry.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaError, TopicPartition

from enrich import metrics
from enrich.errors import InvalidItem
from enrich.schemas import VocabEntry, decode_vocab
from enrich.settings import Settings
from enrich.tagging.vocabulary import TagVocabulary
from streams.kafka_tools import CatchUp, consumer

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
    def __init__(self, settings: Settings, vocabulary: TagVocabulary) -> None:
        self._settings = settings
        self._vocab = vocabulary
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vocab-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        """One record of the topic; a bad one is logged, counted and skipped, never applied."""
        try:
            self._vocab.apply(tombstone(key) if value is None else decode_vocab(value))
        except InvalidItem as err:
            reason = err.reason
            log.warning("skipping bad tags.vocab record at %d@%d: %s", partition, offset, err)
        except Exception as exc:  # noqa: BLE001 - the feed must outlive any record
            reason = "internal_error"
            log.exception("skipping tags.vocab record at %d@%d that failed: %s", partition, offset, exc)
        else:
            return
        metrics.VOCAB_REJECTED.labels(reason).inc()

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
        topic = self._settings.topic("tags.vocab")
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
                m = c.poll(0.2)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        catch_up.on_eof(m.partition(), m.offset())
                        if catch_up.done and not self.caught_up.is_set():
                            log.info("vocabulary loaded: %d tags", len(self._vocab))
                            self.caught_up.set()
                    else:
                        log.warning("vocab feed error: %s", m.error().str())
                        time.sleep(0.5)
                    continue
                self._apply(m.key(), m.value(), m.partition(), m.offset())
                metrics.VOCAB_SIZE.set(len(self._vocab))
        finally:
            c.close()
