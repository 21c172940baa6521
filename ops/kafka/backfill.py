"""`enrich backfill`: replay an input topic into a shadow deployment's input, rate-limited and resumable.

Re-enrichment after a model or codebook change runs beside the live path, never instead of it:

1. deploy a shadow worker release with the new bundle and ``ENRICH_TOPIC_PREFIX=<shadow prefix>``
   (its own consumer group, its own output topics, every record stamped with the new versions);
2. ``enrich backfill --to-prefix <shadow prefix>`` copies the source topic, from the beginning to
   (at least) the end it has when the run starts, into ``<shadow prefix>items.new``; new items keep flowing
   to the live path and, through a second backfill run or a dual publish, to the shadow;
3. when the shadow has caught up (``enrich audit`` with the shadow prefix), consumers switch
   topic names, the live release is upgraded or removed, and the old topics are deleted.

Progress is the consumer group ``backfill-<to-prefix>``'s committed offsets, committed after each
batch is acknowledged by the broker, so a stopped run resumes where it stopped (a crash between
the send and the commit re-copies at most one batch; the shadow worker's outputs are keyed and
identical on replay). Keys, values and partitions are copied unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from enrich.errors import EnrichError
from ops.kafka.clients import Deliveries
from ops.settings import ToolSettings
from streams import kafka_tools
from streams.kafka_tools import CatchUp, KafkaToolError
from streams.topology import ITEMS_NEW

log = logging.getLogger(__name__)


class RateLimiter:
    """At most ``rate`` items per second on average, bursts up to one second's worth.

    A generic cell-rate limiter: one theoretical arrival time, one sleep per call, no loop that
    floating-point rounding could keep spinning."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._tat = clock()

    def acquire(self, n: int = 1) -> None:
        if self.rate <= 0:
            return
        now = self._clock()
        self._tat = max(self._tat, now) + n / self.rate
        wait = self._tat - 1.0 - now
        if wait > 0:
            self._sleep(wait)


@dataclass(frozen=True)
class BackfillResult:
    copied: int
    already_done: int
    total: int
    seconds: float


def backfill(settings: ToolSettings, to_prefix: str, source: str = ITEMS_NEW, rate: float = 0.0, batch: int = 500,
             max_items: int = 0, progress: bool = True) -> BackfillResult:
    """Copy ``source`` (under the settings' prefix) into ``<to_prefix><source>``."""
    from tqdm import tqdm

    if not to_prefix or to_prefix == settings.topic_prefix:
        raise EnrichError("--to-prefix must name the shadow deployment's topic prefix, different from the source's")
    src = settings.topic(source)
    dst = to_prefix + source
    group = f"backfill-{to_prefix}"
    consumer = kafka_tools.consumer(settings, group, enable_partition_eof=True, auto_offset_reset="earliest")
    producer = kafka_tools.producer(settings, linger_ms=20)
    sent: Deliveries | None = None
    try:
        md = consumer.list_topics(timeout=10)
        for name in (src, dst):
            if name not in md.topics or md.topics[name].error is not None:
                raise EnrichError(f"topic {name} does not exist; create it first (enrich topics create, with "
                                  f"ENRICH_TOPIC_PREFIX={to_prefix if name == dst else settings.topic_prefix})")
        parts = sorted(md.topics[src].partitions)
        if len(md.topics[dst].partitions) != len(parts):
            raise EnrichError(f"{dst} has {len(md.topics[dst].partitions)} partitions, {src} has {len(parts)}: "
                              "they must match so every item keeps its partition")
        catch_up = CatchUp(consumer, src, parts)
        lows = {p: consumer.get_watermark_offsets(TopicPartition(src, p), timeout=10, cached=False)[0] for p in parts}
        committed = {tp.partition: tp.offset for tp in consumer.committed([TopicPartition(src, p) for p in parts],
                                                                          timeout=10)}
        done_before = sum(max(0, committed[p] - lows[p]) for p in parts if committed[p] >= 0)
        # an estimate: the bundled broker's watermark can stop short of the last record batch (see CatchUp)
        total = max(done_before, sum(catch_up.ends[p] - lows[p] for p in parts))
        consumer.assign([TopicPartition(src, p, committed[p] if committed[p] >= 0 else OFFSET_BEGINNING)
                         for p in parts])
        limiter = RateLimiter(rate)
        bar = tqdm(total=total, initial=done_before, desc=f"backfill {src} -> {dst}", unit="item",
                   disable=not progress)
        copied, t0 = 0, time.perf_counter()
        while not catch_up.done and (not max_items or copied < max_items):
            want = min(batch, max_items - copied) if max_items else batch
            next_offsets: dict[int, int] = {}
            sent = Deliveries(producer, dst)
            n = 0
            for m in consumer.consume(want, 1.0):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        catch_up.on_eof(m.partition(), m.offset())
                        continue
                    raise EnrichError(f"reading {src}: {m.error().str()}")
                limiter.acquire()
                sent.produce(m.value(), m.key(), partition=m.partition(), headers=m.headers() or None)
                producer.poll(0)
                next_offsets[m.partition()] = m.offset() + 1
                n += 1
            if n:
                try:  # offsets are committed only past records the broker acknowledged, one by one
                    sent.settle(30.0)
                except KafkaToolError as exc:
                    raise EnrichError(f"{exc}; nothing of this batch was committed, rerun to resume") from None
                consumer.commit(offsets=[TopicPartition(src, p, o) for p, o in next_offsets.items()],
                                asynchronous=False)
                copied += n
                if done_before + copied > bar.total:
                    bar.total = done_before + copied
                bar.update(n)
        bar.close()
        return BackfillResult(copied, done_before, max(total, done_before + copied), time.perf_counter() - t0)
    finally:
        consumer.close()
        if sent is not None:
            sent.abandon()  # a failed batch, not committed: what of it is still queued stays unsent
