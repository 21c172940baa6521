"""The served graphs cost the same per item at any batch size, and run in bf16 and fp16.

Counted, not timed: the graphs run on PyTorch's meta device (shapes only, nothing computed) at the real
presets' widths with two layers per tower, 448 px images, 128 text tokens and 32 candidate tags per item.
``FlopCounterMode`` counts FLOPs; a dispatch mode adds up the bytes of every tensor an op makes while it is
alive (views and in-place results excluded): the graphs' peak activation memory. The graphs before these
packed every image of a batch into one sequence with a dense block-diagonal bias, so their attention and
their bias grew with the square of the batch: at 16 items, 16 times the bias of one item, per item.
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from enrich.media.images import PatchedImage, VisionSpec, build_vision_batch
from enrich.models.sequences import PackedSequence, Prefix, build_text_batch
from triton_models.graphs import LateFusionGate, TextGraph, VisionGraph, build_random_model
from triton_models.presets import Preset, get_preset

REAL = {"tagger": "qwen2.5-vl-3b", "embedder": "qwen2-vl-7b"}
IMAGE_PX, TEXT_TOKENS, TAGS, TAG_TOKENS = 448, 128, 32, 3


def two_layers(preset: Preset) -> Preset:
    """The preset at its real widths with two layers per tower (one windowed and one full in Qwen2.5-VL)."""
    cfg = dict(preset.config)
    cfg["text_config"] = dict(cfg["text_config"], num_hidden_layers=2)
    vision = dict(cfg["vision_config"], depth=2)
    if "fullatt_block_indexes" in vision:
        vision["fullatt_block_indexes"] = [1]
    cfg["vision_config"] = vision
    return dataclasses.replace(preset, config=cfg)


class PeakLiveBytes(TorchDispatchMode):
    """The most bytes held at once by tensors that ops made (not the weights or the inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        out = func(*args, **(kwargs or {}))
        # a view or an in-place result makes no new bytes (_unsafe_view is a view its schema does not mark)
        if func is torch.ops.aten._unsafe_view.default or any(r.alias_info is not None for r in func._schema.returns):
            return out
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                n = t.numel() * t.element_size()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
        return out


def graphs(role: str) -> tuple[VisionGraph, TextGraph, VisionSpec, dict]:
    preset = two_layers(get_preset(role, REAL[role]))
    with torch.device("meta"):
        model = build_random_model(preset)
        gate = LateFusionGate(model.config.text_config.hidden_size) if role == "embedder" else None
    vc = model.config.vision_config
    spec = VisionSpec(min_pixels=preset.min_pixels, max_pixels=preset.max_pixels,
                      window_size=getattr(vc, "window_size", None))
    labels = [48, 49, 50] if role == "tagger" else None
    return VisionGraph(model), TextGraph(model, role, labels, gate), spec, dict(model.config.to_dict())


def item_rows(role: str, spec: VisionSpec, cfg: dict, items: int) -> tuple[list[PatchedImage], list[PackedSequence]]:
    grid = (1, IMAGE_PX // spec.patch_size, IMAGE_PX // spec.patch_size)
    image = PatchedImage(np.zeros((grid[1] * grid[2], spec.patch_dim), np.float32), grid)
    rows = []
    for _ in range(items):
        pre = Prefix()
        pre.add_text([cfg["vision_start_token_id"]])
        pre.add_image(grid, spec.merge_size, cfg["image_token_id"])
        pre.add_text([cfg["vision_end_token_id"]])
        if role == "embedder":
            pre.mark_readout()
        pre.add_text([7] * TEXT_TOKENS)
        if role == "embedder":
            pre.mark_readout()
        suffixes = [[9] * TAG_TOKENS for _ in range(TAGS)] if role == "tagger" else []
        rows.append(PackedSequence(pre, suffixes))
    return [image] * items, rows


def served_cost(role: str, items: int) -> tuple[float, float]:
    """FLOPs and peak activation bytes of one vision call and one text call for ``items`` items."""
    vision, text, spec, cfg = graphs(role)
    images, rows = item_rows(role, spec, cfg, items)
    vb = build_vision_batch(images, spec)
    batch = build_text_batch(rows, pad_id=0)
    tokens = max(len(s) for s in vb.token_slices)
    width = cfg["text_config"]["hidden_size"]

    def meta(x: np.ndarray) -> torch.Tensor:
        return torch.empty(x.shape, dtype=torch.from_numpy(x[:0]).dtype, device="meta")

    with torch.no_grad(), FlopCounterMode(display=False) as flops, PeakLiveBytes() as memory:
        vision(meta(vb.pixel_values), meta(vb.position_ids), meta(vb.patch_mask))
        text(meta(batch.input_ids), meta(batch.attn_segments), meta(batch.position_ids),
             torch.empty((items, tokens, width), device="meta"), meta(batch.readout_index))
    return flops.get_total_flops(), memory.peak


@pytest.mark.parametrize("role", ["tagger", "embedder"])
def test_cost_and_memory_per_item_are_the_same_at_16_items_as_at_one(role):
    flops_1, peak_1 = served_cost(role, 1)
    flops_16, peak_16 = served_cost(role, 16)
    print(f"{role}: {flops_1 / 1e12:.2f} TFLOP and {peak_1 / 2**20:.0f} MiB peak for one item; per item at 16: "
          f"{flops_16 / 16 / 1e12:.2f} TFLOP, {peak_16 / 16 / 2**20:.0f} MiB")
    assert flops_16 / 16 == pytest.approx(flops_1, rel=0.05)
    assert peak_16 / 16 == pytest.approx(peak_1, rel=0.05)


@pytest.mark.parametrize("role", ["tagger", "embedder"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_graphs_run_in_half_precision_close_to_float32(role, dtype):
    """bf16 and fp16 against fp32 on the tiny presets: the largest difference stays under 5 % of the outputs'
    largest magnitude (bf16 keeps 8 bits of mantissa: about 0.4 % per rounding, over a few layers)."""
    from triton_models.export import TEXT_INPUTS, row_embeds, sample_inputs
    from triton_models.graphs import build_random_model as build
    from triton_models.presets import get_preset as preset_of

    model = build(preset_of(role, "tiny"))
    cfg = model.config
    width = cfg.text_config.hidden_size
    gate = LateFusionGate.random(width, 0) if role == "embedder" else None
    vision, text = VisionGraph(model).eval(), TextGraph(model, role, [48, 49, 50] if role == "tagger" else None, gate)
    spec = VisionSpec(min_pixels=28 * 28, max_pixels=112 * 112, window_size=getattr(cfg.vision_config,
                                                                                     "window_size", None))
    meta = type("Meta", (), {"vision": spec, "role": role, "special": {
        "vision_start": cfg.vision_start_token_id, "vision_end": cfg.vision_end_token_id,
        "image_pad": cfg.image_token_id, "pad": 256}})()
    v_in, slices, seqs = sample_inputs(meta, [(112, 84), (56, 112)], seed=3)
    t_batch = build_text_batch(seqs, 256, bucket=8)

    def run(dt: torch.dtype) -> np.ndarray:
        vision.to(dt), text.to(dt)
        with torch.no_grad():
            merged = vision(*[torch.from_numpy(v).to(dt) if v.dtype == np.float32 else torch.from_numpy(v)
                              for v in v_in.values()])
            assert merged.dtype == dt
            t_in = t_batch.as_inputs(row_embeds(merged.float().numpy(), slices, len(seqs)), width)
            args = [torch.from_numpy(t_in[k]) for k in TEXT_INPUTS]
            out = text(*[a.to(dt) if a.is_floating_point() else a for a in args])
            assert out.dtype == dt
            return out.float().numpy()

    full = run(torch.float32)
    half = run(dtype)
    scale = float(np.abs(full).max())
    assert np.isfinite(half).all()
    assert float(np.abs(half - full).max()) <= 0.05 * scale, (float(np.abs(half - full).max()), scale)
