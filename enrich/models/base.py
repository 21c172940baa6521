"""The two models as host-side orchestration of their vision and text graphs.

Prompts, token budgets and batching live here; the graphs only see tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from enrich.media.images import PatchedImage, build_vision_batch
from enrich.models.inference import InferenceBackend
from enrich.models.meta import ModelMeta
from enrich.models.protocol import TagScores, chunks, softmax_grades
from enrich.models.sequences import PackedSequence, Prefix, build_text_batch
from enrich.models.tokenizer import SpecialTokens, Tokenizer, load_tokenizer
from enrich.preprocess import PreparedItem

GRADES = (0, 1, 2)
# NoteLLM-2 mICL: the image part and the whole item are each compressed into the next token.
VISUAL_PROMPT = '\nCompress this image into one word: "'
ITEM_PROMPT = '\nCompress this item into one word: "'


class _TwoGraphModel:
    def __init__(self, meta: ModelMeta, backend: InferenceBackend, max_text_tokens: int, max_batch: int,
                 tokenizer_dir: Path | None = None, seq_bucket: int = 1) -> None:
        self.meta = meta
        self.backend = backend
        self.max_text_tokens = max_text_tokens
        self.max_batch = max_batch
        self.seq_bucket = seq_bucket
        self.tokenizer: Tokenizer = load_tokenizer(meta.tokenizer, SpecialTokens(**meta.special), tokenizer_dir)
        self.sp = self.tokenizer.special

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def image_pixels(self) -> int:
        """The most pixels of one image this model can use (its resize rule's bound)."""
        return self.meta.vision.max_pixels

    @property
    def graphs(self) -> list[str]:
        """The served models this one calls."""
        return [f"{self.meta.role}_vision", f"{self.meta.role}_text"]

    def _image_embeds(self, images: Sequence[Sequence[PatchedImage]]) -> list[np.ndarray]:
        """One vision call for all images of a batch; returns per-item token embeddings."""
        flat = [img for per_item in images for img in per_item]
        width = self.meta.hidden_size
        if not flat:
            return [np.zeros((0, width), np.float32) for _ in images]
        vb = build_vision_batch(flat, self.meta.vision)
        inputs = {"pixel_values": vb.pixel_values, "position_ids": vb.position_ids, "patch_mask": vb.patch_mask}
        merged = self._infer(f"{self.meta.role}_vision", inputs)
        merged = merged.reshape(-1, merged.shape[-1])  # [frames * slots, H], what token_slices index
        out, k = [], 0
        for per_item in images:
            parts = [merged[vb.token_slices[k + j]] for j in range(len(per_item))]
            k += len(per_item)
            out.append(np.concatenate(parts) if parts else np.zeros((0, width), np.float32))
        return out

    def _add_images(self, pre: Prefix, images: Sequence[PatchedImage]) -> None:
        for img in images:
            pre.add_text([self.sp.vision_start])
            pre.add_image(img.grid, self.meta.vision.merge_size, self.sp.image_pad)
            pre.add_text([self.sp.vision_end])

    def _add_text(self, pre: Prefix, text: str) -> None:
        pre.add_text(self.tokenizer.encode(text)[: self.max_text_tokens])

    def _run_text(self, seqs: list[PackedSequence], image_embeds: list[np.ndarray]) -> np.ndarray:
        batch = build_text_batch(seqs, self.sp.pad, self.seq_bucket)
        return self._infer(f"{self.meta.role}_text", batch.as_inputs(image_embeds, self.meta.hidden_size))

    def _infer(self, graph: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """One graph call; float inputs in the export's float type (float16 exports), the output as float32."""
        if self.meta.float_type != "float32":
            inputs = {k: v.astype(self.meta.float_type) if v.dtype == np.float32 else v for k, v in inputs.items()}
        return np.asarray(self.backend.infer(graph, inputs), dtype=np.float32)


class Embedder(_TwoGraphModel):
    """GME-style vectors from a NoteLLM-2 mICL prompt with late fusion (inside the text graph).

    The image part is compressed into one token before the text is seen (a visual-aware
    readout), then the whole item into another (a multimodal readout); the graph fuses
    both with the pooled visual feature and L2-normalises. Text-only items read the
    multimodal token alone.
    """

    def _micl_prefix(self, images: Sequence[PatchedImage], text: str) -> Prefix:
        pre = Prefix()
        if images:
            self._add_images(pre, images)
            pre.add_text(self.tokenizer.encode(VISUAL_PROMPT))
            pre.mark_readout()
        self._add_text(pre, text)
        pre.add_text(self.tokenizer.encode(ITEM_PROMPT))
        if not images:
            pre.mark_readout()  # same shape for every row; the graph ignores it without images
        pre.mark_readout()
        return pre

    def embed(self, items: Sequence[PreparedItem]) -> np.ndarray:
        out = np.zeros((len(items), self.meta.hidden_size), np.float32)
        for sl in chunks(len(items), self.max_batch):
            chunk = items[sl]
            patched = [it.patched(self.meta.vision) for it in chunk]
            embeds = self._image_embeds(patched)
            seqs = [PackedSequence(self._micl_prefix(imgs, it.text)) for imgs, it in zip(patched, chunk, strict=True)]
            out[sl] = self._run_text(seqs, embeds)
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text-only embeddings in the same space (used for the tag vocabulary)."""
        out = np.zeros((len(texts), self.meta.hidden_size), np.float32)
        width = self.meta.hidden_size
        for sl in chunks(len(texts), self.max_batch):
            seqs = [PackedSequence(self._micl_prefix([], t)) for t in texts[sl]]
            out[sl] = self._run_text(seqs, [np.zeros((0, width), np.float32)] * len(seqs))
        return out


class Tagger(_TwoGraphModel):
    """Grades (item, tag) pairs 2/1/0, all candidates of an item packed into one row."""

    def packed_row(self, images: Sequence[PatchedImage], text: str, tags: Sequence[str]) -> PackedSequence:
        """The relevance prompt: the item once, then one "Tag: ... Relevance:" suffix per candidate."""
        pre = Prefix()
        pre.add_text(self.tokenizer.encode("Content: "))
        self._add_images(pre, images)
        self._add_text(pre, text)
        pre.add_text(self.tokenizer.encode("\n"))
        return PackedSequence(pre, [self.tokenizer.encode(f"Tag: {t}\nRelevance:") for t in tags])

    def score(self, items: Sequence[PreparedItem], candidates: Sequence[Sequence[str]]) -> list[TagScores]:
        results: list[TagScores] = []
        for sl in chunks(len(items), self.max_batch):
            chunk, cands = items[sl], candidates[sl]
            patched = [it.patched(self.meta.vision) for it in chunk]
            embeds = self._image_embeds(patched)
            seqs = [self.packed_row(imgs, it.text, tags) for imgs, it, tags in zip(patched, chunk, cands, strict=True)]
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
                results.append(TagScores(list(tags), softmax_grades(by_row[i][: len(tags)])))
        return results
