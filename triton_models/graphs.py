"""Exportable wrappers around the stock Hugging Face modules.

The stock vision encoders split attention by ``cu_seqlens.tolist()``, which
does not export. These wrappers reuse the stock weights and submodules but
attend over all patches at once with an additive block-diagonal bias built
in-graph from host-computed segment ids, which is numerically the same.

Graph contracts (all float32 / int64):

vision: pixel_values [N, D], position_ids [N, 2], segment_ids [N]
        (+ window_ids [N] for Qwen2.5-VL) -> image_embeds [N / merge^2, H]
text:   input_ids [B, S], attn_bias [B, 1, S, S], position_ids [B, 3, S],
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

NEG = torch.finfo(torch.float32).min


def build_random_model(preset: Preset, seed: int = 0) -> nn.Module:
    """A random-weight model of the preset's architecture, in eval mode, eager attention."""
    torch.manual_seed(seed)
    if preset.arch == "qwen2_vl":
        cfg: Any = Qwen2VLConfig(**preset.config)
        cls: Any = Qwen2VLForConditionalGeneration
    else:
        cfg = Qwen2_5_VLConfig(**preset.config)
        cls = Qwen2_5_VLForConditionalGeneration
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    model = cls(cfg).eval()
    return model


def _masked_attention(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor,
                      cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    q, k, v = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # heads, N, d
    scores = torch.matmul(q, k.transpose(1, 2)) * attn.scaling + bias
    out = torch.matmul(torch.softmax(scores, dim=-1), v)
    return attn.proj(out.transpose(0, 1).reshape(n, -1))


def _segment_bias(seg: torch.Tensor) -> torch.Tensor:
    same = seg[:, None] == seg[None, :]
    return torch.where(same, torch.zeros((), dtype=torch.float32), torch.full((), NEG))


class VisionGraph(nn.Module):
    """Vision tower + merger over a flat batch of patches from many images."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.visual = model.model.visual
        self.windowed = hasattr(self.visual, "fullatt_block_indexes")
        self.full_blocks = set(getattr(self.visual, "fullatt_block_indexes", []))

    def _rotary(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.visual.rotary_pos_emb.inv_freq
        freqs = position_ids[..., None].float() * inv_freq  # N, 2, d/4
        emb = freqs.reshape(freqs.shape[0], -1)
        emb = torch.cat([emb, emb], dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, pixel_values: torch.Tensor, position_ids: torch.Tensor, segment_ids: torch.Tensor,
                window_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.visual.patch_embed(pixel_values)
        cos, sin = self._rotary(position_ids)
        full_bias = _segment_bias(segment_ids)
        window_bias = _segment_bias(window_ids) if window_ids is not None else full_bias
        for i, blk in enumerate(self.visual.blocks):
            bias = full_bias if (not self.windowed or i in self.full_blocks) else window_bias
            x = x + _masked_attention(blk.attn, blk.norm1(x), bias, cos, sin)
            x = x + blk.mlp(blk.norm2(x))
        return self.visual.merger(x)


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
    """Language model over spliced text + image embeddings with a caller-built attention bias."""

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

    def forward(self, input_ids: torch.Tensor, attn_bias: torch.Tensor, position_ids: torch.Tensor,
                image_embeds: torch.Tensor, readout_index: torch.Tensor) -> torch.Tensor:
        embeds = self.lm.embed_tokens(input_ids)
        width = embeds.shape[-1]
        is_image = input_ids == self.image_token_id
        # The k-th image token of a row takes the row's k-th image embedding.
        slot = (torch.cumsum(is_image.long(), dim=1) - 1).clamp(min=0)
        spliced = torch.gather(image_embeds.to(embeds.dtype), 1, slot.unsqueeze(-1).expand(-1, -1, width))
        embeds = torch.where(is_image.unsqueeze(-1), spliced, embeds)
        out = self.lm(inputs_embeds=embeds, attention_mask={"full_attention": attn_bias},
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
