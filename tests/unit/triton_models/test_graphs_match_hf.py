"""The exportable graphs compute what the stock Hugging Face models compute.

The packed tagger row (shared prefix, K suffixes, block mask, positions restarting
after the prefix) is checked against K plain, unpacked forwards of the stock
model, one per (item, tag) pair; the embedder's mICL readouts and late fusion
against the stock model's hidden states and the gate formula written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from enrich.media.images import PatchedImage, VisionSpec, build_vision_batch, patchify_frames
from enrich.models.sequences import PackedSequence, Prefix, build_text_batch
from triton_models.export import TEXT_INPUTS
from triton_models.graphs import LateFusionGate, TextGraph, VisionGraph, build_random_model
from triton_models.presets import get_preset


def _spec(model) -> VisionSpec:
    vc = model.config.vision_config
    window = getattr(vc, "window_size", None)
    return VisionSpec(min_pixels=28 * 28, max_pixels=112 * 112, window_size=window)


def _images(spec: VisionSpec, sizes, seed=0) -> list[PatchedImage]:
    rng = np.random.default_rng(seed)
    return [patchify_frames(rng.standard_normal((1, 3, h, w)).astype(np.float32), spec) for h, w in sizes]


def _vision(model, images: list[PatchedImage], spec: VisionSpec) -> list[np.ndarray]:
    vb = build_vision_batch(images, spec)
    inputs = [vb.pixel_values, vb.position_ids, vb.patch_mask]
    with torch.no_grad():
        merged = VisionGraph(model)(*[torch.from_numpy(x) for x in inputs]).numpy()
    merged = merged.reshape(-1, merged.shape[-1])
    return [merged[s] for s in vb.token_slices]


def _hf(model, ids: list[int], images: list[PatchedImage]):
    pixel_values = torch.from_numpy(np.concatenate([im.patches for im in images]))
    grid = torch.tensor([im.grid for im in images])
    input_ids = torch.tensor([ids])
    with torch.no_grad():  # the token types make the stock model compute its own M-RoPE positions
        return model(input_ids=input_ids, pixel_values=pixel_values, image_grid_thw=grid,
                     mm_token_type_ids=(input_ids == model.config.image_token_id).int(), output_hidden_states=True)


@pytest.mark.parametrize("role", ["embedder", "tagger"])
def test_vision_graph_equals_the_stock_vision_tower(role):
    model = build_random_model(get_preset(role, "tiny"))
    spec = _spec(model)
    images = _images(spec, [(112, 84), (56, 112)])
    mine = np.concatenate(_vision(model, images, spec))
    pixel_values = torch.from_numpy(np.concatenate([im.patches for im in images]))
    with torch.no_grad():
        ref = model.model.visual(pixel_values, grid_thw=torch.tensor([im.grid for im in images]))
    ref = getattr(ref, "pooler_output", ref)  # merged tokens
    np.testing.assert_allclose(mine, ref.numpy(), atol=1e-4)


def _prefix(model, image: PatchedImage, text: list[int]) -> Prefix:
    cfg = model.config
    pre = Prefix()
    pre.add_text([cfg.vision_start_token_id])
    pre.add_image(image.grid, cfg.vision_config.spatial_merge_size, cfg.image_token_id)
    pre.add_text([cfg.vision_end_token_id])
    pre.add_text(text)
    return pre


def test_packed_tag_row_equals_one_stock_forward_per_tag():
    model = build_random_model(get_preset("tagger", "tiny"))
    spec = _spec(model)
    labels = [48, 49, 50]
    image = _images(spec, [(84, 112)])[0]
    pre = _prefix(model, image, [67, 111, 110, 116, 101, 110, 116])
    tags = [[84, 97, 103, 58, 32, 99, 97, 116, 115], [84, 58, 32, 107, 56, 115], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    batch = build_text_batch([PackedSequence(pre, tags)], pad_id=256, bucket=16)
    inputs = batch.as_inputs(_vision(model, [image], spec), model.config.text_config.hidden_size)
    with torch.no_grad():
        packed = TextGraph(model, "tagger", labels)(*[torch.from_numpy(inputs[k]) for k in TEXT_INPUTS])[0].numpy()
    for k, tag in enumerate(tags):
        logits = _hf(model, pre.ids + tag, [image]).logits[0, -1, labels].numpy()
        np.testing.assert_allclose(packed[k], logits, atol=1e-4)


def test_embedding_is_late_fusion_of_the_stock_micl_readouts():
    model = build_random_model(get_preset("embedder", "tiny"))
    spec = _spec(model)
    gate = LateFusionGate.random(model.config.text_config.hidden_size, seed=3)
    image = _images(spec, [(112, 112)], seed=1)[0]
    pre = _prefix(model, image, [])
    pre.add_text([10, 11, 12])  # "compress the image"
    pre.mark_readout()
    pre.add_text([20, 21, 22, 23, 24, 25, 26])  # the text, then "compress the item"
    pre.mark_readout()
    visual_tokens = _vision(model, [image], spec)
    batch = build_text_batch([PackedSequence(pre)], pad_id=256, bucket=16)
    inputs = batch.as_inputs(visual_tokens, model.config.text_config.hidden_size)
    with torch.no_grad():
        mine = TextGraph(model, "embedder", gate=gate)(*[torch.from_numpy(inputs[k]) for k in TEXT_INPUTS])[0]

        hidden = _hf(model, pre.ids, [image]).hidden_states[-1][0]
        visual_aware, multimodal = F.normalize(hidden[pre.readouts], dim=-1)
        v = F.normalize(torch.from_numpy(visual_tokens[0]).mean(0), dim=-1)
        w, b = gate.proj.weight, gate.proj.bias

        def fuse(t: torch.Tensor) -> torch.Tensor:
            z = torch.sigmoid(w @ torch.cat([v, t]) + b)
            return z * v + (1 - z) * t

        expected = F.normalize((fuse(visual_aware) + fuse(multimodal)) / 2, dim=-1)
    np.testing.assert_allclose(mine.numpy(), expected.numpy(), atol=1e-5)


def test_untrained_gate_mixes_a_fixed_visual_share():
    gate = LateFusionGate.untrained(8, visual_share=0.25)
    v, t = torch.ones(8), torch.zeros(8)
    np.testing.assert_allclose(gate(v, t).detach().numpy(), 0.25, atol=1e-6)
