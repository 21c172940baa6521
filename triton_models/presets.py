"""Model presets: random-weight configs of the production architectures.

``tiny`` presets (tests, demo) and real-size presets (``qwen2.5-vl-3b`` tagger,
``qwen2-vl-7b`` embedder) for benchmarks, where speed does not depend on weights.

The tiny presets keep every structural feature of the real models (M-RoPE
sections, GQA, spatial merge, Qwen2.5-VL window attention with full-attention
blocks) so that export, parity and serving exercise the real code paths, while
running in milliseconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from enrich.errors import ModelConfigError

Architecture = Literal["qwen2_vl", "qwen2_5_vl"]
Role = Literal["embedder", "tagger"]

# Byte-level tokenizer layout shared by the tiny presets (see enrich.models.tokenizer):
# ids 0..255 are UTF-8 bytes, specials follow.
BYTE_SPECIALS = {
    "pad": 256,
    "bos": 257,
    "eos": 258,
    "vision_start": 259,
    "vision_end": 260,
    "image_pad": 261,
    "video_pad": 262,
}
TINY_VOCAB = 512


@dataclass(frozen=True)
class Preset:
    name: str
    arch: Architecture
    role: Role
    config: dict[str, Any]
    # Image resolution bounds for preprocessing (pixels), part of the model's contract.
    min_pixels: int
    max_pixels: int


def _tiny_text() -> dict[str, Any]:
    return {
        "vocab_size": TINY_VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        # mrope_section must sum to head_dim / 2 (head_dim = 64 / 4 = 16)
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": BYTE_SPECIALS["bos"],
        "eos_token_id": BYTE_SPECIALS["eos"],
        "pad_token_id": BYTE_SPECIALS["pad"],
    }


def _tiny_common() -> dict[str, Any]:
    return {
        "image_token_id": BYTE_SPECIALS["image_pad"],
        "video_token_id": BYTE_SPECIALS["video_pad"],
        "vision_start_token_id": BYTE_SPECIALS["vision_start"],
        "vision_end_token_id": BYTE_SPECIALS["vision_end"],
        "tie_word_embeddings": False,
    }


def tiny_qwen2_vl_embedder() -> Preset:
    cfg = {
        **_tiny_common(),
        "text_config": _tiny_text(),
        "vision_config": {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,  # output width = text hidden
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
    }
    return Preset("tiny", "qwen2_vl", "embedder", cfg, min_pixels=28 * 28, max_pixels=112 * 112)


def tiny_qwen2_5_vl_tagger() -> Preset:
    cfg = {
        **_tiny_common(),
        "text_config": _tiny_text(),
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "out_hidden_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            # 56 px windows = 2x2 merged tokens, so a 112 px image has 4 windows
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
    }
    return Preset("tiny", "qwen2_5_vl", "tagger", cfg, min_pixels=28 * 28, max_pixels=112 * 112)


# Real Qwen2-VL / Qwen2.5-VL special token ids (the real tokenizers' layout).
QWEN_SPECIALS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}


def _real_text(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 128_000,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "pad_token_id": 151643,
    }


def qwen2_5_vl_3b_tagger() -> Preset:
    """Qwen2.5-VL-3B at real size (random weights): for speed measurements, never for quality."""
    cfg = {
        **QWEN_SPECIALS,
        "tie_word_embeddings": True,
        "text_config": _real_text(2048, 11008, 36, 16, 2, 151936),
        "vision_config": {
            "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "out_hidden_size": 2048,
            "num_heads": 16, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        },
    }
    return Preset("qwen2.5-vl-3b", "qwen2_5_vl", "tagger", cfg, min_pixels=56 * 56, max_pixels=448 * 448)


def qwen2_vl_7b_embedder() -> Preset:
    """Qwen2-VL-7B at real size (random weights), the GME-7B architecture: for speed measurements."""
    cfg = {
        **QWEN_SPECIALS,
        "tie_word_embeddings": False,
        "text_config": _real_text(3584, 18944, 28, 28, 4, 152064),
        "vision_config": {
            "depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4, "num_heads": 16,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        },
    }
    return Preset("qwen2-vl-7b", "qwen2_vl", "embedder", cfg, min_pixels=56 * 56, max_pixels=448 * 448)


PRESETS = {
    ("embedder", "tiny"): tiny_qwen2_vl_embedder,
    ("tagger", "tiny"): tiny_qwen2_5_vl_tagger,
    ("embedder", "qwen2-vl-7b"): qwen2_vl_7b_embedder,
    ("tagger", "qwen2.5-vl-3b"): qwen2_5_vl_3b_tagger,
}


def get_preset(role: Role, name: str) -> Preset:
    try:
        return PRESETS[(role, name)]()
    except KeyError:
        known = sorted(n for r, n in PRESETS if r == role)
        raise ModelConfigError(f"unknown {role} preset {name!r}; known presets: {', '.join(known)}") from None
