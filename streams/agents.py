"""The worker's agents, one per stage of ``streams.topology.STAGES``; they read, call, send and acknowledge.

``enrich_items`` reads ``items.new`` in micro-batches, enriches them through the ``Enrichment`` service
and hands each item to ``items.coded`` (or ``items.dlq``). The second stage, which numbers the collisions of
each code tuple and publishes the outputs, runs on a consumer of its own (``streams.publish_stage``). An event is
acked only after its outputs are acknowledged by the broker, so a crash replays, never loses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import faust

from enrich import metrics
from enrich.pipeline import Enriched, RawEvent, SourceRef
from enrich.schemas import CodedItem, encode
from streams.services import Enrichment
from streams.settings import Settings
from streams.topology import ITEMS_CODED, ITEMS_DLQ, STAGES

log = logging.getLogger(__name__)


async def delivered(futures: list[Any]) -> None:
    """Outputs must be acknowledged by the broker before the input offsets may be committed."""
    await asyncio.gather(*futures)


def add_agents(app: faust.App, settings: Settings, enrichment: Enrichment,
               topics: dict[str, faust.TopicT]) -> dict[str, Any]:
    """The first stage's agent on ``app``, reading and writing ``topics`` (by unprefixed name); by agent name.
    The second stage runs on a consumer of its own (``streams.publish_stage``)."""
    enrich_stage = STAGES[0]

    @app.agent(topics[enrich_stage.reads], concurrency=1, name=enrich_stage.agent)
    async def enrich_items(stream: faust.StreamT) -> None:
        """Enrich new items in micro-batches; hand each to items.coded, or its dead letter to items.dlq."""
        inflight: deque[asyncio.Task[None]] = deque()

        async def enrich_batch(events: list[Any], previous: asyncio.Task[None] | None) -> None:
            try:
                await enrich_and_hand_off(events, previous)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug, not bad input (that goes to the DLQ): stop, replay after restart
                log.exception("batch of %d events failed; stopping the worker, its offsets stay uncommitted",
                              len(events))
                await app.crash(exc)
                raise

        async def enrich_and_hand_off(events: list[Any], previous: asyncio.Task[None] | None) -> None:
            # A null value (a tombstone) reads as empty bytes: dead-lettered as not msgpack, like any empty record.
            raw = [RawEvent(e.message.key, e.message.value or b"",
                            SourceRef(e.message.topic, e.message.partition, e.message.offset)) for e in events]
            metrics.INPUT_BYTES.inc(sum(len(r.value) + len(r.key or b"") for r in raw))
            outcomes = await enrichment.run(raw)
            t0 = time.perf_counter()
            futures = []
            for o in outcomes:
                if isinstance(o, Enriched):
                    metrics.ITEM_AGE.labels("enriched").observe(
                        max(0.0, (o.record.enriched_at - o.record.created_at) / 1000))
                    coded = CodedItem.of(o.record, o.neighbor, o.tag_edges)
                    futures.append(await topics[ITEMS_CODED].send(key=coded.key, value=coded.encode()))
                else:
                    futures.append(await topics[ITEMS_DLQ].send(key=o.key, value=encode(o)))
                    metrics.DLQ.labels(o.reason, o.stage).inc()
            token = object()
            enrichment.handoffs[token] = time.monotonic()  # /readyz and the broker-wait gauge read it
            try:
                await delivered(futures)
            finally:
                del enrichment.handoffs[token]
            metrics.STAGE_SECONDS.labels("handoff").observe(time.perf_counter() - t0)
            if previous is not None:
                await previous  # acks stay in offset order
            for e in events:
                await stream.ack(e)

        try:
            async for events in stream.noack_take(settings.batch_size, within=settings.batch_wait_s):
                metrics.BATCH_SIZE.observe(len(events))
                metrics.ITEMS_IN.inc(len(events))
                # Up to ENRICH_INFLIGHT_BATCHES batches are inferred and handed off at once, so the model server
                # computes one while this process prepares or publishes another. An event is acked only after
                # every output of its batch and of all earlier batches is acknowledged by the broker.
                while len(inflight) >= settings.inflight_batches:
                    await inflight.popleft()
                inflight.append(asyncio.create_task(enrich_batch(events, inflight[-1] if inflight else None)))
        finally:
            # Stopping (SIGTERM, rebalance): let the batches in flight finish while the backend answers, so
            # their offsets commit and nothing is replayed; never wait for a backend that is down. Batches
            # not acked by then are replayed by whoever owns their partitions next.
            if inflight and enrichment.backend_ok:
                await asyncio.wait(inflight, timeout=settings.drain_s)
            for task in inflight:
                task.cancel()

    return {enrich_stage.agent: enrich_items}
