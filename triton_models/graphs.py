"""Exportable wrappers around the stock Hugging Face modules.

The stock vision encoders split attention by ``cu_seqlens.tolist()``, which
does not export. These wrappers reuse the stock weights and submodules but
attend per frame (a batch dimension) and per window (a reshape of it), with
padding masked: numerically the same, and linear in the frames of a call.
Text masks are built in-graph from one small integer per token.

Graph contracts (float32 or the export's float type / int64):

vision: pixel_values [F, P, D], position_ids [F, P, 2], patch_mask [F, P]
        -> image_embeds [F, P / merge^2, H] (enrich.media.images.build_vision_batch lays frames out)
text:   input_ids [B, S], attn_segments [B, S] (0 prefix, j + 1 suffix j, -1 padding), position_ids [B, 3, S],
        image_embeds [B, T, H] (row b's image tokens in prompt order, zero-padded),
        readout_index [B, R]
        -> embeddings [B, H] (embedder: R = 2 mICL readouts, late fusion, L2 norm)
        -> label_logits [B, R, L] (tagger: logits of the L label tokens)

Every text input is batch-first so Triton's dynamic batcher can merge requests.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

from triton_models.presets import Preset


def segment_mask(segments: torch.Tensor, causal: bool) -> torch.Tensor:
    """[B, 1, S, S] bool, True where a query may attend to a key, from each token's segment ([B, S] int64:
    0 the prefix, j + 1 suffix j, -1 padding): every token sees the prefix and its own segment, causally in a
    decoder. A padding token sees the prefix (every row starts with one), so no softmax row is empty."""
    q, k = segments.unsqueeze(-1), segments.unsqueeze(-2)
    allowed = (k >= 0) & ((k == 0) | (k == q))
    if causal:
        idx = torch.arange(segments.shape[-1], device=segments.device)
        allowed = allowed & (idx.unsqueeze(0) <= idx.unsqueeze(1))
    return allowed.unsqueeze(1)


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as the additive bias attention adds to its scores, in the scores' own dtype."""
    return torch.where(mask, torch.zeros((), dtype=dtype), torch.full((), torch.finfo(dtype).min, dtype=dtype))


def build_random_model(preset: Preset, seed: int = 0) -> nn.Module:
    """A random-weight model of the preset's architecture, in eval mode. Its language model attends through
    ``scaled_dot_product_attention`` (the graphs' own vision attention always does), which exports to ONNX
    as the same matmuls and softmax eager attention does, and runs flash or memory-efficient kernels on a GPU."""
    torch.manual_seed(seed)
    if preset.arch == "qwen2_vl":
        cfg: Any = Qwen2VLConfig(**preset.config)
        cls: Any = Qwen2VLForConditionalGeneration
    else:
        cfg = Qwen2_5_VLConfig(**preset.config)
        cls = Qwen2_5_VLForConditionalGeneration
    for c in (cfg, cfg.text_config, cfg.vision_config):
        c._attn_implementation = "sdpa"
    model = cls(cfg).eval()
    return model


def _attention(attn: nn.Module, x: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> torch.Tensor:
    """Vision self-attention over rows [R, L, C], each row alone (``mask`` [R, 1, 1, L]: real keys), through
    ``scaled_dot_product_attention`` (flash or memory-efficient kernels; fused by ONNX Runtime)."""
    r, length, _ = x.shape
    q, k, v = attn.qkv(x).reshape(r, length, 3, attn.num_heads, -1).unbind(2)  # R, L, heads, d
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    # R, heads, L, d; contiguous so that every kernel (the math one on a CPU too) works on the same layout
    # at any R: a transposed view of R > 1 rows is copied inside it, of one row not
    q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
    return attn.proj(out.transpose(1, 2).reshape(r, length, -1))


def _norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A vision norm, LayerNorm's statistics in float32 whatever ``x`` is: the ONNX exporter writes a half
    LayerNorm with float32 input and half weights, which ONNX Runtime refuses (the RMSNorms already do this)."""
    if isinstance(norm, nn.LayerNorm):
        return F.layer_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.bias.float(),
                            norm.eps).to(x.dtype)
    return norm(x)


class VisionGraph(nn.Module):
    """Vision tower + merger over a batch of frames, one row of patch slots each (``build_vision_batch``).

    Attention runs per row, and per window in Qwen2.5-VL's windowed blocks (a row is whole windows of
    ``window_patches`` slots, so windows are a reshape of the rows): cost and memory grow with the frames
    of a call, linearly. Padding slots are masked as keys and zeroed after each attention.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.visual = model.model.visual
        self.windowed = hasattr(self.visual, "fullatt_block_indexes")
        self.full_blocks = set(getattr(self.visual, "fullatt_block_indexes", []))
        vc = model.config.vision_config
        self.unit = int(vc.spatial_merge_size) ** 2
        self.window_patches = ((int(vc.window_size) // int(vc.spatial_merge_size) // int(vc.patch_size)) ** 2
                               * self.unit) if self.windowed else 0

    def _rotary(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.visual.rotary_pos_emb.inv_freq
        freqs = position_ids[..., None].float() * inv_freq  # ..., 2, d/4
        emb = freqs.flatten(-2)
        emb = torch.cat([emb, emb], dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, pixel_values: torch.Tensor, position_ids: torch.Tensor,
                patch_mask: torch.Tensor) -> torch.Tensor:
        frames, slots, _ = pixel_values.shape
        x = self.visual.patch_embed(pixel_values.flatten(0, 1))
        x = x.reshape(frames, slots, -1)
        cos, sin = self._rotary(position_ids)
        real = patch_mask > 0
        keep = real.unsqueeze(-1)
        full = (real.unsqueeze(1).unsqueeze(1), cos, sin)
        if self.windowed:
            w = self.window_patches
            window = (real.reshape(-1, 1, 1, w), cos.reshape(-1, w, cos.shape[-1]), sin.reshape(-1, w, sin.shape[-1]))
        for i, blk in enumerate(self.visual.blocks):
            h = _norm(blk.norm1, x)
            if self.windowed and i not in self.full_blocks:
                mask, c, s = window
                attended = _attention(blk.attn, h.reshape(-1, self.window_patches, h.shape[-1]), mask, c, s)
                attended = attended.reshape(frames, slots, -1)
            else:
                attended = _attention(blk.attn, h, *full)
            # a window of padding only has no key to attend to (NaN): padding rows are zeroed, never read
            x = x + torch.where(keep, attended, torch.zeros((), dtype=attended.dtype))
            x = x + blk.mlp(_norm(blk.norm2, x))
        merger = self.visual.merger
        merged = merger.mlp(_norm(merger.ln_q, x.flatten(0, 1)).reshape(-1, merger.hidden_size))
        return merged.reshape(frames, slots // self.unit, -1)


class LateFusionGate(nn.Module):
    """NoteLLM-2 late fusion: ``z = sigmoid(W [v; t] + b)``, ``fused = z * v + (1 - z) * t``.

    ``v`` is the item's pooled visual feature, ``t`` an LLM-side vector; both unit-norm.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * width, width)

    @classmethod
    def untrained(cls, width: int, visual_share: float = 0.25) -> LateFusionGate:
        """A gate that mixes a fixed share of the visual vector in, until one is trained."""
        gate = cls(width)
        nn.init.zeros_(gate.proj.weight)
        nn.init.constant_(gate.proj.bias, float(torch.logit(torch.tensor(visual_share))))
        return gate

    @classmethod
    def random(cls, width: int, seed: int) -> LateFusionGate:
        """Random weights (tiny presets), so parity tests exercise a gate that depends on its inputs."""
        torch.manual_seed(seed)
        return cls(width)

    def forward(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(self.proj(torch.cat([v, t], dim=-1)))
        return z * v + (1 - z) * t


class TextGraph(nn.Module):
    """Language model over spliced text + image embeddings; the attention mask is built here from the tokens'
    segments (``segment_mask``)."""

    def __init__(self, model: nn.Module, role: str, label_token_ids: list[int] | None = None,
                 gate: LateFusionGate | None = None) -> None:
        super().__init__()
        self.lm = model.model.language_model
        self.image_token_id = int(model.config.image_token_id)
        self.role = role
        if role == "tagger":
            if not label_token_ids:
                raise ValueError("a tagger graph needs label token ids")
            weight = model.lm_head.weight[label_token_ids].detach().clone()
            self.label_head = nn.Parameter(weight, requires_grad=False)
        else:
            if gate is None:
                raise ValueError("an embedder graph needs a late-fusion gate")
            self.gate = gate

    def forward(self, input_ids: torch.Tensor, attn_segments: torch.Tensor, position_ids: torch.Tensor,
                image_embeds: torch.Tensor, readout_index: torch.Tensor) -> torch.Tensor:
        embeds = self.lm.embed_tokens(input_ids)
        width = embeds.shape[-1]
        is_image = input_ids == self.image_token_id
        # The k-th image token of a row takes the row's k-th image embedding.
        slot = (torch.cumsum(is_image.long(), dim=1) - 1).clamp(min=0)
        spliced = torch.gather(image_embeds.to(embeds.dtype), 1, slot.unsqueeze(-1).expand(-1, -1, width))
        embeds = torch.where(is_image.unsqueeze(-1), spliced, embeds)
        bias = additive(segment_mask(attn_segments, causal=True), embeds.dtype)
        out = self.lm(inputs_embeds=embeds, attention_mask={"full_attention": bias},
                      position_ids=position_ids.transpose(0, 1), use_cache=False)
        hidden = out.last_hidden_state
        picked = torch.gather(hidden, 1, readout_index.unsqueeze(-1).expand(-1, -1, width))
        if self.role == "tagger":
            return torch.matmul(picked, self.label_head.t())
        return self._fuse(picked, spliced, is_image)

    def _fuse(self, picked: torch.Tensor, spliced: torch.Tensor, is_image: torch.Tensor) -> torch.Tensor:
        """mICL readouts (visual-aware, multimodal) fused with the pooled visual feature.

        An item without images has nothing to fuse: its embedding is the multimodal readout alone.
        """
        mask = is_image.unsqueeze(-1).to(spliced.dtype)
        count = mask.sum(dim=1)
        visual = F.normalize((spliced * mask).sum(dim=1) / count.clamp(min=1), dim=-1)
        readouts = F.normalize(picked, dim=-1)
        fused = self.gate(visual.unsqueeze(1).expand_as(readouts), readouts).mean(dim=1)
        return F.normalize(torch.where(count > 0, fused, readouts[:, -1]), dim=-1)
