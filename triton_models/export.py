"""Export a model (tiny preset or HF checkpoint) to a vision and a text ONNX graph.

Writes ``<out>/vision.onnx``, ``<out>/text.onnx`` and ``<out>/meta.json`` (the
contract the pipeline reads: tokenizer, special ids, vision spec, widths,
version), then checks ONNX Runtime against PyTorch on padded batches and
several image sizes and raises ``ParityError`` when they differ.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from enrich.images import VisionSpec, build_vision_batch, patchify_frames
from enrich.model_meta import ModelMeta
from enrich.sequences import PackedSequence, Prefix, build_text_batch
from triton_models.graphs import TextGraph, VisionGraph, build_random_model
from triton_models.presets import BYTE_SPECIALS, get_preset

log = logging.getLogger(__name__)

LABELS = ("0", "1", "2")  # grade tokens: irrelevant, weak, strong
VISION_INPUTS = ["pixel_values", "position_ids", "segment_ids"]
TEXT_INPUTS = ["input_ids", "attn_bias", "position_ids", "image_embeds", "readout_index"]


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond tolerance."""


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    meta: ModelMeta
    max_abs_diff: dict[str, float]


def _weights_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _meta_for(model: nn.Module, role: str, name: str, min_pixels: int, max_pixels: int) -> ModelMeta:
    cfg = model.config
    vc = cfg.vision_config
    window = getattr(vc, "window_size", None)
    label_ids = [ord(c) for c in LABELS] if role == "tagger" else []
    return ModelMeta(
        name=name,
        role=role,
        arch=cfg.model_type,
        version=f"{name}-{_weights_digest(model)}",
        hidden_size=int(cfg.text_config.hidden_size),
        tokenizer="bytes",
        special={
            "pad": BYTE_SPECIALS["pad"],
            "eos": BYTE_SPECIALS["eos"],
            "vision_start": int(cfg.vision_start_token_id),
            "vision_end": int(cfg.vision_end_token_id),
            "image_pad": int(cfg.image_token_id),
        },
        label_token_ids=label_ids,
        vision=VisionSpec(
            patch_size=int(vc.patch_size),
            temporal_patch_size=int(vc.temporal_patch_size),
            merge_size=int(vc.spatial_merge_size),
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            in_channels=int(vc.in_channels),
            window_size=int(window) if window else None,
        ),
    )


def _sample_inputs(meta: ModelMeta, sizes: list[tuple[int, int]], seed: int) -> tuple[dict, list[PackedSequence]]:
    """Random images of the given sizes plus a padded text batch that uses them."""
    rng = np.random.default_rng(seed)
    spec = meta.vision
    images = [patchify_frames(rng.standard_normal((1, 3, h, w)).astype(np.float32), spec) for h, w in sizes]
    vb = build_vision_batch(images, spec)
    sp = meta.special
    seqs = []
    for i in range(len(images) + 1):  # the last row has no image and is shortest
        pre = Prefix()
        if i < len(images):
            pre.add_text([sp["vision_start"]])
            pre.add_image(images[i].grid, spec.merge_size, sp["image_pad"])
            pre.add_text([sp["vision_end"]])
        pre.add_text(list(rng.integers(0, 256, size=5 + 3 * i)))
        suffixes = [list(rng.integers(0, 256, size=3 + k)) for k in range(3)] if meta.role == "tagger" else []
        seqs.append(PackedSequence(pre, suffixes))
    vision = {"pixel_values": vb.pixel_values, "position_ids": vb.position_ids, "segment_ids": vb.segment_ids}
    if vb.window_ids is not None:
        vision["window_ids"] = vb.window_ids
    return {"vision": vision, "slices": vb.token_slices}, seqs


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], output: str,
            dynamic: dict[str, dict[int, str]]) -> None:
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=[output],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)


def export_model(role: str, out_dir: Path, preset: str = "tiny", seed: int = 0,
                 progress: Callable[[str], None] = log.info) -> ExportResult:
    """Export a random-weight preset of ``role`` into ``out_dir`` and check parity."""
    p = get_preset(role, preset)  # type: ignore[arg-type]
    progress(f"building {p.arch} {role} preset {preset!r}")
    model = build_random_model(p, seed=seed)
    meta = _meta_for(model, role, preset, p.min_pixels, p.max_pixels)
    out_dir.mkdir(parents=True, exist_ok=True)

    vision_graph = VisionGraph(model).eval()
    text_graph = TextGraph(model, role, meta.label_token_ids or None).eval()
    sample, seqs = _sample_inputs(meta, [(56, 84), (112, 112)], seed)
    vision_inputs = sample["vision"]
    v_names = list(vision_inputs)
    t0 = time.perf_counter()
    progress("exporting vision graph")
    _export(vision_graph, tuple(torch.from_numpy(vision_inputs[k]) for k in v_names), out_dir / "vision.onnx",
            v_names, "image_embeds",
            {k: {0: "patches"} for k in v_names} | {"image_embeds": {0: "tokens"}})
    with torch.no_grad():
        merged = vision_graph(*[torch.from_numpy(vision_inputs[k]) for k in v_names]).numpy()
    image_embeds = np.concatenate([merged[s] for s in sample["slices"]])
    tb = build_text_batch(seqs, meta.special["pad"])
    text_inputs = tb.as_inputs(image_embeds)
    out_name = "label_logits" if role == "tagger" else "embeddings"
    progress("exporting text graph")
    _export(text_graph, tuple(torch.from_numpy(text_inputs[k]) for k in TEXT_INPUTS), out_dir / "text.onnx",
            TEXT_INPUTS, out_name,
            {"input_ids": {0: "batch", 1: "seq"}, "attn_bias": {0: "batch", 2: "seq", 3: "seq_k"},
             "position_ids": {1: "batch", 2: "seq"}, "image_embeds": {0: "image_tokens"},
             "readout_index": {0: "batch", 1: "readouts"}, out_name: {0: "batch", 1: "readouts"}})
    progress(f"exported in {time.perf_counter() - t0:.1f}s; checking parity")
    meta.write(out_dir / "meta.json")
    diffs = check_parity(out_dir, vision_graph, text_graph, meta, seed=seed + 1)
    progress(f"parity ok: {diffs}")
    return ExportResult(out_dir, meta, diffs)


def check_parity(out_dir: Path, vision_graph: nn.Module, text_graph: nn.Module, meta: ModelMeta,
                 seed: int, tol: float = 1e-4) -> dict[str, float]:
    """ONNX Runtime vs PyTorch on image sizes and padding the export never saw."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    vs = ort.InferenceSession(str(out_dir / "vision.onnx"), opts, providers=["CPUExecutionProvider"])
    ts = ort.InferenceSession(str(out_dir / "text.onnx"), opts, providers=["CPUExecutionProvider"])
    diffs: dict[str, float] = {}
    for case, sizes in enumerate([[(28, 28)], [(112, 56), (84, 112), (28, 56)]]):
        sample, seqs = _sample_inputs(meta, sizes, seed + case)
        v_in: dict[str, Any] = sample["vision"]
        onnx_v = vs.run(None, v_in)[0]
        with torch.no_grad():
            torch_v = vision_graph(*[torch.from_numpy(v) for v in v_in.values()]).numpy()
        emb = np.concatenate([torch_v[s] for s in sample["slices"]])
        t_in = build_text_batch(seqs, meta.special["pad"]).as_inputs(emb)
        onnx_t = ts.run(None, t_in)[0]
        with torch.no_grad():
            torch_t = text_graph(*[torch.from_numpy(t_in[k]) for k in TEXT_INPUTS]).numpy()
        diffs[f"vision[{case}]"] = float(np.abs(onnx_v - torch_v).max())
        diffs[f"text[{case}]"] = float(np.abs(onnx_t - torch_t).max())
    worst = max(diffs.values())
    if not np.isfinite(worst) or worst > tol:
        raise ParityError(f"ONNX Runtime differs from PyTorch by {worst:.3g} (> {tol}): {diffs}")
    return diffs
