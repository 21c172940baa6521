"""The worker's agents, one per stage of ``streams.topology.STAGES``; they read, call, send and acknowledge.

``enrich_items`` reads ``items.new`` in micro-batches, enriches them through the ``Enrichment`` service
and hands each item to ``items.coded`` (or ``items.dlq``); ``assign_semantic_ids`` numbers the collisions of
each code tuple and publishes the outputs. The ``items.coded`` record, and the step that finishes a semantic
ID with its digit, are ``enrich.schemas.CodedItem``. An event is acked only after its outputs are acknowledged by
the broker, so a crash replays, never loses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import faust

from enrich import metrics
from enrich.errors import InvalidItem
from enrich.pipeline import Enriched, RawEvent, SourceRef, dead_letter
from enrich.schemas import CodedItem, CodedVersionError, DeadLetter, decode_coded, encode, now_ms
from streams.collision_digits import DigitStore
from streams.services import Enrichment
from streams.settings import Settings
from streams.topology import ITEMS_CODED, ITEMS_DLQ, ITEMS_ENRICHED, RECALL_NEIGHBORS, RECALL_TAGS, SID_DIGITS, STAGES

log = logging.getLogger(__name__)


async def delivered(futures: list[Any]) -> None:
    """Outputs must be acknowledged by the broker before the input offsets may be committed."""
    await asyncio.gather(*futures)


def add_agents(app: faust.App, settings: Settings, enrichment: Enrichment, topics: dict[str, faust.TopicT],
               digits: DigitStore) -> dict[str, Any]:
    """The stages' agents on ``app``, reading and writing ``topics`` (by unprefixed name); by agent name."""
    enrich_stage, digit_stage = STAGES

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
                    coded = CodedItem.of(o.record, o.neighbor, o.tag_edges)
                    futures.append(await topics[ITEMS_CODED].send(key=coded.key, value=coded.encode()))
                else:
                    futures.append(await topics[ITEMS_DLQ].send(key=o.key, value=encode(o)))
                    metrics.DLQ.labels(o.reason, o.stage).inc()
            await delivered(futures)
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

    async def number_and_publish(stream: faust.StreamT, events: list[Any]) -> None:
        """One batch of items.coded: digits given, outputs and new digits sent, then the events acked."""
        t0 = time.perf_counter()
        generation = digits.generation
        outputs: list[tuple[str, bytes, bytes]] = []
        created: list[int] = []
        changed: list[tuple[int, bytes, bytes]] = []
        dead: list[DeadLetter] = []
        for e in events:
            partition, topic, offset = e.message.partition, e.message.topic, e.message.offset
            source = SourceRef(topic, partition, offset)
            for rejected in await digits.ensure_loaded(partition):
                r = rejected.record
                dead.append(dead_letter(RawEvent(r.key, r.value or b"", SourceRef(
                    settings.topic(r.topic), r.partition, r.offset)), rejected.error, None,
                    settings.max_message_bytes))
            try:
                coded = decode_coded(e.message.value, e.message.key)
            except CodedVersionError as exc:
                log.error("%s at %s[%d]@%d", exc, topic, partition, offset)
                raise
            except InvalidItem as err:  # someone else wrote to the internal topic: keep it, skip it
                dead.append(dead_letter(RawEvent(e.message.key, e.message.value or b"", source), err, None,
                                        settings.max_message_bytes))
                continue
            digit, new_record = digits.assign(partition, coded.key, coded.item_id)
            if new_record is not None:
                changed.append((partition, *new_record))
            done = coded.finish(digit)
            item_key = done.item_id.encode()
            outputs += [(ITEMS_ENRICHED, item_key, done.enriched), (RECALL_NEIGHBORS, item_key, done.neighbor)]
            outputs += [(RECALL_TAGS, item_key, edge) for edge in done.edges]
            created.append(done.created_at)
        if digits.generation != generation:
            # Partitions were revoked while this batch was numbered: publish nothing and ack nothing;
            # the partitions' owner replays the batch against the digits as they are now.
            log.info("rebalance during a digit batch; leaving its %d events to the new owner", len(events))
            return
        futures = [await topics[t].send(key=k, value=v) for t, k, v in outputs]
        metrics.OUTPUT_BYTES.inc(sum(len(k) + len(v) for _, k, v in outputs))
        for d in dead:
            futures.append(await topics[ITEMS_DLQ].send(key=d.key, value=encode(d)))
            metrics.DLQ.labels(d.reason, d.stage).inc()
        # The digits go to the sid.digits partition numbered like the items.coded partition that owns them.
        for partition, key, value in changed:
            futures.append(await topics[SID_DIGITS].send(key=key, value=value, partition=partition))
        await delivered(futures)
        metrics.STAGE_SECONDS.labels("publish").observe(time.perf_counter() - t0)
        done = now_ms()
        metrics.ITEMS_OUT.inc(len(created))
        for c in created:
            metrics.END_TO_END.observe(max(0.0, (done - c) / 1000))
        for e in events:
            await stream.ack(e)

    @app.agent(topics[digit_stage.reads], concurrency=1, name=digit_stage.agent)
    async def assign_semantic_ids(stream: faust.StreamT) -> None:
        """Number each code tuple's collisions and publish the item's outputs."""
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_wait_s):
            try:
                await number_and_publish(stream, events)
            except CodedVersionError as exc:  # a newer release's record: stop without acking it
                await app.crash(exc)
                return
            except Exception as exc:  # a record the broker refused, a bug: stop, the batch replays after restart
                log.exception("digit batch of %d events failed; stopping the worker, its offsets stay "
                              "uncommitted", len(events))
                await app.crash(exc)
                raise

    return {enrich_stage.agent: enrich_items, digit_stage.agent: assign_semantic_ids}
