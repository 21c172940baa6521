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


def test_each_frame_is_a_row_of_whole_windows_and_token_slices_undo_the_window_order():
    spec = VisionSpec(min_pixels=28 * 28, max_pixels=168 * 168, window_size=56)  # windows of 2x2 merge units
    rng = np.random.default_rng(0)
    from enrich.media.images import patchify_frames

    imgs = [patchify_frames(rng.standard_normal((1, 3, 112, 168)).astype(np.float32), spec),
            patchify_frames(rng.standard_normal((1, 3, 56, 56)).astype(np.float32), spec)]
    vb = build_vision_batch(imgs, spec)
    # 112x168 px: 4x6 merge units in 2x3 windows of 4 units, 16 patches each; the small image pads to that
    assert vb.pixel_values.shape[:2] == (2, 6 * 16) and vb.patch_mask.sum(axis=1).tolist() == [96, 16]
    # every merged token of every image appears exactly once, each a real slot of its own frame's row
    flat = np.concatenate(vb.token_slices)
    assert len(set(flat.tolist())) == len(flat) == 24 + 4
    assert all(vb.patch_mask.reshape(-1, 4)[flat].all(axis=1))
    # the first window of the first image: merge units (0, 0), (0, 1), (1, 0), (1, 1) of its 4x6 grid
    assert vb.token_slices[0][[0, 1, 6, 7]].tolist() == [0, 1, 2, 3]
    # positions travel with their patches: the slots of unit (1, 0) hold rows 2..3, columns 0..1
    assert vb.position_ids[0, 8:12].tolist() == [[2, 0], [2, 1], [3, 0], [3, 1]]
