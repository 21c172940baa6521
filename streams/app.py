"""The Faust app: topics, the enrichment agent, health and metrics pages.

``create_app(settings)`` builds everything from one settings object; the
``enrich worker`` command runs it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from dataclasses import asdict
from typing import Any

import faust
import msgpack
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from enrich import metrics
from enrich.errors import InvalidItem, Stop
from enrich.pipeline import Enriched, RawEvent, SourceRef, dead_letter
from enrich.schemas import DeadLetter, encode, now_ms
from enrich.settings import Settings
from enrich.vectors.semantic_ids import collision_key
from streams.collision_digits import DigitStore, encode_digits
from streams.services import Enrichment
from streams.transport import EnrichApp

log = logging.getLogger(__name__)

# The Helm chart's probes and ServiceMonitor point at these (tests/helm checks they agree).
LIVE_PATH = "/livez"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.uses_tls:
        return None
    context = ssl.create_default_context(cafile=str(settings.ssl_ca_file) if settings.ssl_ca_file else None)
    if settings.ssl_cert_file:
        context.load_cert_chain(str(settings.ssl_cert_file),
                                str(settings.ssl_key_file) if settings.ssl_key_file else None)
    return context


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.sasl_username,
                                     password=settings.sasl_password.get_secret_value(),
                                     mechanism=settings.sasl_mechanism,
                                     ssl_context=_ssl_context(settings))
    if settings.uses_tls:
        return faust.SSLCredentials(_ssl_context(settings))
    return None


# items.coded is a contract between the workers of a rolling update: versioned like the public topics.
# 0 is the bare list the releases before it wrote (still read); a worker stops on a version it cannot read
# rather than guess, so the partition waits for a worker that can.
CODED_SCHEMA = 1
READABLE_CODED = (0, 1)


class CodedVersionError(Stop):
    """An items.coded record of a version this worker cannot read (written by a newer release)."""


def coded_payload(o: Enriched) -> bytes:
    """An enriched item on its way to the collision-digit stage; its semantic ID is still the bare code tuple."""
    return msgpack.packb({"schema": CODED_SCHEMA, "record": asdict(o.record), "neighbor": asdict(o.neighbor),
                          "edges": [encode(e) for e in o.tag_edges]}, use_bin_type=True)


def decode_coded(raw: bytes | None) -> tuple[dict[str, Any], dict[str, Any], list[bytes]]:
    """An ``items.coded`` record (this version or the previous release's), ``InvalidItem`` when it is not
    one a worker wrote, ``CodedVersionError`` when a newer release wrote it."""
    try:
        value = msgpack.unpackb(raw or b"", raw=False)
    except (ValueError, TypeError) as exc:
        raise InvalidItem("bad_coded_record", f"not msgpack: {type(exc).__name__}: {exc}",
                          stage="semantic_id") from None
    if isinstance(value, dict) and "schema" in value:
        version = value["schema"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidItem("bad_coded_record", f"schema {version!r} is not an integer", stage="semantic_id")
        if version not in READABLE_CODED:
            raise CodedVersionError(f"items.coded record of schema {version}; this worker reads "
                                    f"{READABLE_CODED}: a newer release wrote it. Finish the rolling update (the "
                                    "newer workers take this partition); its offset stays uncommitted meanwhile")
        value = [value.get("record"), value.get("neighbor"), value.get("edges")]
    try:
        record, neighbor, edges = value
        if not (isinstance(record, dict) and isinstance(neighbor, dict) and isinstance(edges, list)
                and isinstance(record["item_id"], str) and isinstance(record["created_at"], int)
                and isinstance(record["semantic_id"], list) and all(isinstance(e, bytes) for e in edges)):
            raise TypeError("unexpected shape")
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidItem("bad_coded_record", f"not an items.coded record: {type(exc).__name__}: {exc}",
                          stage="semantic_id") from None
    return record, neighbor, edges


def _repack(record: dict[str, Any], semantic_id: list[int]) -> bytes:
    return msgpack.packb(record | {"semantic_id": semantic_id}, use_bin_type=True)


def create_app(settings: Settings, enrichment: Enrichment) -> faust.App:
    """``enrichment`` is started by the caller (models loaded, vocabulary caught up) before the worker runs."""
    app = EnrichApp(
        settings.group_id,
        broker=[f"kafka://{b}" for b in settings.broker.split(",")],
        broker_credentials=_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        topic_allow_declare=False,
        topic_disable_leader=True,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 4),
        broker_commit_every=settings.batch_size * 4,
        broker_commit_interval=1.0,
        web_port=settings.web_port,
        web_host="0.0.0.0",
        # Faust's /router and /table pages show table contents and routing to anyone who can reach the port
        web_router_enabled=settings.web_faust_pages,
        web_tables_enabled=settings.web_faust_pages,
        # a dead letter is cut to ENRICH_MAX_MESSAGE_BYTES; the producer must take that much and a little more
        producer_max_request_size=settings.max_message_bytes + 64 * 1024,
        stream_buffer_maxsize=max(64, settings.batch_size * 4),
        # Faust would wait for every fetched event to be acked before stopping, forever while the model
        # backend is down; the agent drains its batches in flight itself, bounded by ENRICH_DRAIN_S.
        stream_wait_empty=False,
        # Faust's default data dir is ./<app id>-data, which a read-only root filesystem refuses
        datadir=str(settings.state_dir / "faust"),
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    names = ("items.new", "items.coded", "items.enriched", "recall.tags", "recall.neighbors", "items.dlq",
             "sid.digits")
    topics = {name: app.topic(settings.topic(name), value_type=bytes, key_type=bytes) for name in names}
    digits = DigitStore(settings)
    coded_topic = topics["items.coded"].get_topic_name()

    @app.on_partitions_revoked.connect
    async def forget_digits(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        digits.forget({tp.partition for tp in revoked if tp.topic == coded_topic})

    new_topic = topics["items.new"].get_topic_name()

    def pause_input(backend_up: bool) -> None:
        tps = {tp for tp in app.consumer.assignment() if tp.topic == new_topic}
        if backend_up:
            app.consumer.resume_partitions(tps)
        else:
            app.consumer.pause_partitions(tps)
        metrics.PAUSED_PARTITIONS.set(len(paused_inputs()))
        log.warning("model backend %s: %s %d input partitions", "up" if backend_up else "down",
                    "resumed" if backend_up else "paused", len(tps))

    enrichment.on_backend_state = pause_input

    async def delivered(futures: list[Any]) -> None:
        # Outputs must be acknowledged by the broker before the input offsets may be committed.
        await asyncio.gather(*futures)

    @app.agent(topics["items.new"], concurrency=1)
    async def enrich_items(stream: faust.StreamT) -> None:
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
            raw = [RawEvent(e.message.key, e.message.value,
                            SourceRef(e.message.topic, e.message.partition, e.message.offset)) for e in events]
            metrics.INPUT_BYTES.inc(sum(len(r.value) + len(r.key or b"") for r in raw))
            outcomes = await enrichment.run(raw)
            t0 = time.perf_counter()
            futures = []
            for o in outcomes:
                if isinstance(o, Enriched):
                    key = collision_key(o.record.versions.codebook, o.record.semantic_id)
                    futures.append(await topics["items.coded"].send(key=key, value=coded_payload(o)))
                else:
                    futures.append(await topics["items.dlq"].send(key=o.key, value=encode(o)))
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

    @app.agent(topics["items.coded"], concurrency=1)
    async def assign_semantic_ids(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_wait_s):
            t0 = time.perf_counter()
            generation = digits.generation
            outputs: list[tuple[str, bytes, bytes]] = []
            created: list[int] = []
            changed: dict[tuple[int, bytes], bytes] = {}
            dead: list[DeadLetter] = []
            for e in events:
                partition, key = e.message.partition, e.message.key
                try:
                    record, neighbor, edges = decode_coded(e.message.value)
                except CodedVersionError as exc:  # a newer release's record: stop without acking it
                    log.error("%s at %s[%d]@%d", exc, e.message.topic, partition, e.message.offset)
                    await app.crash(exc)
                    return
                except InvalidItem as err:  # someone else wrote to the internal topic: keep it, skip it
                    dead.append(dead_letter(RawEvent(key, e.message.value or b"", SourceRef(
                        e.message.topic, partition, e.message.offset)), err, None, settings.max_message_bytes))
                    continue
                await digits.ensure_loaded(partition)
                digit, assigned = digits.assign(partition, key, record["item_id"])
                if assigned is not None:
                    changed[partition, key] = encode_digits(assigned)
                sid = [*record["semantic_id"], digit]
                item_key = record["item_id"].encode()
                outputs += [("items.enriched", item_key, _repack(record, sid)),
                            ("recall.neighbors", item_key, _repack(neighbor, sid))]
                outputs += [("recall.tags", item_key, edge) for edge in edges]
                created.append(record["created_at"])
            if digits.generation != generation:
                # Partitions were revoked while this batch was numbered: publish nothing and ack nothing;
                # the partitions' owner replays the batch against the digits as they are now.
                log.info("rebalance during a digit batch; leaving its %d events to the new owner", len(events))
                continue
            futures = [await topics[t].send(key=k, value=v) for t, k, v in outputs]
            metrics.OUTPUT_BYTES.inc(sum(len(k) + len(v) for _, k, v in outputs))
            for d in dead:
                futures.append(await topics["items.dlq"].send(key=d.key, value=encode(d)))
                metrics.DLQ.labels(d.reason, d.stage).inc()
            # The digits go to the sid.digits partition numbered like the items.coded partition that owns them.
            for (partition, key), value in changed.items():
                futures.append(await topics["sid.digits"].send(key=key, value=value, partition=partition))
            await delivered(futures)
            metrics.STAGE_SECONDS.labels("publish").observe(time.perf_counter() - t0)
            done = now_ms()
            metrics.ITEMS_OUT.inc(len(created))
            for c in created:
                metrics.END_TO_END.observe(max(0.0, (done - c) / 1000))
            for e in events:
                await stream.ack(e)

    input_topics = {new_topic, coded_topic}

    def paused_inputs() -> set[Any]:
        # faust-streaming 0.15 keeps no public accessor for the partitions it has paused.
        paused = set(getattr(app.consumer, "_paused_partitions", ()))
        return {tp for tp in app.consumer.assignment() if tp.topic in input_topics and tp in paused}

    @app.timer(interval=settings.lag_interval_s)
    async def track_lag() -> None:
        # The monitor's end offsets come from fetch responses (right on Tansu too, unlike ListOffsets).
        ends, committed = app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets
        assigned = {tp for tp in app.consumer.assignment() if tp.topic in input_topics}
        metrics.CONSUMER_LAG.clear()
        for tp in assigned:
            if tp in ends:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, ends[tp] - committed.get(tp, 0)))
        metrics.PAUSED_PARTITIONS.set(len(paused_inputs()))

    @app.page(METRICS_PATH)
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type, and Prometheus' type carries one.
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page(LIVE_PATH)
    async def live_page(web: Any, request: Any) -> Any:
        # Answering at all proves the event loop runs; an unreachable backend is a readiness matter.
        return web.json({"live": True})

    @app.task
    async def warm_up() -> None:
        try:
            await enrichment.warm_up()
        except Exception as exc:  # a deployment fault (a model missing): stop, like a failing batch does
            log.exception("warm-up failed; stopping the worker")
            await app.crash(exc)

    @app.page(READY_PATH)
    async def ready_page(web: Any, request: Any) -> Any:
        # Ready once every model is ready and a warm-up item went through; unready while the backend is down.
        body = {"ready": enrichment.ready, "warmed_up": enrichment.warm, "backend_ok": enrichment.backend_ok,
                "paused_partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in paused_inputs()),
                "vocab_tags": len(enrichment.pipeline.vocabulary),
                "versions": enrichment.pipeline.versions.__dict__}
        return web.json(body, status=200 if enrichment.ready else 503)

    return app
