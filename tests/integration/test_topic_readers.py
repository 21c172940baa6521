"""Readers that must see a whole topic before the worker acts on it, against the real broker.

Records are published in several flushes so each partition holds several record batches: the
bundled broker reports a high watermark of the last batch's base offset + 1, and a reader that
trusted it stopped at the first record of the last batch."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from corpora import samples
from enrich.schemas import encode
from enrich.tagging.vocabulary import TagVocabulary
from ops.kafka.clients import create_topics, publish
from streams.collision_digits import DigitStore
from streams.kafka_tools import KafkaToolError, check_topics
from streams.topology import TOPIC_NAMES
from streams.vocab_feed import VocabularyFeed

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh(local_stack):
    s = local_stack.updated(**{"topic_prefix": f"r{time.time_ns()}."})
    create_topics(s)
    return s


class SlowVocabulary(TagVocabulary):
    """Applies entries slowly, so a feed that calls itself caught up too early is caught doing it."""

    def apply(self, entry):
        time.sleep(0.02)
        super().apply(entry)


def test_vocabulary_feed_is_caught_up_only_with_every_tag(fresh):
    entries = samples.vocab_entries()
    # Two small batches, then one large one: a watermark-trusting reader stops at the third tag.
    for batch in (entries[:1], entries[1:2], entries[2:]):
        publish(fresh, "tags.vocab", [(e.tag.encode(), encode(e)) for e in batch])
    vocab = SlowVocabulary(lambda texts: np.ones((len(texts), 4), np.float32))
    feed = VocabularyFeed(fresh, vocab)
    feed.start()
    try:
        assert feed.caught_up.wait(30)
        assert len(vocab) == len(entries) == 30
    finally:
        feed.stop()


def test_digit_store_reads_the_previous_releases_tuples_and_writes_one_record_per_item(fresh):
    # what the release before wrote: one record per tuple with every item's digit, rewritten as it grew
    publish(fresh, "sid.digits", [(b"v:1-2-3", msgpack.packb({"a": 0}))], partition=0)
    publish(fresh, "sid.digits", [(b"v:4-5-6", msgpack.packb({"c": 0}))], partition=0)
    publish(fresh, "sid.digits", [(b"v:1-2-3", msgpack.packb({"a": 0, "b": 1}))], partition=0)
    store = DigitStore(fresh)

    def digits() -> list[tuple[int, object]]:
        assert store.ensure_loaded(0) == []
        return [store.assign(0, b"v:1-2-3", "b"), store.assign(0, b"v:1-2-3", "a"),
                store.assign(0, b"v:1-2-3", "d"), store.assign(0, b"v:4-5-6", "c")]

    replayed_b, replayed_a, newcomer, other = digits()
    assert replayed_b == (1, None) and replayed_a == (0, None) and other == (0, None)
    assert newcomer == (2, (b"v:1-2-3\x00d", msgpack.packb(2)))
    # A partition handed to another worker is read again when it comes back (d was never written: new again).
    store.forget({0})
    assert digits()[2] == (2, (b"v:1-2-3\x00d", msgpack.packb(2)))


def test_a_hundred_thousand_identical_items_get_distinct_digits_that_survive_a_reload(fresh):
    """The tuple's digits no longer live in one record: 1,050 ids of 1 kB made that record too large for the
    producer and the batch was lost. Here 100,000 items share one tuple, through the real broker."""
    key = b"rqvae-L3K16-test:7-7-7"
    ids = [f"{n:08d}-0000-4000-8000-repost00000" for n in range(100_000)]  # uuid-sized ids
    first = DigitStore(fresh)
    assert first.ensure_loaded(0) == []
    given = [first.assign(0, key, i) for i in ids]
    assert [d for d, _ in given] == list(range(len(ids)))
    publish(fresh, "sid.digits", [record for _, record in given], partition=0, timeout_s=120)
    # junk beside them is refused on reading, the rest is read
    publish(fresh, "sid.digits", [(b"junk", b"junk"), (key + b"\x00x", b"\xc1")], partition=0)

    second = DigitStore(fresh)
    rejected = second.ensure_loaded(0)
    assert [r.error.reason for r in rejected] == ["bad_digit_record"] * 2
    assert all(second.assign(0, key, ids[n]) == (n, None) for n in range(0, len(ids), 997))
    assert second.assign(0, key, "newcomer")[0] == len(ids)


def test_worker_refuses_missing_or_mismatched_topics(local_stack):
    missing = local_stack.updated(**{"topic_prefix": f"none{time.time_ns()}."})
    with pytest.raises(KafkaToolError, match="run `enrich topics create`"):
        check_topics(missing)
    good = local_stack.updated(**{"topic_prefix": f"good{time.time_ns()}."})
    create_topics(good)
    check_topics(good)
    odd = local_stack.updated(**{"topic_prefix": f"odd{time.time_ns()}."})
    admin = AdminClient(odd.kafka_client_config())
    futures = admin.create_topics([NewTopic(odd.topic(t), num_partitions=3 if t == "sid.digits" else 4)
                                   for t in TOPIC_NAMES])
    for f in futures.values():
        f.result(15)
    with pytest.raises(KafkaToolError, match="must match"):
        check_topics(odd)
