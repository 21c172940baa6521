"""Real-size presets have the production models' shapes (built on the meta device: no memory, no weights)."""

from __future__ import annotations

import pytest
import torch

from enrich.errors import ModelConfigError
from triton_models.graphs import build_random_model
from triton_models.presets import get_preset


@pytest.mark.parametrize(("role", "name", "total_b", "vision_b"), [
    # MODELS.md's 4.07 B for the 3B counts its tied output head (0.31 B) a second time.
    ("tagger", "qwen2.5-vl-3b", 3.75, 0.67),
    ("embedder", "qwen2-vl-7b", 8.29, 0.68),
])
def test_real_size_presets_match_the_production_parameter_counts(role, name, total_b, vision_b):
    preset = get_preset(role, name)
    with torch.device("meta"):
        model = build_random_model(preset)
    total = sum(p.numel() for p in model.parameters()) / 1e9
    vision = sum(p.numel() for p in model.model.visual.parameters()) / 1e9
    assert total == pytest.approx(total_b, abs=0.01) and vision == pytest.approx(vision_b, abs=0.01)
    text = preset.config["text_config"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    assert sum(text["rope_parameters"]["mrope_section"]) * 2 == head_dim


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ModelConfigError, match="known presets: qwen2.5-vl-3b, tiny"):
        get_preset("tagger", "qwen3")
