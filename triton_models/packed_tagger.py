"""The small tagger that sees the image and grades all of an item's candidate tags in one pass.

The production design (``MODELS.md``, "Packed scoring") on the real small weights:

- **visual tokens**: EfficientNet-Lite0's last feature map, average-pooled to a ``VISUAL_GRID`` square and
  projected into MiniLM's input space: ``VISUAL_TOKENS`` prefix tokens per image;
- **one row per item**: ``[CLS]``, the visual tokens, the item's text, ``[SEP]`` (the prefix), then one
  ``tag [SEP]`` suffix per candidate. The block mask lets the prefix see itself and each suffix see the
  prefix and itself; positions restart after the prefix for every suffix and suffix tokens are segment 1,
  so a packed row gives each candidate what it would get alone;
- **readout**: each suffix's last token, through a 3-grade head.

A bidirectional encoder scored pairwise lets the item attend to the tag; packed it cannot, so this is its
own model, trained packed with the mask, positions and segments it is served with
(``train_packed_tagger.py``). Its text graph has the Qwen-VL tagger graph's contract
(``input_ids``, ``attn_segments`` [B, S], ``position_ids`` [B, 3, S] (the three rows equal: one position per token),
``image_embeds`` [B, T, 384], ``readout_index`` [B, R] -> ``label_logits`` [B, R, 3]) plus
``token_type_ids`` [B, S], which BERT has and Qwen has not.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from enrich.errors import ModelConfigError
from enrich.models.encoders import PACKED_TAGGER_ARCH
from triton_models.graphs import additive, segment_mask
from triton_models.small_models import (
    IMAGE_FEATURES,
    TEXT_WIDTH,
    EfficientNetLite0,
    LoRATagger,
    add_lora,
    load_minilm,
)

VISUAL_GRID = 3
VISUAL_TOKENS = VISUAL_GRID * VISUAL_GRID


class VisualProjection(nn.Module):
    """Pooled feature-map cells [N, 1280, g, g] -> visual tokens [N, g*g, 384] in MiniLM's input space."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(IMAGE_FEATURES, TEXT_WIDTH)
        # Where on the grid a cell came from (the text positions are MiniLM's own).
        self.cell = nn.Parameter(torch.zeros(VISUAL_TOKENS, TEXT_WIDTH))
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        tokens = cells.flatten(2).transpose(1, 2)  # N, g*g, 1280
        return self.proj(tokens) + self.cell


def _bins(size: int, out: int) -> torch.Tensor:
    """[out, size]: the averaging weights of adaptive average pooling (bins may overlap, as PyTorch's do)."""
    rows = []
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return torch.tensor(rows)  # from Python numbers: a constant of the traced graph, not traced in-place ops


def pooled_cells(net: EfficientNetLite0, pixels: torch.Tensor) -> torch.Tensor:
    """The feature map [N, 1280, 7, 7] average-pooled to [N, 1280, g, g]: ``F.adaptive_avg_pool2d`` as two
    fixed matrix products, which the ONNX exporter takes (it refuses adaptive pooling of traced sizes)."""
    fmap = net.feature_map(pixels)
    rows, cols = _bins(fmap.shape[-2], VISUAL_GRID), _bins(fmap.shape[-1], VISUAL_GRID)
    return torch.matmul(torch.matmul(rows, fmap), cols.t())


class PackedTaggerVision(nn.Module):
    """``pixel_values`` [N, 3, 224, 224] -> ``image_embeds`` [N, VISUAL_TOKENS, 384]."""

    def __init__(self, net: EfficientNetLite0, visual: VisualProjection) -> None:
        super().__init__()
        self.net, self.visual = net, visual

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual(pooled_cells(self.net, pixel_values))


class PackedEncoderTagger(LoRATagger):
    """MiniLM with LoRA adapters over packed rows and an additive attention bias, a 3-grade head."""

    def __init__(self, bert: nn.Module, image_token_id: int, rank: int = 8, alpha: float = 16.0,
                 lora_layers: int = 6) -> None:
        super().__init__()
        self.bert = bert
        self.image_token_id = image_token_id
        self.rank, self.alpha, self.lora_layers = rank, alpha, lora_layers
        add_lora(bert, rank, alpha, lora_layers)
        self.visual = VisualProjection()
        self.head = nn.Linear(TEXT_WIDTH, 3)
        self.heads = int(bert.config.num_attention_heads)

    def _attend(self, layer: nn.Module, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        sa = layer.attention.self
        b, s, w = h.shape
        d = w // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, s, self.heads, d).transpose(1, 2)

        q, k, v = split(sa.query(h)), split(sa.key(h)), split(sa.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, s, w)
        out = layer.attention.output
        h1 = out.LayerNorm(out.dropout(out.dense(ctx)) + h)
        mid = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h1))
        return layer.output.LayerNorm(layer.output.dropout(layer.output.dense(mid)) + h1)

    def forward(self, input_ids: torch.Tensor, attn_segments: torch.Tensor, position_ids: torch.Tensor,
                token_type_ids: torch.Tensor, image_embeds: torch.Tensor, readout_index: torch.Tensor,
                ) -> torch.Tensor:
        emb = self.bert.embeddings
        words = emb.word_embeddings(input_ids)
        is_image = input_ids == self.image_token_id
        # The k-th image slot of a row takes the row's k-th visual token.
        slot = (torch.cumsum(is_image.long(), dim=1) - 1).clamp(min=0)
        spliced = torch.gather(image_embeds.to(words.dtype), 1, slot.unsqueeze(-1).expand(-1, -1, words.shape[-1]))
        words = torch.where(is_image.unsqueeze(-1), spliced, words)
        h = words + emb.position_embeddings(position_ids[:, 0]) + emb.token_type_embeddings(token_type_ids)
        h = emb.dropout(emb.LayerNorm(h))
        bias = additive(segment_mask(attn_segments, causal=False), h.dtype)  # bidirectional within a segment
        for layer in self.bert.encoder.layer:
            h = self._attend(layer, h, bias)
        picked = torch.gather(h, 1, readout_index.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return self.head(picked)


def save_packed_tagger(model: PackedEncoderTagger, path: Path, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() for k, v in model.trained_state().items()}
    torch.save({"kind": PACKED_TAGGER_ARCH, "state": state, "rank": model.rank, "alpha": model.alpha,
                "lora_layers": model.lora_layers, "image_token_id": model.image_token_id, "info": info}, path)


def is_packed_artifact(path: Path) -> bool:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelConfigError(f"{path} not found: train it with `enrich models train-tagger`") from None
    return blob.get("kind") == PACKED_TAGGER_ARCH


def load_packed_tagger(path: Path) -> tuple[PackedEncoderTagger, dict]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("kind") != PACKED_TAGGER_ARCH:
        raise ModelConfigError(f"{path} is not a packed tagger artifact")
    model = PackedEncoderTagger(load_minilm(), int(blob["image_token_id"]), blob["rank"], blob["alpha"],
                                blob["lora_layers"])
    missing = set(model.trained_state()) - set(blob["state"])
    if missing:
        raise ModelConfigError(f"{path} lacks {sorted(missing)[:3]}...: not an artifact of this model")
    model.load_state_dict({k: v.float() for k, v in blob["state"].items()}, strict=False)
    return model.eval(), dict(blob.get("info", {}))
