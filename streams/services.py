"""Long-lived parts of a worker: the inference backend, the pipeline, the vocabulary feed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from enrich import metrics
from enrich.errors import BackendUnavailable
from enrich.inference import InferenceBackend, OnnxRuntimeBackend, TritonBackend
from enrich.models import load_models
from enrich.pipeline import Outcome, Pipeline, PipelineConfig, RawEvent
from enrich.schemas import Limits
from enrich.semantic_ids import SemanticIdCodebook
from enrich.settings import Settings
from enrich.tags import TagVocabulary
from streams.vocab_feed import VocabularyFeed

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> InferenceBackend:
    if settings.backend == "onnxruntime":
        return OnnxRuntimeBackend(settings.models_path)
    return TritonBackend(settings.triton_url, settings.triton_timeout_s)


def make_pipeline(settings: Settings, backend: InferenceBackend) -> Pipeline:
    embedder, tagger = load_models(settings.models_path, backend, settings.max_text_tokens, settings.model_batch)
    config = PipelineConfig(candidate_tags=settings.candidate_tags, min_grade=settings.min_grade,
                            max_text_chars=settings.max_text_chars,
                            limits=Limits(max_images=settings.max_images, max_image_bytes=settings.max_image_bytes))
    return Pipeline(embedder, tagger, TagVocabulary(embedder.embed_texts),
                    SemanticIdCodebook.load(settings.codebook_path), config)


class Enrichment:
    """Owns the pipeline; runs batches off the event loop and retries an unavailable backend forever."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend = make_backend(settings)
        self.pipeline = make_pipeline(settings, self.backend)
        self.feed = VocabularyFeed(settings, self.pipeline.vocabulary)
        self.backend_ok = True
        # Called with False when the backend becomes unavailable and True when it is back (the worker
        # pauses and resumes fetching its input partitions).
        self.on_backend_state: Callable[[bool], None] = lambda _up: None

    def start(self) -> None:
        self.feed.start()

    def stop(self) -> None:
        self.feed.stop()
        self.backend.close()

    async def run(self, events: list[RawEvent]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                outcomes = await loop.run_in_executor(None, self.pipeline.run, events)
                if not self.backend_ok:
                    log.info("model backend is back; resuming input")
                    self.backend_ok = True
                    self.on_backend_state(True)
                metrics.BACKEND_UP.set(1)
                return outcomes
            except BackendUnavailable as exc:
                # Never drop or skip: hold the batch (its offsets stay uncommitted) until the backend returns,
                # and stop fetching more input meanwhile.
                if self.backend_ok:
                    self.backend_ok = False
                    self.on_backend_state(False)
                metrics.BACKEND_UP.set(0)
                metrics.BACKEND_RETRIES.inc()
                log.warning("model backend unavailable, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    def wait_vocabulary(self, timeout_s: float) -> bool:
        t0 = time.monotonic()
        ok = self.feed.caught_up.wait(timeout_s)
        log.info("vocabulary ready=%s after %.2fs (%d tags)", ok, time.monotonic() - t0,
                 len(self.pipeline.vocabulary))
        return ok
