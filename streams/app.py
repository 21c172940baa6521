"""The Faust app: the worker's topics, its long-lived services, the two stages' agents and its pages.

``create_app(settings)`` builds it from one settings object; ``enrich worker`` runs it, and so does
``faust -A streams.app worker`` (the module's ``app``, built from the environment's ENRICH_* settings
on first access). The ``Enrichment`` service (model backend, pipeline, vocabulary feed) starts before
the consumer and stops after it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import faust

from enrich import metrics
from streams.agents import add_agents
from streams.publish_stage import Publishing
from streams.services import Enrichment
from streams.settings import Settings
from streams.topology import STAGES, STREAM_TOPICS
from streams.transport import EnrichApp
from streams.web import add_pages

log = logging.getLogger(__name__)


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


def create_app(settings: Settings) -> EnrichApp:
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
        # Fair sharing of the worker among its input partitions: each poll takes at most one micro-batch, the
        # partitions take turns (streams.transport), and the agent's buffer holds what the batches in flight
        # and the next one need, so a record of a quiet partition waits behind a few batches, never a backlog.
        broker_max_poll_records=settings.batch_size * settings.inflight_batches,
        stream_buffer_maxsize=max(64, settings.batch_size * 4),
        # Faust would wait for every fetched event to be acked before stopping, forever while the model
        # backend is down; the agent drains its batches in flight itself, bounded by ENRICH_DRAIN_S.
        stream_wait_empty=False,
        # Faust's default data dir is ./<app id>-data, which a read-only root filesystem refuses
        datadir=str(settings.state_dir / "faust"),
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    enrichment = app.start_first(Enrichment(settings))
    publishing = app.start_first(Publishing(settings, app))
    topics = {name: app.topic(settings.topic(name), value_type=bytes, key_type=bytes) for name in STREAM_TOPICS}
    new_topic = topics[STAGES[0].reads].get_topic_name()

    paused: set[Any] = set()  # what this worker paused while the backend was down (Faust keeps its own set private)

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        paused.difference_update(revoked)  # Faust resumes a revoked partition; whoever gets it next decides

    def paused_inputs() -> set[Any]:
        return paused & set(app.consumer.assignment())

    def pause_input(backend_up: bool) -> None:
        tps = {tp for tp in app.consumer.assignment() if tp.topic == new_topic}
        if backend_up:
            app.consumer.resume_partitions(tps)
            paused.difference_update(tps)
        else:
            app.consumer.pause_partitions(tps)
            paused.update(tps)
        metrics.PAUSED_PARTITIONS.set(len(paused_inputs()))
        log.warning("model backend %s: %s %d input partitions", "up" if backend_up else "down",
                    "resumed" if backend_up else "paused", len(tps))

    enrichment.on_backend_state = pause_input
    metrics.BROKER_WAIT.labels("handoff").set_function(enrichment.handoff_wait_s)
    metrics.BROKER_WAIT.labels("publish").set_function(publishing.stage.broker_wait_s)

    @app.timer(interval=settings.lag_interval_s)
    async def track_lag() -> None:
        # The monitor's end offsets come from fetch responses (right on Tansu too, unlike ListOffsets).
        ends, committed = app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets
        assigned = {tp for tp in app.consumer.assignment() if tp.topic == new_topic}
        lags = {(tp.topic, tp.partition): max(0, ends[tp] - committed.get(tp, 0)) for tp in assigned if tp in ends}
        lags |= await asyncio.to_thread(publishing.stage.lag)  # the second stage's, from its own consumer
        metrics.CONSUMER_LAG.clear()
        for (topic, partition), lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        metrics.PAUSED_PARTITIONS.set(len(paused_inputs()))

    @app.task
    async def warm_up() -> None:
        try:
            await enrichment.warm_up()
        except Exception as exc:  # a deployment fault (a model missing): stop, like a failing batch does
            log.exception("warm-up failed; stopping the worker")
            await app.crash(exc)

    app.enrichment, app.stream_topics, app.publishing = enrichment, topics, publishing
    add_agents(app, settings, enrichment, topics)
    add_pages(app, enrichment, paused_inputs, publishing.stage)
    return app


def __getattr__(name: str) -> Any:
    """``app``: the worker of this environment's settings, for ``faust -A streams.app``; built on first access,
    so importing this module builds nothing."""
    if name == "app":
        globals()["app"] = built = create_app(Settings())
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
