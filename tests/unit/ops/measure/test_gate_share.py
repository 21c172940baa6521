"""The per-kind report's image share reads the gate of the preset under evaluation (it once read the English
preset's, whose 384-wide gate cannot take the multilingual preset's 512-wide vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from ops.measure.evaluate_kinds import image_share
from triton_models.export_small import small_preset
from triton_models.small_models import load_fusion_head


@pytest.mark.parametrize("preset", ["small", "multilingual"])
def test_the_image_share_is_the_evaluated_presets_gate(preset):
    fusion = small_preset(preset).fusion
    head, _ = load_fusion_head(fusion)
    width = head.projection.weight.shape[0]
    rng = np.random.default_rng(0)
    v, t = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in rng.normal(size=(2, 16, width)).astype(np.float32))
    share = image_share(fusion, v, t)
    assert 0.0 < share < 1.0
    # an icon paired with itself as text: the share differs from the random pairs', so the gate reads its inputs
    assert image_share(fusion, v, v) != share
