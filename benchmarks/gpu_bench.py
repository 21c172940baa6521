"""The production graphs at real size, beside plain Hugging Face, at several batch sizes in one process.

Run by ``benchmarks/gpu_run.sh`` (the one GPU script); needs only torch, transformers and numpy, what a
GPU node has, and nothing of the worker (no Pillow, Kafka or Triton client). Workload per item
(MODELS.md): one 448 x 448 image (112 px on the tiny presets), 128 text tokens, 32 candidate tags.

Paths, each at every batch size (``--items 8,16,32,64``):

- ``hf_embed``: the stock Qwen2-VL model's full forward, last-token readout;
- ``hf_tag_per_pair``: the stock Qwen2.5-VL model, one forward per (item, tag) pair (one item: its cost
  per item does not depend on the batch);
- ``served_embed``, ``served_tag``, ``served_embed+tag``: the exported graph modules as the worker calls
  them (host-built rows of patch slots and packed token rows, the mICL prompt and late fusion, every
  candidate of an item in one row), in the run's dtype, attention through SDPA (flash or memory-efficient
  kernels on a GPU), optionally ``torch.compile``d (``--compile``; ``reduce-overhead`` adds CUDA graphs).

Reports items/s, FLOPs per item (``FlopCounterMode``, counted once per path with the language models'
attention in eager form: torch 2.11's counter rejects SDPA with grouped-query attention), and model
FLOP utilisation against the device's dense bf16 peak. A batch that runs out of memory is reported as
such and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enrich.media.images import PatchedImage, VisionSpec, build_vision_batch, patchify_frames  # noqa: E402
from enrich.models.sequences import PackedSequence, Prefix, build_text_batch  # noqa: E402
from triton_models.graphs import LateFusionGate, TextGraph, VisionGraph, build_random_model  # noqa: E402
from triton_models.presets import get_preset  # noqa: E402

PRESETS = {"real": {"embedder": "qwen2-vl-7b", "tagger": "qwen2.5-vl-3b"}, "tiny": {"embedder": "tiny",
                                                                                  "tagger": "tiny"}}
# Dense bf16 tensor-core peaks (SXM parts), TFLOP/s: what MFU is measured against.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}
LABELS = [48, 49, 50]  # three label tokens: the tagger reads grades 0/1/2 from them


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    fn()  # warm-up: kernels, allocator, compilation
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


@contextmanager
def eager_attention(*models: torch.nn.Module):
    """The language models' attention as plain matmuls while FLOPs are counted (the same FLOPs as SDPA)."""
    saved = []
    for m in models:
        for cfg in (m.config, m.config.text_config, m.config.vision_config):
            saved.append((cfg, cfg._attn_implementation))
            cfg._attn_implementation = "eager"
    try:
        yield
    finally:
        for cfg, impl in saved:
            cfg._attn_implementation = impl


def count_flops(fn: Callable[[], object], *models: torch.nn.Module) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with eager_attention(*models), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def build(role: str, preset: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A random-weight model built on the device in the run's dtype (seconds for the 7B, not minutes)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = build_random_model(get_preset(role, PRESETS[preset][role]))
    finally:
        torch.set_default_dtype(previous)
    for cfg in (model.config, model.config.text_config, model.config.vision_config):
        cfg._attn_implementation = "sdpa"
    return model.eval()


class Workload:
    """The items of one batch size, laid out once on the host as the worker lays them out."""

    def __init__(self, model: torch.nn.Module, spec: VisionSpec, items: int, side: int, text_tokens: int,
                 tags: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        cfg = model.config
        self.cfg, self.spec, self.items = cfg, spec, items
        self.images = [patchify_frames(rng.standard_normal((1, 3, side, side)).astype(np.float32), spec)
                       for _ in range(items)]
        vocab = min(250, int(cfg.text_config.vocab_size))  # ordinary tokens, below every preset's specials
        self.text = [list(rng.integers(0, vocab, text_tokens)) for _ in range(items)]
        self.tag_ids = [list(rng.integers(0, vocab, 6)) for _ in range(tags)]  # "Tag: <name>\nRelevance:"

    def image_part(self, pre: Prefix, image: PatchedImage) -> None:
        pre.add_text([self.cfg.vision_start_token_id])
        pre.add_image(image.grid, self.spec.merge_size, self.cfg.image_token_id)
        pre.add_text([self.cfg.vision_end_token_id])

    def micl_rows(self) -> list[PackedSequence]:
        """The embedder's prompt: the image, a visual readout, the text, the item readout."""
        rows = []
        for image, text in zip(self.images, self.text, strict=True):
            pre = Prefix()
            self.image_part(pre, image)
            pre.add_text([11, 12, 13, 14])
            pre.mark_readout()
            pre.add_text(text + [15, 16, 17])
            pre.mark_readout()
            rows.append(PackedSequence(pre))
        return rows

    def tag_rows(self) -> list[PackedSequence]:
        """The tagger's packed row: the item once, then one suffix per candidate."""
        rows = []
        for image, text in zip(self.images, self.text, strict=True):
            pre = Prefix()
            pre.add_text([21, 22])
            self.image_part(pre, image)
            pre.add_text(text + [10])
            rows.append(PackedSequence(pre, [list(t) for t in self.tag_ids]))
        return rows


class Served:
    """One model's vision and text graphs called as the worker calls them, the hand-over on the device."""

    def __init__(self, vision: torch.nn.Module, text: torch.nn.Module, device: str, dtype: torch.dtype) -> None:
        self.vision, self.text, self.device, self.dtype = vision, text, device, dtype

    def run(self, work: Workload, rows: list[PackedSequence]) -> torch.Tensor:
        vb = build_vision_batch(work.images, work.spec)
        batch = build_text_batch(rows, pad_id=0)
        dev = self.device
        with torch.inference_mode():
            merged = self.vision(torch.from_numpy(vb.pixel_values).to(dev, self.dtype),
                                 torch.from_numpy(vb.position_ids).to(dev), torch.from_numpy(vb.patch_mask).to(dev))
            flat = merged.reshape(-1, merged.shape[-1])
            tokens = max(len(s) for s in vb.token_slices)
            index = np.zeros((len(rows), tokens), np.int64)
            for i, s in enumerate(vb.token_slices):
                index[i, : len(s)] = s
            image_embeds = flat[torch.from_numpy(index).to(dev)]
            return self.text(torch.from_numpy(batch.input_ids).to(dev), torch.from_numpy(batch.attn_segments).to(dev),
                             torch.from_numpy(batch.position_ids).to(dev), image_embeds,
                             torch.from_numpy(batch.readout_index).to(dev))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="real")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    ap.add_argument("--items", default="8,16,32,64", help="batch sizes, comma-separated")
    ap.add_argument("--tags", type=int, default=32)
    ap.add_argument("--text-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", choices=["none", "default", "reduce-overhead"], default="none",
                    help="torch.compile the served graphs (reduce-overhead: with CUDA graphs)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    sizes = [int(n) for n in a.items.split(",")]
    side = 448 if a.preset == "real" else 112
    device_name = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or "cpu"
    peak = peak_tflops(device_name) if a.device.startswith("cuda") else None
    results: list[dict] = []
    checks: list[dict] = []

    def record(path: str, model: str, items: int, seconds: float | None, flop_per_item: float | None,
               error: str | None = None) -> None:
        row: dict = {"path": path, "model": model, "items": items}
        if error:
            row["error"] = error
        else:
            assert seconds is not None
            row["items_per_s"] = round(items / seconds, 3)
            if flop_per_item:
                row["tflop_per_item"] = round(flop_per_item / 1e12, 5)
                row["achieved_tflops"] = round(items / seconds * flop_per_item / 1e12, 3)
                if peak:
                    row["mfu"] = round(items / seconds * flop_per_item / 1e12 / peak, 4)
        results.append(row)
        print(json.dumps(row), flush=True)

    def attempt(path: str, model: str, items: int, fn: Callable[[], object], flop_per_item: float | None) -> bool:
        try:
            record(path, model, items, timed(fn, a.device, a.repeats), flop_per_item)
            return True
        except torch.OutOfMemoryError:
            record(path, model, items, None, None, error="out of memory")
            torch.cuda.empty_cache()
            return False

    t_start = time.perf_counter()
    models = {role: build(role, a.preset, a.device, dtype) for role in ("embedder", "tagger")}
    specs, served, plain = {}, {}, {}
    for role, model in models.items():
        vc = model.config.vision_config
        preset = get_preset(role, PRESETS[a.preset][role])
        specs[role] = VisionSpec(min_pixels=preset.min_pixels, max_pixels=preset.max_pixels,
                                 window_size=getattr(vc, "window_size", None))
        width = model.config.text_config.hidden_size
        gate = LateFusionGate.untrained(width).to(a.device, dtype) if role == "embedder" else None
        graphs = (VisionGraph(model).eval(), TextGraph(model, role, LABELS if role == "tagger" else None, gate))
        plain[role] = Served(*graphs, a.device, dtype)  # FLOPs are counted on these (a compiled graph hides them)
        if a.compile != "none":
            mode = None if a.compile == "default" else a.compile
            graphs = tuple(torch.compile(g, mode=mode, dynamic=False) for g in graphs)
        served[role] = Served(*graphs, a.device, dtype)
    print(f"built both models on {a.device} in {time.perf_counter() - t_start:.1f}s", flush=True)

    emb, tag = models["embedder"], models["tagger"]
    flops: dict[str, float] = {}
    def measure(n: int) -> None:
        """Every path at batch size ``n`` (the stock per-pair tagger and the parity check at the first)."""
        we = Workload(emb, specs["embedder"], n, side, a.text_tokens, a.tags, seed=n)
        wt = Workload(tag, specs["tagger"], n, side, a.text_tokens, a.tags, seed=n + 1)
        micl, packed = we.micl_rows(), wt.tag_rows()
        stock_rows = [[emb.config.vision_start_token_id] + [emb.config.image_token_id] * im.num_tokens
                 + [emb.config.vision_end_token_id] + t for im, t in zip(we.images, we.text, strict=True)]
        ids = torch.tensor(stock_rows, device=a.device)
        pixels = torch.from_numpy(np.concatenate([im.patches for im in we.images])).to(a.device, dtype)
        grid = torch.tensor([im.grid for im in we.images], device=a.device)

        def hf_embed() -> torch.Tensor:
            with torch.inference_mode():
                out = emb(input_ids=ids, pixel_values=pixels, image_grid_thw=grid,
                          mm_token_type_ids=(ids == emb.config.image_token_id).int(), output_hidden_states=True)
                return torch.nn.functional.normalize(out.hidden_states[-1][:, -1], dim=-1)

        def served_embed() -> torch.Tensor:
            return served["embedder"].run(we, micl)

        def served_tag() -> torch.Tensor:
            return served["tagger"].run(wt, packed)

        if not flops:  # per item, the same at any batch size (tests/unit/triton_models/test_graph_scaling.py)
            flops["hf_embed"] = count_flops(hf_embed, emb) / n
            flops["served_embed"] = count_flops(lambda: plain["embedder"].run(we, micl), emb) / n
            flops["served_tag"] = count_flops(lambda: plain["tagger"].run(wt, packed), tag) / n
            flops["served_embed+tag"] = flops["served_embed"] + flops["served_tag"]
        attempt("hf_embed", "embedder", n, hf_embed, flops["hf_embed"])
        attempt("served_embed", "embedder", n, served_embed, flops["served_embed"])
        attempt("served_tag", "tagger", n, served_tag, flops["served_tag"])
        attempt("served_embed+tag", "both", n, lambda: (served_embed(), served_tag()), flops["served_embed+tag"])

        if n == sizes[0]:
            # The stock tagger one pair at a time, and the packed row against it (first item, first 4 tags).
            row = packed[0]
            pair_pixels = torch.from_numpy(wt.images[0].patches).to(a.device, dtype)
            pair_grid = torch.tensor([wt.images[0].grid], device=a.device)

            def hf_pair(k: int) -> torch.Tensor:
                pair = torch.tensor([row.prefix.ids + row.suffixes[k]], device=a.device)
                with torch.inference_mode():
                    return tag(input_ids=pair, pixel_values=pair_pixels, image_grid_thw=pair_grid,
                               mm_token_type_ids=(pair == tag.config.image_token_id).int(),
                               logits_to_keep=1).logits[0, -1, LABELS]

            per_item = count_flops(lambda: hf_pair(0), tag) * a.tags
            seconds = timed(lambda: [hf_pair(k) for k in range(a.tags)], a.device, 1)
            record("hf_tag_per_pair", "tagger", 1, seconds, per_item)
            got = served_tag()[0, :4].float()
            want = torch.stack([hf_pair(k).float() for k in range(4)])
            scale = float(want.abs().max())
            checks.append({"check": "served packed row == stock per-pair forwards (first item, 4 tags)",
                           "max_abs_diff": round(float((got - want).abs().max()), 5),
                           "relative_to_scale": round(float((got - want).abs().max()) / max(scale, 1e-9), 5)})
            print(json.dumps(checks[-1]), flush=True)

    for n in sizes:
        measure(n)

    report = {"device": device_name, "torch": torch.__version__, "python": platform.python_version(),
              "preset": a.preset, "dtype": a.dtype, "attention": "sdpa", "compile": a.compile,
              "peak_bf16_tflops": peak,
              "workload": {"image": f"{side}x{side}", "text_tokens": a.text_tokens, "tags": a.tags,
                           "batch_sizes": sizes},
              "wall_s": round(time.perf_counter() - t_start, 1), "results": results, "checks": checks}
    if a.device.startswith("cuda"):
        report["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
