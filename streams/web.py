"""The worker's pages: Prometheus metrics, liveness and readiness (the Helm chart's probes point at these)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.publish_stage import PublishStage
from streams.services import Enrichment

# The Helm chart's probes and ServiceMonitor point at these (tests/helm checks they agree).
LIVE_PATH = "/livez"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"


def add_pages(app: faust.App, enrichment: Enrichment, paused_inputs: Callable[[], set[Any]],
              publishing: PublishStage) -> None:
    @app.page(METRICS_PATH)
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type, and Prometheus' type carries one.
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page(LIVE_PATH)
    async def live_page(web: Any, request: Any) -> Any:
        # Answering at all proves the event loop runs; an unreachable backend is a readiness matter.
        return web.json({"live": True})

    @app.page(READY_PATH)
    async def ready_page(web: Any, request: Any) -> Any:
        # Ready once every model is ready and a warm-up item went through; unready while the backend is down.
        body = {"ready": enrichment.ready, "warmed_up": enrichment.warm, "backend_ok": enrichment.backend_ok,
                "paused_partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in paused_inputs()),
                "waiting_for": enrichment.waiting_for() + publishing.waiting_for(), "publish_stage": publishing.ready}
        if enrichment.loaded:  # never load models from a probe
            vocabulary = enrichment.pipeline.vocabulary
            body |= {"vocab_tags": len(vocabulary), "vocab_pending": vocabulary.pending,
                     "versions": enrichment.pipeline.versions.__dict__}
        return web.json(body, status=200 if enrichment.ready and publishing.ready else 503)

