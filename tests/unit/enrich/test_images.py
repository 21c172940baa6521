import io

import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from corpora.samples import draw_image
from enrich.errors import InvalidItem
from enrich.media.decode import decode_image
from enrich.media.images import VisionSpec, build_vision_batch, patchify, smart_resize


@pytest.mark.parametrize("size", [(160, 120), (96, 200), (640, 480), (30, 30)])
def test_patchify_matches_hf_processor(size):
    img = Image.open(io.BytesIO(draw_image(3, size))).convert("RGB")
    spec = VisionSpec(min_pixels=56 * 56, max_pixels=224 * 224)
    mine = patchify(img, spec)
    hf = Qwen2VLImageProcessorPil(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    ref = hf(images=[img], return_tensors="np")
    assert tuple(ref["image_grid_thw"][0]) == mine.grid
    np.testing.assert_allclose(mine.patches, ref["pixel_values"], atol=2e-5)


def test_smart_resize_respects_bounds_and_factor():
    for h, w in [(10, 1000), (4000, 3000), (28, 28), (500, 37)]:
        rh, rw = smart_resize(h, w, 28, 56 * 56, 448 * 448)
        assert rh % 28 == 0 and rw % 28 == 0
        assert 56 * 56 <= rh * rw <= 448 * 448


def test_extreme_aspect_ratio_is_invalid():
    with pytest.raises(InvalidItem) as e:
        smart_resize(1, 500, 28, 56 * 56, 448 * 448)
    assert e.value.reason == "image_aspect_ratio"


def test_decode_rejects_garbage():
    with pytest.raises(InvalidItem) as e:
        decode_image(b"\x89PNG\r\n\x1a\n broken")
    assert e.value.reason == "image_undecodable" and e.value.stage == "preprocess"


def test_window_order_is_undone_by_token_slices():
    spec = VisionSpec(min_pixels=28 * 28, max_pixels=168 * 168, window_size=56)
    rng = np.random.default_rng(0)
    from enrich.media.images import patchify_frames

    imgs = [patchify_frames(rng.standard_normal((1, 3, 112, 168)).astype(np.float32), spec),
            patchify_frames(rng.standard_normal((1, 3, 56, 56)).astype(np.float32), spec)]
    vb = build_vision_batch(imgs, spec)
    # Every merged token of every image appears exactly once, and windows are contiguous runs.
    flat = np.concatenate(vb.token_slices)
    assert sorted(flat.tolist()) == list(range(len(flat)))
    assert vb.window_ids is not None
    changes = np.flatnonzero(np.diff(vb.window_ids)) + 1
    assert len(np.unique(vb.window_ids)) == len(changes) + 1
