"""The worker's long-lived service: the inference backend, the pipeline and the vocabulary feed, as one
``mode`` Service the app starts before its consumer (``EnrichApp.start_first``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mode import Service

from enrich import metrics
from enrich.assembly import make_backend, make_pipeline
from enrich.errors import BackendUnavailable, InvalidItem, ModelConfigError, ModelRejected
from enrich.models.inference import InferenceBackend
from enrich.pipeline import Outcome, Pipeline, RawEvent, SourceRef, dead_letter
from enrich.schemas import SCHEMA_VERSION, DeadLetter, claimed_id, encode_item, now_ms
from streams.kafka_tools import KafkaToolError, check_topics
from streams.settings import Settings
from streams.vocab_feed import VocabularyFeed

log = logging.getLogger(__name__)

MODEL_REJECTED = "model_rejected"


def warm_up_event() -> bytes:
    """A small item with text and an image, made here (never published)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (40, 120, 200)).save(buf, "PNG")
    return encode_item({"schema": SCHEMA_VERSION, "id": "warm-up", "kind": "image_post", "title": "warm-up",
                        "text": "a blue picture to warm the models up", "images": [buf.getvalue()],
                        "created_at": now_ms()})


class Enrichment(Service):
    """Owns the pipeline; runs batches off the event loop and retries an unavailable backend forever.

    Built, it holds nothing but its settings, so building the app loads nothing (``faust -A streams.app
    --help`` works where no model was exported). Started, it checks the topics (the same check whichever
    command started the worker), loads the backend client and the models, feeds ``tags.vocab`` into the
    vocabulary and waits (``VOCABULARY_WAIT_S`` at most) until the feed has read the topic to its end and
    embedded its tags, so the first batches see the whole vocabulary (a vocabulary too large for that goes on
    being embedded while items flow); stopped, it closes the feed, the decoders and the backend.
    """

    VOCABULARY_WAIT_S = 30.0

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self._models: tuple[InferenceBackend, Pipeline, VocabularyFeed] | None = None
        self.backend_ok = True
        self.handoffs: dict[object, float] = {}  # batches whose hand-off the broker has not acknowledged, since when
        self.warm = False  # set once the backend reported every model ready and a warm-up item ran through
        # Called with False when the backend becomes unavailable and True when it is back (the worker
        # pauses and resumes fetching its input partitions).
        self.on_backend_state: Callable[[bool], None] = lambda _up: None

    @property
    def loaded(self) -> bool:
        return self._models is not None

    def load(self) -> tuple[InferenceBackend, Pipeline, VocabularyFeed]:
        """The backend client, the pipeline (models loaded) and the vocabulary feed, made on first use."""
        if self._models is None:
            backend = make_backend(self.settings)
            pipeline = make_pipeline(self.settings, backend, self.settings.vocab_embed_chunk)
            self._models = (backend, pipeline, VocabularyFeed(self.settings, pipeline.vocabulary))
        return self._models

    @property
    def backend(self) -> InferenceBackend:
        return self.load()[0]

    @property
    def pipeline(self) -> Pipeline:
        return self.load()[1]

    @property
    def feed(self) -> VocabularyFeed:
        return self.load()[2]

    async def on_start(self) -> None:
        try:
            await asyncio.to_thread(check_topics, self.settings)
        except KafkaToolError as exc:  # the fix is in the message: say it plainly, then stop the worker
            log.error("%s", exc)
            raise
        await asyncio.to_thread(self.load)
        self.feed.start()
        if not await asyncio.to_thread(self.wait_vocabulary, self.VOCABULARY_WAIT_S):
            log.warning("tags.vocab not read and embedded after %.0fs; starting with %d tags, %d of them still to "
                        "embed (the feed goes on)", self.VOCABULARY_WAIT_S, len(self.pipeline.vocabulary),
                        self.pipeline.vocabulary.pending)

    async def on_stop(self) -> None:
        if self._models is not None:
            backend, pipeline, feed = self._models
            feed.stop()
            pipeline.close()
            backend.close()

    async def run(self, events: list[RawEvent]) -> list[Outcome]:
        """One outcome per event, in order. An unavailable backend is waited for; a request the model
        server rejects is retried item by item, and the items it keeps rejecting are dead-lettered."""
        try:
            return await self._run_batch(events)
        except ModelRejected as exc:
            if len(events) == 1:
                return await self._run_alone(events[0], exc)
            log.warning("model rejected a batch of %d; retrying its items one by one: %s", len(events), exc)
        outcomes = [o for ev in events for o in await self._run_alone(ev, None)]
        if all(isinstance(o, DeadLetter) and o.reason == MODEL_REJECTED for o in outcomes):
            # Every item failing alone is the deployment, not the input: stop rather than dead-letter it all.
            raise ModelConfigError(f"the model server rejected all {len(events)} items of a batch, one by one: "
                                   f"{outcomes[0].detail}")
        return outcomes

    async def _run_alone(self, event: RawEvent, failure: ModelRejected | None) -> list[Outcome]:
        attempts = self.settings.item_retries + (1 if failure is None else 0)  # a given failure was the first try
        for _attempt in range(attempts):
            try:
                return await self._run_batch([event])
            except ModelRejected as exc:
                failure = exc
        assert failure is not None
        err = InvalidItem(MODEL_REJECTED, str(failure), stage="model")
        return [dead_letter(event, err, claimed_id(event.value), self.settings.max_message_bytes)]

    async def _run_batch(self, events: list[RawEvent]) -> list[Outcome]:
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

    @property
    def ready(self) -> bool:
        """What /readyz says: warmed up, and the last model call worked."""
        return self.warm and self.backend_ok

    def handoff_wait_s(self) -> float:
        """How long the oldest hand-off to items.coded has waited for the broker (0: none waits)."""
        starts = list(self.handoffs.values())
        return time.monotonic() - min(starts) if starts else 0.0

    def waiting_for(self) -> list[str]:
        """What readiness waits for, in words (empty: nothing), and what is still loading without holding
        items up."""
        if not self.loaded:
            return ["the topics checked and the models loaded"]
        waits = []
        if not self.backend_ok:
            waits.append("the model backend (unavailable; batches are retried and input is paused)")
        if not self.warm:
            waits.append("warm-up: every model ready and one item through the pipeline")
        if self.handoff_wait_s() > 1.0:
            waits.append(f"the broker to acknowledge the hand-off to items.coded ({self.handoff_wait_s():.0f}s; "
                         "the batch is retried, then the worker restarts and replays it)")
        vocab = self.pipeline.vocabulary
        if not self.feed.caught_up.is_set():
            waits.append(f"tags.vocab read to its end ({len(vocab)} tags so far; items flow meanwhile)")
        elif vocab.pending:
            waits.append(f"{vocab.pending} of {len(vocab)} tags to embed (items flow, graded against the others)")
        return waits

    async def warm_up(self) -> None:
        """Wait until the backend reports every model this worker calls ready, then run one item (text and
        an image, so every graph and the media decoder run) through the whole pipeline; retried while the
        backend is unavailable. A deployment fault (a missing model) raises."""
        loop = asyncio.get_running_loop()
        models = [*self.pipeline.embedder.graphs, *self.pipeline.tagger.graphs]
        event = RawEvent(b"warm-up", warm_up_event(), SourceRef("warm-up", 0, 0))
        delay = 0.2
        while True:
            if await loop.run_in_executor(None, self.backend.is_ready, models):
                try:
                    outcome = (await loop.run_in_executor(None, self.pipeline.run, [event]))[0]
                except BackendUnavailable as exc:
                    log.info("warm-up: backend unavailable (%s)", exc)
                else:
                    if isinstance(outcome, DeadLetter):
                        raise ModelConfigError(f"the warm-up item failed: {outcome.reason}: {outcome.detail}")
                    self.warm = True
                    log.info("warmed up: models %s ready, one item enriched", ", ".join(models))
                    return
            else:
                log.info("warm-up: waiting for the backend to report %s ready", ", ".join(models))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.retry_max_s)

    def wait_vocabulary(self, timeout_s: float) -> bool:
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        ok = self.feed.caught_up.wait(timeout_s)
        while ok and not self.feed.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        ok = self.feed.ready
        log.info("vocabulary ready=%s after %.2fs (%d tags, %d to embed)", ok, time.monotonic() - t0,
                 len(self.pipeline.vocabulary), self.pipeline.vocabulary.pending)
        return ok
