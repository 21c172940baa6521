"""The exported pair of models, driven by the family their meta files name."""

from __future__ import annotations

from pathlib import Path

from enrich.errors import ModelConfigError
from enrich.models.base import Embedder, Tagger
from enrich.models.encoders import PACKED_TAGGER_ARCHS, EncoderEmbedder, EncoderTagger, PackedEncoderTagger
from enrich.models.inference import InferenceBackend
from enrich.models.meta import ModelMeta
from enrich.models.protocol import EmbedderModel, TaggerModel


def load_models(model_root: Path, backend: InferenceBackend, max_text_tokens: int,
                max_batch: int, seq_bucket: int = 1) -> tuple[EmbedderModel, TaggerModel]:
    """The exported embedder and tagger under ``model_root``; the meta files say which family drives them."""
    metas = {role: ModelMeta.read(model_root / role / "meta.json") for role in ("embedder", "tagger")}
    for role, meta in metas.items():
        if meta.family not in ("qwen_vl", "encoder"):
            raise ModelConfigError(f"{model_root / role}: unknown model family {meta.family!r}")
    args = (backend, max_text_tokens, max_batch)
    e, t = metas["embedder"], metas["tagger"]
    embedder: EmbedderModel = (Embedder if e.family == "qwen_vl" else EncoderEmbedder)(
        e, *args, model_root / "embedder" / "tokenizer", seq_bucket)
    tagger_cls = PackedEncoderTagger if t.arch in PACKED_TAGGER_ARCHS else Tagger if t.family == "qwen_vl" \
        else EncoderTagger
    tagger: TaggerModel = tagger_cls(t, *args, model_root / "tagger" / "tokenizer", seq_bucket)
    return embedder, tagger
