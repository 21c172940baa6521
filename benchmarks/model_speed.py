"""Embed + tag speed, side by side in one run: plain Hugging Face against the project's paths.

Workload per item (MODELS.md): one image (448 x 448 at real size; the tiny presets cap images at
112 x 112), 128 text tokens, K candidate tags (default 32). Paths:

- ``hf_per_pair``: the stock model, one forward per (item, tag) pair (tagger only);
- ``hf_packed``: the stock vision tower once, then the stock language model over one packed row
  per item (shared prefix, K tag suffixes, block mask), in the run's dtype and attention kernel;
- ``hf_embed``: the stock model's full forward, last-token readout (embedder);
- ``served``: the project's serving code (``enrich.models.base``: mICL prompt, late fusion, packed tags)
  over the exported ONNX graphs in ONNX Runtime (``--served onnx``, tiny presets), or over the same
  graph modules in PyTorch (``--served torch``: the path for real-size presets on a GPU).

    python benchmarks/model_speed.py --preset tiny --device cpu            # any machine
    python benchmarks/model_speed.py --preset real --device cuda --dtype bfloat16 --served torch

Reports items/s, FLOPs per item (counted with torch's FLOP counter on one item) and, where the
peak is known (``--peak-tflops``, default 755 on CUDA: H100 bf16), model FLOP utilisation. Writes
JSON to ``benchmarks/results/model_speed_<device name>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_bench import count_flops, timed  # noqa: E402  (this folder: the lean GPU script's helpers)

from enrich.media.images import build_vision_batch, patchify_frames  # noqa: E402
from enrich.models.base import Embedder, Tagger  # noqa: E402
from enrich.models.meta import ModelMeta  # noqa: E402
from enrich.models.sequences import Prefix, build_text_batch  # noqa: E402
from enrich.preprocess import PreparedItem  # noqa: E402
from triton_models.export import TEXT_INPUTS, export_model  # noqa: E402
from triton_models.graphs import LateFusionGate, TextGraph, VisionGraph, build_random_model  # noqa: E402
from triton_models.presets import get_preset  # noqa: E402

PRESETS = {"tiny": ("tiny", "tiny"), "real": ("qwen2-vl-7b", "qwen2.5-vl-3b")}
# Item text: with the byte-level tokenizer of the presets, N characters are N tokens.
TEXT = "A new item about mountain trails, film cameras and slow travel. " * 8


class TorchBackend:
    """The graph modules in PyTorch behind the ``InferenceBackend`` protocol (``--served torch``)."""

    def __init__(self, graphs: dict[str, torch.nn.Module], device: str, dtype: torch.dtype) -> None:
        self.graphs, self.device, self.dtype = graphs, device, dtype

    def infer(self, model: str, inputs) -> np.ndarray:
        args = [torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for v in inputs.values()]
        args = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        with torch.inference_mode():
            return self.graphs[model](*args).float().cpu().numpy()

    def close(self) -> None:
        self.graphs.clear()


def random_images(meta: ModelMeta, items: int, side: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [patchify_frames(rng.standard_normal((1, 3, side, side)).astype(np.float32), meta.vision)
            for _ in range(items)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--attention", choices=["eager", "sdpa"], default="sdpa")
    ap.add_argument("--served", choices=["onnx", "torch"], default="onnx")
    ap.add_argument("--items", type=int, default=8, help="items per batch")
    ap.add_argument("--tags", type=int, default=32, help="candidate tags per item (K)")
    ap.add_argument("--text-tokens", type=int, default=128, help=f"at most {len(TEXT)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    peak = a.peak_tflops or (755.0 if a.device == "cuda" else None)
    emb_name, tag_name = PRESETS[a.preset]
    side = 448 if a.preset == "real" else 112
    results: list[dict] = []
    device_name = torch.cuda.get_device_name() if a.device == "cuda" else platform.processor() or "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="model-speed-"))

    def record(path: str, model: str, seconds: float, n_items: int, flop_per_item: float | None) -> None:
        rate = n_items / seconds
        row = {"path": path, "model": model, "items_per_s": round(rate, 3)}
        if flop_per_item:
            row |= {"tflop_per_item": round(flop_per_item / 1e12, 5),
                    "achieved_tflops": round(rate * flop_per_item / 1e12, 4)}
            if peak:
                row["mfu"] = round(rate * flop_per_item / 1e12 / peak, 4)
        results.append(row)
        print(json.dumps(row), flush=True)

    tag_texts = [f"tag {k:02d}" for k in range(a.tags)]
    metas: dict[str, ModelMeta] = {}
    torch_graphs: dict[str, torch.nn.Module] = {}
    def measure_hf(role: str, name: str) -> None:
        """The plain Hugging Face paths; keeps what the served path needs in ``metas`` / ``torch_graphs``."""
        model = build_random_model(get_preset(role, name), seed=0)
        for cfg in (model.config, model.config.text_config, model.config.vision_config):
            cfg._attn_implementation = a.attention
        model = model.to(a.device, dtype).eval()
        if a.served == "onnx":
            export_model(role, tmp / role, preset=name, progress=lambda m: print(f"[export] {m}", flush=True))
        meta = ModelMeta.read(tmp / role / "meta.json") if a.served == "onnx" else None
        if meta is None:  # torch path: the same graphs, in this process, this dtype
            from triton_models.export import meta_for, preset_source
            meta = meta_for(preset_source(role, name, 0), role, f"{name}-torch")
        images = random_images(meta, a.items, side, seed=1)
        pixel_values = torch.from_numpy(np.concatenate([im.patches for im in images])).to(a.device, dtype)
        grid = torch.tensor([im.grid for im in images], device=a.device)
        cfg = model.config

        def prefix(i: int) -> Prefix:
            pre = Prefix()
            pre.add_text([cfg.vision_start_token_id])
            pre.add_image(images[i].grid, meta.vision.merge_size, cfg.image_token_id)
            pre.add_text([cfg.vision_end_token_id])
            pre.add_text(list(TEXT[: a.text_tokens].encode()))
            return pre

        if role == "embedder":
            seqs = [prefix(i).ids for i in range(a.items)]
            ids = torch.tensor(seqs, device=a.device)
            mm = (ids == cfg.image_token_id).int()

            def hf_embed() -> torch.Tensor:
                with torch.inference_mode():
                    out = model(input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid,
                                mm_token_type_ids=mm, output_hidden_states=True)
                    return torch.nn.functional.normalize(out.hidden_states[-1][:, -1], dim=-1)

            record("hf_embed", "embedder", timed(hf_embed, a.device, a.repeats), a.items,
                   count_flops(hf_embed, model) / a.items)
        else:
            labels = meta.label_token_ids
            # The same token rows the served tagger builds: its prompt, K "Tag: ... Relevance:" suffixes.
            rows = [Tagger(meta, None, a.text_tokens, a.items).packed_row(  # type: ignore[arg-type]
                [images[i]], TEXT[: a.text_tokens], tag_texts) for i in range(a.items)]

            def hf_pair(item: int, k: int) -> torch.Tensor:
                ids = torch.tensor([rows[item].prefix.ids + rows[item].suffixes[k]], device=a.device)
                with torch.inference_mode():
                    return model(input_ids=ids, pixel_values=torch.from_numpy(images[item].patches).to(a.device, dtype),
                                 image_grid_thw=grid[item: item + 1],
                                 mm_token_type_ids=(ids == cfg.image_token_id).int(),
                                 logits_to_keep=1).logits[0, -1, labels]

            n_pair_items = 1 if a.preset == "real" else 2
            per_pair = timed(lambda: [hf_pair(i, k) for i in range(n_pair_items) for k in range(a.tags)], a.device, 1)
            record("hf_per_pair", "tagger", per_pair, n_pair_items, count_flops(lambda: hf_pair(0, 0), model) * a.tags)

            vision = VisionGraph(model)
            text = TextGraph(model, "tagger", labels)
            vb = build_vision_batch(images, meta.vision)
            v_in = [torch.from_numpy(x).to(a.device) for x in (vb.pixel_values, vb.position_ids, vb.patch_mask)]
            v_in[0] = v_in[0].to(dtype)
            batch = build_text_batch(rows, meta.special["pad"])

            def hf_packed() -> torch.Tensor:
                with torch.inference_mode():
                    merged = vision(*v_in).float().cpu().numpy()
                    merged = merged.reshape(-1, merged.shape[-1])
                    t_in = batch.as_inputs([merged[s] for s in vb.token_slices], meta.hidden_size)
                    args = [torch.from_numpy(t_in[k]).to(a.device) for k in TEXT_INPUTS]
                    args = [x.to(dtype) if x.is_floating_point() else x for x in args]
                    return text(*args)

            record("hf_packed", "tagger", timed(hf_packed, a.device, a.repeats), a.items,
                   count_flops(hf_packed, model) / a.items)
            packed = hf_packed()[0].float().cpu()
            pairs = torch.stack([hf_pair(0, k).float().cpu() for k in range(4)])
            results.append({"check": "packed row == per-pair forwards (first item, 4 tags)",
                            "max_abs_diff": float((packed[:4] - pairs).abs().max())})
            print(json.dumps(results[-1]), flush=True)
        if a.served == "torch":
            gate = LateFusionGate.untrained(meta.hidden_size).to(a.device, dtype) if role == "embedder" else None
            torch_graphs[f"{role}_vision"] = VisionGraph(model)
            torch_graphs[f"{role}_text"] = TextGraph(model, role, [48, 49, 50] if role == "tagger" else None, gate)
        metas[role] = meta

    for role, name in (("embedder", emb_name), ("tagger", tag_name)):
        measure_hf(role, name)
    if a.served == "torch":
        backend: object = TorchBackend(torch_graphs, a.device, dtype)
    else:
        from enrich.models.inference import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(tmp)
    embedder = Embedder(metas["embedder"], backend, a.text_tokens, a.items)  # type: ignore[arg-type]
    tagger = Tagger(metas["tagger"], backend, a.text_tokens, a.items)  # type: ignore[arg-type]
    rng = np.random.default_rng(2)
    pictures = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(a.items)]
    # Byte-level tokenizer: 128 characters are 128 tokens. Patches are cached per item after the warm-up.
    items = [PreparedItem(item=None, text=TEXT[: a.text_tokens], images=[p]) for p in pictures]  # type: ignore[arg-type]
    def embed() -> object:
        return embedder.embed(items)

    def tag() -> object:
        return tagger.score(items, [tag_texts] * a.items)

    record(f"served_{a.served}", "embedder", timed(embed, a.device, a.repeats), a.items, None)
    record(f"served_{a.served}", "tagger", timed(tag, a.device, a.repeats), a.items, None)
    record(f"served_{a.served}", "embed+tag", timed(lambda: (embed(), tag()), a.device, a.repeats), a.items, None)

    out = a.out or ROOT / "benchmarks" / "results" / f"model_speed_{a.preset}_{a.device}.json"
    report = {"device": device_name, "torch": torch.__version__, "preset": a.preset, "dtype": a.dtype,
              "attention": a.attention, "served": a.served,
              "workload": {"items": a.items, "image": f"{side}x{side}", "text_tokens": a.text_tokens, "tags": a.tags},
              "peak_tflops": peak, "results": results}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
