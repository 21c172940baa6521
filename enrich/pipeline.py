"""The enrichment pipeline: raw input events in, output records out.

decode + validate -> preprocess -> embed -> candidates -> tag (and, with a tag prior,
the neighbour-vote decision) -> semantic id.
Bad input becomes a ``DeadLetter`` and never stops the batch; an unavailable
backend raises ``BackendUnavailable`` for the whole batch so the caller can
retry it (nothing is half-published).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from enrich import metrics
from enrich.captions import CaptionHasher, describe
from enrich.cf_adapter import CfAdapter
from enrich.errors import InvalidItem
from enrich.models import Embedder, Tagger
from enrich.preprocess import PreparedItem, prepare
from enrich.schemas import (
    DeadLetter,
    EnrichedItem,
    Limits,
    ModelVersions,
    NeighborRecord,
    TagGrade,
    TagRecall,
    decode_item,
    now_ms,
    vector_bytes,
)
from enrich.semantic_ids import Quantizer
from enrich.tag_prior import TagPrior, decide, with_votes
from enrich.tags import TagVocabulary
from enrich.video import VideoSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceRef:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class RawEvent:
    key: bytes | None
    value: bytes
    source: SourceRef


@dataclass(frozen=True)
class Enriched:
    """All outputs of one item."""

    record: EnrichedItem
    tag_edges: list[TagRecall]
    neighbor: NeighborRecord


Outcome = Enriched | DeadLetter


@dataclass(frozen=True)
class PipelineConfig:
    candidate_tags: int = 8
    min_grade: int = 1
    max_text_chars: int = 8_000
    limits: Limits = Limits()
    video: VideoSpec = VideoSpec()
    captions: CaptionHasher | None = CaptionHasher()


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        timings[name] = timings.get(name, 0.0) + dt
        metrics.STAGE_SECONDS.labels(name).observe(dt)


def dead_letter(ev: RawEvent, err: InvalidItem, item_id: str | None = None) -> DeadLetter:
    return DeadLetter(reason=err.reason, stage=err.stage, detail=err.detail, source_topic=ev.source.topic,
                      source_partition=ev.source.partition, source_offset=ev.source.offset, original=ev.value,
                      key=ev.key, failed_at=now_ms(), item_id=item_id)


class Pipeline:
    def __init__(self, embedder: Embedder, tagger: Tagger, vocabulary: TagVocabulary, quantizer: Quantizer,
                 config: PipelineConfig = PipelineConfig(), cf_adapter: CfAdapter | None = None,
                 tag_prior: TagPrior | None = None) -> None:
        if cf_adapter is not None:
            cf_adapter.check_embedder(embedder.version, embedder.meta.hidden_size)
        if tag_prior is not None:
            tag_prior.check(embedder.version, embedder.meta.hidden_size, tagger.version)
        self.cf_adapter = cf_adapter
        self.tag_prior = tag_prior
        self.embedder = embedder
        self.tagger = tagger
        self.vocabulary = vocabulary
        self.quantizer = quantizer
        self.config = config
        self.last_timings: dict[str, float] = {}

    @property
    def versions(self) -> ModelVersions:
        captions = self.config.captions
        return ModelVersions(self.embedder.version, self.tagger.version, self.quantizer.version,
                             self.cf_adapter.version if self.cf_adapter else "", captions.version if captions else "",
                             self.tag_prior.version if self.tag_prior else "")

    def run(self, events: list[RawEvent]) -> list[Outcome]:
        """One outcome per event, in input order."""
        timings: dict[str, float] = {}
        outcomes: list[Outcome | None] = [None] * len(events)
        prepared: list[tuple[int, PreparedItem]] = []
        with stage("decode", timings):
            items = []
            for i, ev in enumerate(events):
                try:
                    items.append((i, decode_item(ev.value, self.config.limits)))
                except InvalidItem as err:
                    outcomes[i] = dead_letter(ev, err)
        with stage("preprocess", timings):
            for i, item in items:
                try:
                    prepared.append((i, prepare(item, self.config.limits.max_image_bytes,
                                                self.config.max_text_chars, self.config.video)))
                except InvalidItem as err:
                    outcomes[i] = dead_letter(events[i], err, item.id)
        if prepared:
            results = self._enrich([p for _, p in prepared], timings)
            for (i, _), enriched in zip(prepared, results, strict=True):
                outcomes[i] = enriched
        self.last_timings = timings
        return [o for o in outcomes if o is not None]

    def _enrich(self, items: list[PreparedItem], timings: dict[str, float]) -> list[Enriched]:
        with stage("embed", timings):
            vectors = self.embedder.embed(items)
        with stage("candidates", timings):
            vocab = self.vocabulary.snapshot()
            candidates = vocab.candidates(vectors, self.config.candidate_tags)
            view = None
            if self.tag_prior is not None:
                candidates, view = with_votes(self.tag_prior, vocab, vectors, self.config.candidate_tags, candidates)
        with stage("tag", timings):
            scores = self.tagger.score(items, candidates)
            graded = []
            for i, sc in enumerate(scores):
                if view is None or self.tag_prior is None or not len(sc.tags):
                    grades = sc.probs.argmax(axis=1) if len(sc.tags) else np.zeros(0, np.int64)
                    graded.append((grades, np.array([p[g] for g, p in zip(grades, sc.probs, strict=True)])))
                else:
                    graded.append(decide(self.tag_prior.head, sc.probs, view.features(i, sc.probs, sc.tags)))
        with stage("semantic_id", timings):
            codes = self.quantizer.quantize(vectors)
        cf_vectors: list[np.ndarray | None] = [None] * len(items)
        if self.cf_adapter is not None:
            with stage("cf", timings):
                cf_vectors = list(self.cf_adapter.apply(vectors))
        versions = self.versions
        enriched_at = now_ms()
        out = []
        for it, vec, sc, (grades, probs), code, cf in zip(items, vectors, scores, graded, codes, cf_vectors,
                                                          strict=True):
            kept = [TagGrade(t, int(g), float(p)) for t, g, p in zip(sc.tags, grades, probs, strict=True)
                    if g >= self.config.min_grade]
            kept.sort(key=lambda tg: (-tg.grade, -tg.prob, tg.tag))
            sid = [int(c) for c in code]
            blob = vector_bytes(vec)
            cf_blob = vector_bytes(cf) if cf is not None else None
            item = it.item
            caption = features = None
            if self.config.captions is not None:
                caption = describe(item.kind, kept, len(item.images), item.video is not None)
                features = self.config.captions.features(caption)
            record = EnrichedItem(item_id=item.id, kind=item.kind, created_at=item.created_at,
                                  enriched_at=enriched_at, tags=kept, embedding=blob, dim=len(vec),
                                  semantic_id=sid, versions=versions, cf_embedding=cf_blob, caption=caption,
                                  caption_features=features)
            edges = [TagRecall(tag=t.tag, item_id=item.id, grade=t.grade, prob=t.prob, created_at=item.created_at,
                               versions=versions, enriched_at=enriched_at) for t in kept]
            neighbor = NeighborRecord(item_id=item.id, semantic_id=sid, vector=blob, dim=len(vec),
                                      created_at=item.created_at, versions=versions, enriched_at=enriched_at,
                                      cf_vector=cf_blob)
            out.append(Enriched(record, edges, neighbor))
        return out
