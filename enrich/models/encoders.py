"""Host side of the encoder family (the real small presets): same interface as ``enrich.models.base``.

The embedder sends all images of a batch through the image graph once, averages each
item's image vectors, and lets the text graph fuse them with the text vector. Two taggers:
``PackedEncoderTagger`` (the default export) sees the item's visual tokens and grades all of
its candidates in one packed row; ``EncoderTagger`` is the text cross-encoder it replaced,
one row per (item, candidate tag) pair, kept as the measured baseline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from enrich.media.images import square_pixels
from enrich.models.inference import InferenceBackend
from enrich.models.meta import ModelMeta
from enrich.models.protocol import TagScores, chunks, softmax_grades
from enrich.models.sequences import PackedSequence, Prefix, build_text_batch
from enrich.preprocess import PreparedItem
from enrich.tagging.vocabulary import readable_tag

IMAGE_TOKEN = "[unused0]"  # never produced from text by the MiniLM tokenizer: marks visual-token slots
PACKED_TAGGER_ARCH = "minilm_packed_tagger"
USE_PACKED_TAGGER_ARCH = "use_packed_tagger"  # the multilingual tagger: the same rows, a USE tower under them
PACKED_TAGGER_ARCHS = (PACKED_TAGGER_ARCH, USE_PACKED_TAGGER_ARCH)


def load_encoder_tokenizer(tokenizer_dir: Path) -> Tokenizer:
    """The checkpoint's fast tokenizer, straight from ``tokenizer.json`` with the Rust library that
    transformers wraps: the same ids, without importing transformers (and torch) into the worker."""
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    pad = config.get("pad_token", "[PAD]")
    tok.enable_padding(pad_id=tok.token_to_id(pad), pad_token=pad,
                       pad_type_id=int(config.get("pad_token_type_id", 0)))  # to the longest row
    return tok


class _EncoderModel:
    def __init__(self, meta: ModelMeta, backend: InferenceBackend, max_text_tokens: int, max_batch: int,
                 tokenizer_dir: Path, seq_bucket: int = 1) -> None:
        self.meta = meta
        self.backend = backend
        # The text budget counts the whole row, special tokens included, capped by the position table.
        self.max_tokens = min(max_text_tokens, meta.max_tokens or max_text_tokens)
        self.max_batch = max_batch
        self.seq_bucket = max(1, seq_bucket)
        self.tokenizer = load_encoder_tokenizer(tokenizer_dir)

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def image_pixels(self) -> int:
        """The most pixels of one image this model can use: the centre square, cut from at most 2:1."""
        return 2 * self.meta.image_size ** 2

    @property
    def graphs(self) -> list[str]:
        """The served models this one calls."""
        return [f"{self.meta.role}_vision", f"{self.meta.role}_text"] if self.image_pixels else \
            [f"{self.meta.role}_text"]

    def _vision(self, chunk: Sequence[PreparedItem]) -> list[np.ndarray | None]:
        """One vision-graph call for all images of ``chunk``; per item, its images' outputs (None without)."""
        flat = [img for it in chunk for img in it.images]
        if not flat:
            return [None] * len(chunk)
        outputs = self.backend.infer(f"{self.meta.role}_vision",
                                     {"pixel_values": square_pixels(flat, self.meta.image_size)})
        per_item, k = [], 0
        for it in chunk:
            per_item.append(outputs[k:k + len(it.images)] if it.images else None)
            k += len(it.images)
        return per_item

    def _encode(self, first: Sequence[str], second: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        strategy = "only_first" if second is not None else "longest_first"
        if (self.tokenizer.truncation or {}).get("strategy") != strategy:  # set once per model in practice
            self.tokenizer.enable_truncation(self.max_tokens, strategy=strategy)
        batch = self.tokenizer.encode_batch(list(zip(first, second, strict=True)) if second is not None else
                                            list(first))
        out = {"input_ids": np.array([e.ids for e in batch], np.int64),
               "token_type_ids": np.array([e.type_ids for e in batch], np.int64),
               "attention_mask": np.array([e.attention_mask for e in batch], np.int64)}
        pad = -out["input_ids"].shape[1] % self.seq_bucket
        if pad:
            out = {k: np.pad(v, ((0, 0), (0, pad))) for k, v in out.items()}
        return out


class EncoderEmbedder(_EncoderModel):
    """MiniLM text vector fused with the EfficientNet-Lite0 image vector by the late-fusion gate."""

    def image_vectors(self, chunk: Sequence[PreparedItem]) -> tuple[np.ndarray, np.ndarray]:
        vecs = np.zeros((len(chunk), self.meta.hidden_size), np.float32)
        has = np.zeros(len(chunk), np.float32)
        for i, out in enumerate(self._vision(chunk)):
            if out is not None:
                vecs[i], has[i] = out.mean(axis=0), 1.0
        return vecs, has

    def _run_text(self, texts: Sequence[str], vecs: np.ndarray, has: np.ndarray) -> np.ndarray:
        enc = self._encode(texts)
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                  "image_embeds": vecs, "has_image": has}
        return self.backend.infer(f"{self.meta.role}_text", inputs)

    def embed(self, items: Sequence[PreparedItem]) -> np.ndarray:
        out = np.zeros((len(items), self.meta.hidden_size), np.float32)
        for sl in chunks(len(items), self.max_batch):
            chunk = items[sl]
            vecs, has = self.image_vectors(chunk)
            out[sl] = self._run_text([it.text for it in chunk], vecs, has)
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.meta.hidden_size), np.float32)
        for sl in chunks(len(texts), self.max_batch):
            n = sl.stop - sl.start
            out[sl] = self._run_text(texts[sl], np.zeros((n, self.meta.hidden_size), np.float32),
                                     np.zeros(n, np.float32))
        return out


class EncoderTagger(_EncoderModel):
    """Grades (item, tag) pairs with a text cross-encoder; images do not reach it."""

    @property
    def image_pixels(self) -> int:
        return 0

    def score(self, items: Sequence[PreparedItem], candidates: Sequence[Sequence[str]]) -> list[TagScores]:
        pairs = [(i, t) for i, tags in enumerate(candidates) for t in tags]
        logits = np.zeros((len(pairs), 3), np.float32)
        # max_batch counts items elsewhere; a row here is one pair, so allow a batch's worth of candidates.
        rows = self.max_batch * max(1, max((len(c) for c in candidates), default=1))
        for sl in chunks(len(pairs), rows):
            chunk = pairs[sl]
            enc = self._encode([items[i].text for i, _ in chunk], [readable_tag(t) for _, t in chunk])
            logits[sl] = self.backend.infer(f"{self.meta.role}_text", enc)
        results, k = [], 0
        for tags in candidates:
            results.append(TagScores(list(tags), softmax_grades(logits[k:k + len(tags)])))
            k += len(tags)
        return results


@dataclass(frozen=True)
class PackedRowTokens:
    """The token ids a packed tagger row is made of (shared by training and serving)."""

    cls: int
    sep: int
    image: int

    def row(self, visual_tokens: int, text_ids: Sequence[int], tag_ids: Sequence[Sequence[int]]) -> PackedSequence:
        """``[CLS]`` visual tokens, text ``[SEP]``, then ``tag [SEP]`` per candidate."""
        pre = Prefix()
        pre.add_text([self.cls])
        if visual_tokens:
            pre.add_visual_tokens(visual_tokens, self.image)
        pre.add_text([*text_ids, self.sep])
        return PackedSequence(pre, [[*t, self.sep] for t in tag_ids])


def packed_inputs(rows: list[PackedSequence], visual: list[np.ndarray], pad: int, bucket: int = 1,
                  ) -> dict[str, np.ndarray]:
    """The packed tagger's text-graph inputs; ``visual`` per row: its visual tokens [n, width]."""
    batch = build_text_batch(rows, pad, bucket)
    width = visual[0].shape[-1] if visual else 0
    inputs = batch.as_inputs(visual, width)
    inputs["token_type_ids"] = batch.segments
    return inputs


class PackedEncoderTagger(_EncoderModel):
    """Grades all of an item's candidates in one row: visual tokens and text once, then a suffix per tag."""

    def __init__(self, meta: ModelMeta, backend: InferenceBackend, max_text_tokens: int, max_batch: int,
                 tokenizer_dir: Path, seq_bucket: int = 1) -> None:
        super().__init__(meta, backend, max_text_tokens, max_batch, tokenizer_dir, seq_bucket)
        self.tokenizer.no_padding()
        self.tokens = PackedRowTokens(meta.special["cls"], meta.special["eos"], meta.special["image_pad"])
        self.visual_tokens = int(meta.special["visual_tokens"])
        self._tag_ids: dict[str, list[int]] = {}

    def _tags(self, tags: Sequence[str]) -> list[list[int]]:
        new = [t for t in dict.fromkeys(tags) if t not in self._tag_ids]
        if new:
            if len(self._tag_ids) > 100_000:  # a vocabulary that keeps changing must not grow this forever
                self._tag_ids.clear()
            for t, e in zip(new, self.tokenizer.encode_batch([readable_tag(t) for t in new],
                                                             add_special_tokens=False), strict=True):
                self._tag_ids[t] = e.ids[:16]
        return [self._tag_ids[t] for t in tags]

    def _visual(self, chunk: Sequence[PreparedItem]) -> list[np.ndarray]:
        """Per item, its images' visual tokens in a row ([images x tokens, width]; none without images)."""
        width = self.meta.hidden_size
        return [np.zeros((0, width), np.float32) if out is None else out.reshape(-1, width)
                for out in self._vision(chunk)]

    def score(self, items: Sequence[PreparedItem], candidates: Sequence[Sequence[str]]) -> list[TagScores]:
        results: list[TagScores] = []
        text_budget = self.max_tokens
        for sl in chunks(len(items), self.max_batch):
            chunk, cands = items[sl], candidates[sl]
            rows = [i for i, t in enumerate(cands) if t]
            logits: dict[int, np.ndarray] = {}
            if rows:
                visual = self._visual([chunk[i] for i in rows])
                texts = self.tokenizer.encode_batch([chunk[i].text for i in rows], add_special_tokens=False)
                seqs = [self.tokens.row(len(v), e.ids[:text_budget], self._tags(cands[i]))
                        for i, v, e in zip(rows, visual, texts, strict=True)]
                out = self.backend.infer(f"{self.meta.role}_text",
                                         packed_inputs(seqs, visual, self.meta.special["pad"], self.seq_bucket))
                logits = {i: out[r][: len(cands[i])] for r, i in enumerate(rows)}
            for i, tags in enumerate(cands):
                results.append(TagScores(list(tags), softmax_grades(logits.get(i, np.zeros((0, 3))))))
        return results
