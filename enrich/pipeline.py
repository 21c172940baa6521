"""The enrichment pipeline: raw input events in, output records out.

decode + validate -> preprocess -> embed -> candidates -> tag (and, with a tag prior,
the neighbour-vote decision) -> semantic id.
Bad input becomes a ``DeadLetter`` and never stops the batch; an unavailable
backend raises ``BackendUnavailable`` for the whole batch so the caller can
retry it (nothing is half-published).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from enrich import metrics
from enrich.errors import InvalidItem, Retry, RetryAlone, Stop
from enrich.media.decode import MediaBudget
from enrich.media.sandbox import MediaDecoder, SandboxSpec
from enrich.media.thumbnails import ThumbnailSpec, thumbnails
from enrich.media.video import VideoSpec
from enrich.models.protocol import EmbedderModel, TaggerModel
from enrich.preprocess import PreparedItem, prepare
from enrich.schemas import (
    MAX_MESSAGE_BYTES,
    TITLE_CHARS,
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
from enrich.tagging.captions import CaptionHasher, describe
from enrich.tagging.prior import DEFAULT_CANDIDATE_TAGS, TagPrior, with_votes
from enrich.tagging.vocabulary import TagVocabulary
from enrich.vectors.cf_adapter import CfAdapter
from enrich.vectors.semantic_ids import Quantizer

log = logging.getLogger(__name__)
INTERNAL_ERROR = "internal_error"


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
    candidate_tags: int = DEFAULT_CANDIDATE_TAGS
    min_grade: int = 1
    model_text_chars: int = 8_000
    limits: Limits = Limits()
    video: VideoSpec = VideoSpec()
    captions: CaptionHasher | None = CaptionHasher()
    media: MediaBudget = MediaBudget()
    sandbox: SandboxSpec = SandboxSpec()
    # Decoded pixels one model round holds: a batch whose images pass it is enriched in several rounds,
    # so the host memory of a batch is bounded whatever its items carry.
    max_batch_pixels: int = 8 * 1024 * 1024
    max_message_bytes: int = MAX_MESSAGE_BYTES  # the broker's limit on one record (dead letters are cut to fit)
    thumbnails: ThumbnailSpec = ThumbnailSpec()
    # New tags a batch embeds before it is graded (None: all; the worker's feed embeds the rest meanwhile).
    vocab_embed_chunk: int | None = None


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


# Room kept in a dead letter for the record's own fields and Kafka's record overhead.
_DLQ_HEADROOM = 1024
MAX_DLQ_KEY_BYTES = 1024
MAX_DLQ_DETAIL_CHARS = 2000


def dead_letter(ev: RawEvent, err: InvalidItem, item_id: str | None = None,
                max_message_bytes: int = MAX_MESSAGE_BYTES) -> DeadLetter:
    """The event's dead letter, cut to fit ``max_message_bytes``: an original that would not fit is
    truncated (``original_truncated``), and its full length and SHA-256 always travel with it."""
    key = ev.key if ev.key is None or len(ev.key) <= MAX_DLQ_KEY_BYTES else ev.key[:MAX_DLQ_KEY_BYTES]
    detail = err.detail if len(err.detail) <= MAX_DLQ_DETAIL_CHARS else err.detail[:MAX_DLQ_DETAIL_CHARS] + "..."
    room = max_message_bytes - _DLQ_HEADROOM - 2 * len(key or b"") - len(detail.encode()) - len(
        (item_id or "").encode()) - len(ev.source.topic.encode())
    original = ev.value if len(ev.value) <= room else ev.value[:max(0, room)]
    return DeadLetter(reason=err.reason, stage=err.stage, detail=detail, source_topic=ev.source.topic,
                      source_partition=ev.source.partition, source_offset=ev.source.offset, original=original,
                      key=key, failed_at=now_ms(), item_id=item_id, original_bytes=len(ev.value),
                      original_sha256=hashlib.sha256(ev.value).hexdigest(),
                      original_truncated=len(original) < len(ev.value), key_truncated=key != ev.key)


def internal_error(exc: Exception, stage_name: str) -> InvalidItem:
    """A failure on one item that no rule foresaw: the item is dead-lettered, the partition goes on."""
    return InvalidItem(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", stage=stage_name)


class Pipeline:
    def __init__(self, embedder: EmbedderModel, tagger: TaggerModel, vocabulary: TagVocabulary, quantizer: Quantizer,
                 config: PipelineConfig = PipelineConfig(), cf_adapter: CfAdapter | None = None,
                 tag_prior: TagPrior | None = None) -> None:
        quantizer.check_embedder(embedder.version)
        if cf_adapter is not None:
            cf_adapter.check_embedder(embedder.version, embedder.meta.hidden_size)
        if tag_prior is not None:
            tag_prior.check(embedder.version, embedder.meta.hidden_size, tagger.version)
            tag_prior.check_candidates(config.candidate_tags)
        self.cf_adapter = cf_adapter
        self.tag_prior = tag_prior
        self.embedder = embedder
        self.tagger = tagger
        self.vocabulary = vocabulary
        self.quantizer = quantizer
        self.config = config
        self.decoder = MediaDecoder(config.media, config.video, config.sandbox)
        self.last_timings: dict[str, float] = {}

    @property
    def versions(self) -> ModelVersions:
        captions = self.config.captions
        return ModelVersions(self.embedder.version, self.tagger.version, self.quantizer.version,
                             self.cf_adapter.version if self.cf_adapter else "", captions.version if captions else "",
                             self.tag_prior.version if self.tag_prior else "")

    def close(self) -> None:
        self.decoder.close()

    def run(self, events: list[RawEvent]) -> list[Outcome]:
        """One outcome per event, in input order. No item can fail the batch: whatever goes wrong with one
        item becomes its dead letter; only an unavailable backend or a deployment fault raises."""
        timings: dict[str, float] = {}
        outcomes: list[Outcome | None] = [None] * len(events)
        group: list[tuple[int, PreparedItem]] = []
        pixels = 0
        for i, ev in enumerate(events):
            prepared = self._prepare(i, ev, outcomes, timings)
            if prepared is None:
                continue
            if group and pixels + prepared.pixels > self.config.max_batch_pixels:
                self._enrich_group(group, events, outcomes, timings)
                group, pixels = [], 0
            group.append((i, prepared))
            pixels += prepared.pixels
        if group:
            self._enrich_group(group, events, outcomes, timings)
        for name, seconds in timings.items():
            metrics.STAGE_SECONDS.labels(name).observe(seconds)
        self.last_timings = timings
        return [o for o in outcomes if o is not None]

    def _dead(self, ev: RawEvent, err: InvalidItem, item_id: str | None) -> DeadLetter:
        return dead_letter(ev, err, item_id, self.config.max_message_bytes)

    def _prepare(self, i: int, ev: RawEvent, outcomes: list[Outcome | None],
                 timings: dict[str, float]) -> PreparedItem | None:
        item_id = None
        step = "decode"
        try:
            with stage("decode", timings):
                item = decode_item(ev.value, self.config.limits)
            item_id, step = item.id, "preprocess"
            with stage("preprocess", timings):
                return prepare(item, self.config.model_text_chars, self.decoder)
        except InvalidItem as err:
            outcomes[i] = self._dead(ev, err, item_id)
        except (Retry, RetryAlone, Stop):
            raise
        except Exception as exc:  # noqa: BLE001 - the guarantee: one item never stops the partition
            log.exception("item at %s[%d]@%d failed in %s; dead-lettered as %s", ev.source.topic,
                          ev.source.partition, ev.source.offset, step, INTERNAL_ERROR)
            outcomes[i] = self._dead(ev, internal_error(exc, step), item_id)
        return None

    def _enrich_group(self, group: list[tuple[int, PreparedItem]], events: list[RawEvent],
                      outcomes: list[Outcome | None], timings: dict[str, float]) -> None:
        """Enrich ``group``; when it fails for a reason that is not the backend's or the deployment's,
        halve it until the failing items stand alone (log2 of the batch in extra rounds per bad item)."""
        try:
            results = self._enrich([p for _, p in group], timings)
        except (Retry, RetryAlone, Stop):  # ModelRejected (RetryAlone) is isolated with retries upstream
            raise
        except Exception as exc:  # noqa: BLE001 - see run()
            if len(group) > 1:
                mid = len(group) // 2
                self._enrich_group(group[:mid], events, outcomes, timings)
                self._enrich_group(group[mid:], events, outcomes, timings)
                return
            i, p = group[0]
            if isinstance(exc, InvalidItem):
                err = exc
            else:
                log.exception("item %r failed alone in the model stage; dead-lettered as %s", p.item.id,
                              INTERNAL_ERROR)
                err = internal_error(exc, "model")
            outcomes[i] = self._dead(events[i], err, p.item.id)
            return
        for (i, _), enriched in zip(group, results, strict=True):
            outcomes[i] = enriched

    def _enrich(self, items: list[PreparedItem], timings: dict[str, float]) -> list[Enriched]:
        with stage("embed", timings):
            vectors = self.embedder.embed(items)
        with stage("candidates", timings):
            vocab = self.vocabulary.snapshot(self.config.vocab_embed_chunk)
            candidates = vocab.candidates(vectors, self.config.candidate_tags)
            view = None
            if self.tag_prior is not None:
                candidates, view = with_votes(self.tag_prior, vocab, vectors, self.config.candidate_tags, candidates)
        with stage("tag", timings):
            prior = self.tag_prior
            read = items if prior is None else [p if not p.images or prior.tagger_sees_image(p.text)
                                                else p.without_images() for p in items]
            scores = self.tagger.score(read, candidates)
            graded = []
            for i, sc in enumerate(scores):
                if view is None or self.tag_prior is None or not len(sc.tags):
                    grades = sc.probs.argmax(axis=1) if len(sc.tags) else np.zeros(0, np.int64)
                    graded.append((grades, np.array([p[g] for g, p in zip(grades, sc.probs, strict=True)])))
                else:
                    has_text = bool(items[i].text)
                    graded.append(view.decide(self.tag_prior.head_for(has_text), i, sc.probs, sc.tags,
                                              self.tag_prior.open_head_for(has_text)))
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
                                  caption_features=features, title=item.title[:TITLE_CHARS])
            edges = [TagRecall(tag=t.tag, item_id=item.id, grade=t.grade, prob=t.prob, created_at=item.created_at,
                               versions=versions, enriched_at=enriched_at) for t in kept]
            neighbor = NeighborRecord(item_id=item.id, semantic_id=sid, vector=blob, dim=len(vec),
                                      created_at=item.created_at, versions=versions, enriched_at=enriched_at,
                                      cf_vector=cf_blob, thumbnails=thumbnails(it.images, self.config.thumbnails))
            out.append(Enriched(record, edges, neighbor))
        return out
