"""Assembling the pipeline from the settings: the inference backend, the exported models, the pipeline with
its artifacts. The worker (``streams.services.Enrichment``) and the tools (evaluation, builds, bench) call
the same functions, so what a tool measures is what a worker runs.

``PipelineSettings`` says what assembly reads; the worker's settings object (``streams.settings.Settings``)
has it all, and nothing here knows about Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from enrich.media.decode import MediaBudget
from enrich.media.sandbox import SandboxSpec
from enrich.media.thumbnails import ThumbnailSpec
from enrich.media.video import VideoSpec
from enrich.models.inference import InferenceBackend, OnnxRuntimeBackend, TritonBackend
from enrich.models.loading import load_models
from enrich.pipeline import Pipeline, PipelineConfig
from enrich.schemas import Limits
from enrich.tagging.captions import CaptionHasher
from enrich.tagging.prior import TagPrior, candidate_count
from enrich.tagging.vocabulary import TagVocabulary
from enrich.vectors.cf_adapter import CfAdapter
from enrich.vectors.semantic_ids import SemanticIdCodebook


class PipelineSettings(Protocol):
    """What assembling a pipeline reads of the settings."""

    backend: str
    triton_url: str
    triton_timeout_s: float
    max_text_tokens: int
    model_batch: int
    seq_bucket: int
    image_work_pixels: int
    candidate_tags: int | None
    min_grade: int
    model_text_chars: int
    max_images: int
    max_image_bytes: int
    max_video_bytes: int
    video_frames: int
    video_strategy: str
    video_decode_s: float
    caption_buckets: int
    max_image_pixels: int
    max_item_pixels: int
    decode_workers: int
    decode_timeout_s: float
    decode_memory_mb: int
    decode_isolation: bool
    max_batch_pixels: int
    max_message_bytes: int
    thumbnail_px: int
    thumbnail_bytes: int
    thumbnail_count: int

    @property
    def models_path(self) -> Path: ...

    @property
    def codebook_path(self) -> Path: ...

    def cf_adapter_file(self) -> Path | None: ...

    def tag_prior_file(self) -> Path | None: ...


def make_backend(settings: PipelineSettings) -> InferenceBackend:
    if settings.backend == "onnxruntime":
        return OnnxRuntimeBackend(settings.models_path)
    return TritonBackend(settings.triton_url, settings.triton_timeout_s)


def limits(settings: PipelineSettings) -> Limits:
    return Limits(max_images=settings.max_images, max_image_bytes=settings.max_image_bytes,
                  max_video_bytes=settings.max_video_bytes)


@contextmanager
def in_process_models(settings: PipelineSettings) -> Iterator[tuple[Any, Any]]:
    """The exported (embedder, tagger) on an in-process ONNX Runtime backend, closed afterwards: what the
    offline tools (evaluation, prior and codebook builders) embed and grade with, the workers' graphs."""
    backend = OnnxRuntimeBackend(settings.models_path)
    try:
        yield load_models(settings.models_path, backend, settings.max_text_tokens, settings.model_batch,
                          settings.seq_bucket)
    finally:
        backend.close()


def make_pipeline(settings: PipelineSettings, backend: InferenceBackend,
                  vocab_embed_chunk: int | None = None) -> Pipeline:
    """The pipeline of ``settings``. ``vocab_embed_chunk``: new tags one batch embeds before it is graded (the
    worker's, whose vocabulary feed embeds the rest); None, for the tools: every pending tag first."""
    embedder, tagger = load_models(settings.models_path, backend, settings.max_text_tokens, settings.model_batch,
                                   settings.seq_bucket)
    # No decoded image keeps more pixels than the models can use.
    work_pixels = min(settings.image_work_pixels, max(embedder.image_pixels, tagger.image_pixels, 1024))
    cf_path, prior_path = settings.cf_adapter_file(), settings.tag_prior_file()
    prior = TagPrior.load(prior_path) if prior_path is not None else None
    config = PipelineConfig(candidate_tags=candidate_count(settings.candidate_tags, prior),
                            min_grade=settings.min_grade,
                            model_text_chars=settings.model_text_chars,
                            limits=limits(settings),
                            video=VideoSpec(frames=settings.video_frames, strategy=settings.video_strategy,
                                            max_seconds=settings.video_decode_s),
                            captions=CaptionHasher(settings.caption_buckets) if settings.caption_buckets else None,
                            media=MediaBudget(max_image_pixels=settings.max_image_pixels,
                                              max_item_pixels=settings.max_item_pixels, work_pixels=work_pixels),
                            sandbox=SandboxSpec(workers=settings.decode_workers, timeout_s=settings.decode_timeout_s,
                                                memory_mb=settings.decode_memory_mb,
                                                isolated=settings.decode_isolation),
                            max_batch_pixels=settings.max_batch_pixels,
                            max_message_bytes=settings.max_message_bytes,
                            thumbnails=ThumbnailSpec(settings.thumbnail_px, settings.thumbnail_bytes,
                                                     settings.thumbnail_count),
                            vocab_embed_chunk=vocab_embed_chunk)
    return Pipeline(embedder, tagger, TagVocabulary(embedder.embed_texts, embedder.version, embedder.meta.hidden_size),
                    SemanticIdCodebook.load(settings.codebook_path), config,
                    cf_adapter=CfAdapter.load(cf_path) if cf_path is not None else None,
                    tag_prior=prior)
