"""Backfill into a shadow deployment against the real broker: complete, resumable, bounded, rate-limited."""

from __future__ import annotations

import gc
import time

import msgpack
import pytest
from confluent_kafka import Producer

from corpora import samples
from enrich.errors import EnrichError
from ops.kafka.backfill import RateLimiter, backfill
from ops.kafka.clients import create_topics, publish
from streams.kafka_tools import read_to_end

pytestmark = pytest.mark.integration


def test_rate_limiter_spaces_items_on_a_fake_clock() -> None:
    now = [0.0]
    slept = []

    def sleep(dt: float) -> None:
        slept.append(dt)
        now[0] += dt

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(30):
        limiter.acquire()
    # one second's burst, then 20 more at 10/s
    assert now[0] == pytest.approx(2.0, abs=1e-6)
    RateLimiter(0, clock=lambda: now[0], sleep=sleep).acquire(10**6)  # 0: unlimited, never sleeps
    assert now[0] == pytest.approx(2.0, abs=1e-6)


def test_backfill_copies_everything_once_and_resumes_where_it_stopped(local_stack) -> None:
    tag = f"b{time.time_ns()}."
    live = local_stack.updated(topic_prefix=tag)
    shadow = local_stack.updated(**{"topic_prefix": f"{tag}shadow."})
    create_topics(live)
    create_topics(shadow)
    items = samples.sample_items(45, seed=3)
    publish(live, "items.new", [(i["id"].encode(), msgpack.packb(i, use_bin_type=True)) for i in items])

    first = backfill(live, shadow.topic_prefix, max_items=20, batch=8, progress=False)
    # the total is an estimate (the local broker's watermark can stop short of the last batch)
    assert first.copied == 20 and 20 <= first.total <= 45
    second = backfill(live, shadow.topic_prefix, batch=8, progress=False)
    assert second.already_done == 20 and second.copied == 25
    third = backfill(live, shadow.topic_prefix, progress=False)
    assert third.copied == 0 and third.already_done == 45

    src = read_to_end(live, ["items.new"])
    dst = read_to_end(shadow, ["items.new"])
    assert sorted((r.partition, r.key, r.value) for r in dst) == sorted((r.partition, r.key, r.value) for r in src)


def test_backfill_refuses_to_copy_onto_itself_or_into_missing_topics(local_stack) -> None:
    tag = f"c{time.time_ns()}."
    live = local_stack.updated(topic_prefix=tag)
    create_topics(live)
    with pytest.raises(EnrichError, match="different from the source"):
        backfill(live, tag, progress=False)
    with pytest.raises(EnrichError, match="does not exist"):
        backfill(live, f"{tag}nowhere.", progress=False)


def test_a_refused_record_stops_the_backfill_before_its_offset_and_nothing_is_lost(local_stack) -> None:
    """A record the shadow side refuses (larger than its ENRICH_MAX_MESSAGE_BYTES) fails the batch: nothing of
    it is committed, and once the limit is fixed a rerun copies every record."""
    tag = f"r{time.time_ns()}."
    live = local_stack.updated(topic_prefix=tag, partitions=1)
    shadow = local_stack.updated(**{"topic_prefix": f"{tag}shadow.", "partitions": 1})
    create_topics(live)
    create_topics(shadow)
    items = samples.sample_items(6, seed=4)
    items[3] = items[3] | {"text": "x" * 90_000}  # under the live limit, over the strict one below
    publish(live, "items.new", [(i["id"].encode(), msgpack.packb(i, use_bin_type=True)) for i in items])
    strict = live.updated(max_message_bytes=65_536)

    def producers() -> set[int]:
        gc.collect()
        return {id(o) for o in gc.get_objects() if isinstance(o, Producer)}

    before = producers()
    with pytest.raises(EnrichError, match="nothing of this batch was committed|cannot publish"):
        backfill(strict, shadow.topic_prefix, batch=2, progress=False)
    assert producers() <= before  # the failed run's producer is released, not held by its unserved callbacks
    done = backfill(live, shadow.topic_prefix, batch=2, progress=False)
    assert done.already_done <= 3 and done.already_done + done.copied == 6  # resumed before the refused record
    copied = {r.key for r in read_to_end(shadow, ["items.new"])}
    assert copied == {i["id"].encode() for i in items}
