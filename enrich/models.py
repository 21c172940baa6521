"""The two models as host-side orchestration of their vision and text graphs.

Prompts, token budgets and batching live here; the graphs only see tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enrich.images import PatchedImage, build_vision_batch
from enrich.inference import InferenceBackend
from enrich.model_meta import ModelMeta
from enrich.preprocess import PreparedItem
from enrich.sequences import PackedSequence, Prefix, build_text_batch
from enrich.tokenizer import SpecialTokens, Tokenizer, load_tokenizer

GRADES = (0, 1, 2)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class _TwoGraphModel:
    def __init__(self, meta: ModelMeta, backend: InferenceBackend, max_text_tokens: int, max_batch: int) -> None:
        self.meta = meta
        self.backend = backend
        self.max_text_tokens = max_text_tokens
        self.max_batch = max_batch
        self.tokenizer: Tokenizer = load_tokenizer(meta.tokenizer, SpecialTokens(**meta.special))
        self.sp = self.tokenizer.special

    @property
    def version(self) -> str:
        return self.meta.version

    def _image_embeds(self, images: Sequence[Sequence[PatchedImage]]) -> list[np.ndarray]:
        """One vision call for all images of a batch; returns per-item token embeddings."""
        flat = [img for per_item in images for img in per_item]
        width = self.meta.hidden_size
        if not flat:
            return [np.zeros((0, width), np.float32) for _ in images]
        vb = build_vision_batch(flat, self.meta.vision)
        inputs = {"pixel_values": vb.pixel_values, "position_ids": vb.position_ids, "segment_ids": vb.segment_ids}
        if vb.window_ids is not None:
            inputs["window_ids"] = vb.window_ids
        merged = self.backend.infer(f"{self.meta.role}_vision", inputs)
        out, k = [], 0
        for per_item in images:
            parts = [merged[vb.token_slices[k + j]] for j in range(len(per_item))]
            k += len(per_item)
            out.append(np.concatenate(parts) if parts else np.zeros((0, width), np.float32))
        return out

    def _content_prefix(self, images: Sequence[PatchedImage], text: str, lead: str = "") -> Prefix:
        pre = Prefix()
        if lead:
            pre.add_text(self.tokenizer.encode(lead))
        for img in images:
            pre.add_text([self.sp.vision_start])
            pre.add_image(img.grid, self.meta.vision.merge_size, self.sp.image_pad)
            pre.add_text([self.sp.vision_end])
        pre.add_text(self.tokenizer.encode(text)[: self.max_text_tokens])
        return pre

    def _run_text(self, seqs: list[PackedSequence], image_embeds: list[np.ndarray]) -> np.ndarray:
        batch = build_text_batch(seqs, self.sp.pad)
        embeds = np.concatenate(image_embeds) if image_embeds else np.zeros((0, self.meta.hidden_size), np.float32)
        return self.backend.infer(f"{self.meta.role}_text", batch.as_inputs(embeds.astype(np.float32)))


class Embedder(_TwoGraphModel):
    """GME-style: last-token hidden state, L2-normalised."""

    def embed(self, items: Sequence[PreparedItem]) -> np.ndarray:
        out = np.zeros((len(items), self.meta.hidden_size), np.float32)
        for sl in _chunks(len(items), self.max_batch):
            chunk = items[sl]
            patched = [it.patched(self.meta.vision) for it in chunk]
            embeds = self._image_embeds(patched)
            seqs = []
            for imgs, it in zip(patched, chunk, strict=True):
                pre = self._content_prefix(imgs, it.text)
                pre.add_text([self.sp.eos])
                seqs.append(PackedSequence(pre))
            out[sl] = self._run_text(seqs, embeds)[:, 0]
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text-only embeddings in the same space (used for the tag vocabulary)."""
        out = np.zeros((len(texts), self.meta.hidden_size), np.float32)
        for sl in _chunks(len(texts), self.max_batch):
            seqs = []
            for t in texts[sl]:
                pre = self._content_prefix([], t)
                pre.add_text([self.sp.eos])
                seqs.append(PackedSequence(pre))
            out[sl] = self._run_text(seqs, [])[:, 0]
        return out


@dataclass(frozen=True)
class TagScores:
    """Per candidate: probabilities of grades 0, 1, 2."""

    tags: list[str]
    probs: np.ndarray  # [M, 3]


class Tagger(_TwoGraphModel):
    """Grades (item, tag) pairs 2/1/0, all candidates of an item packed into one row."""

    def score(self, items: Sequence[PreparedItem], candidates: Sequence[Sequence[str]]) -> list[TagScores]:
        results: list[TagScores] = []
        for sl in _chunks(len(items), self.max_batch):
            chunk, cands = items[sl], candidates[sl]
            patched = [it.patched(self.meta.vision) for it in chunk]
            embeds = self._image_embeds(patched)
            seqs = []
            for imgs, it, tags in zip(patched, chunk, cands, strict=True):
                pre = self._content_prefix(imgs, it.text, lead="Content: ")
                pre.add_text(self.tokenizer.encode("\n"))
                suffixes = [self.tokenizer.encode(f"Tag: {t}\nRelevance:") for t in tags]
                seqs.append(PackedSequence(pre, suffixes))
            rows = [i for i, t in enumerate(cands) if t]
            if not rows:
                results.extend(TagScores([], np.zeros((0, 3), np.float32)) for _ in chunk)
                continue
            logits = self._run_text([seqs[i] for i in rows], [embeds[i] for i in rows])
            by_row = dict(zip(rows, logits, strict=True))
            for i, tags in enumerate(cands):
                if not tags:
                    results.append(TagScores([], np.zeros((0, 3), np.float32)))
                    continue
                lg = by_row[i][: len(tags)].astype(np.float64)
                p = np.exp(lg - lg.max(axis=-1, keepdims=True))
                results.append(TagScores(list(tags), (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)))
        return results


def load_models(model_root: Path, backend: InferenceBackend, max_text_tokens: int,
                max_batch: int) -> tuple[Embedder, Tagger]:
    emb = Embedder(ModelMeta.read(model_root / "embedder" / "meta.json"), backend, max_text_tokens, max_batch)
    tag = Tagger(ModelMeta.read(model_root / "tagger" / "meta.json"), backend, max_text_tokens, max_batch)
    return emb, tag
