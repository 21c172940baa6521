"""Export a model (a preset or a Hugging Face checkpoint) to a vision and a text ONNX graph.

Writes ``<out>/vision.onnx``, ``<out>/text.onnx`` and ``<out>/meta.json`` (the
contract the pipeline reads: tokenizer, special ids, vision spec, widths,
version; a checkpoint's tokenizer goes to ``<out>/tokenizer/``), then checks
ONNX Runtime against PyTorch on padded batches and several image sizes and
raises ``ParityError`` when they differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from enrich.errors import ModelConfigError, Stop
from enrich.media.images import VisionSpec, build_vision_batch, patchify_frames
from enrich.models.meta import GRAPH_CONTRACT, ModelMeta
from enrich.models.sequences import PackedSequence, Prefix, build_text_batch
from triton_models.graphs import LateFusionGate, TextGraph, VisionGraph, build_random_model
from triton_models.presets import BYTE_SPECIALS, get_preset
from triton_models.repository import external_files

log = logging.getLogger(__name__)

LABELS = ("0", "1", "2")  # grade tokens: irrelevant, weak, strong
TEXT_INPUTS = ["input_ids", "attn_segments", "position_ids", "image_embeds", "readout_index"]
# Checkpoints rarely say how large an image may get; this is the benchmark workload's 448 x 448.
DEFAULT_MAX_PIXELS = 448 * 448
DEFAULT_MIN_PIXELS = 56 * 56


class ParityError(Stop):
    """ONNX Runtime and PyTorch disagree beyond tolerance."""


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    meta: ModelMeta
    max_abs_diff: dict[str, float]


@dataclass
class Source:
    """A model to export and what the meta file needs to know about where it came from."""

    model: nn.Module
    name: str
    tokenizer: str  # "bytes" | "hf"
    special: dict[str, int]
    label_token_ids: list[int]
    min_pixels: int
    max_pixels: int
    hf_tokenizer: Any = None


def weights_digest(*modules: nn.Module) -> str:
    h = hashlib.sha256()
    for module in modules:
        for name, t in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def preset_source(role: str, preset: str, seed: int) -> Source:
    p = get_preset(role, preset)  # type: ignore[arg-type]
    model = build_random_model(p, seed=seed)
    cfg = model.config
    special = {"pad": BYTE_SPECIALS["pad"], "eos": BYTE_SPECIALS["eos"],
               "vision_start": int(cfg.vision_start_token_id), "vision_end": int(cfg.vision_end_token_id),
               "image_pad": int(cfg.image_token_id)}
    labels = [ord(c) for c in LABELS] if role == "tagger" else []
    return Source(model, preset, "bytes", special, labels, p.min_pixels, p.max_pixels)


def checkpoint_source(role: str, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Source:
    """A Hugging Face checkpoint directory (Qwen2-VL or Qwen2.5-VL), loaded offline in float32."""
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLForConditionalGeneration,
    )

    if not (path / "config.json").exists():
        raise ModelConfigError(f"{path}: no config.json there; pass the directory of a Hugging Face "
                               "Qwen2-VL / Qwen2.5-VL checkpoint")
    classes = {"qwen2_vl": Qwen2VLForConditionalGeneration, "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}
    cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    if cfg.model_type not in classes:
        raise ModelConfigError(f"{path}: model_type {cfg.model_type!r} is not one of {sorted(classes)}")
    model = classes[cfg.model_type].from_pretrained(str(path), local_files_only=True, torch_dtype=torch.float32,
                                                    attn_implementation="sdpa").eval()
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    eos = tok.eos_token_id if tok.eos_token_id is not None else cfg.text_config.eos_token_id
    special = {"pad": tok.pad_token_id if tok.pad_token_id is not None else eos, "eos": int(eos),
               "vision_start": int(cfg.vision_start_token_id), "vision_end": int(cfg.vision_end_token_id),
               "image_pad": int(cfg.image_token_id)}
    labels: list[int] = []
    if role == "tagger":
        for label in LABELS:
            ids = tok.encode(label, add_special_tokens=False)
            if len(ids) != 1:
                raise ModelConfigError(f"{path}: the grade label {label!r} is {len(ids)} tokens; it must be one")
            labels.append(ids[0])
    pre = path / "preprocessor_config.json"
    min_pixels = DEFAULT_MIN_PIXELS
    if pre.exists():
        min_pixels = int(json.loads(pre.read_text()).get("min_pixels", min_pixels))
    return Source(model, path.name, "hf", special, labels, min_pixels, max_pixels, hf_tokenizer=tok)


def meta_for(src: Source, role: str, version: str) -> ModelMeta:
    cfg = src.model.config
    vc = cfg.vision_config
    window = getattr(vc, "window_size", None)
    return ModelMeta(
        name=src.name,
        role=role,
        arch=cfg.model_type,
        version=version,
        hidden_size=int(cfg.text_config.hidden_size),
        tokenizer=src.tokenizer,
        special=src.special,
        label_token_ids=src.label_token_ids,
        vision=VisionSpec(
            patch_size=int(vc.patch_size),
            temporal_patch_size=int(vc.temporal_patch_size),
            merge_size=int(vc.spatial_merge_size),
            min_pixels=src.min_pixels,
            max_pixels=src.max_pixels,
            in_channels=int(vc.in_channels),
            window_size=int(window) if window else None,
        ),
        contract=GRAPH_CONTRACT,
    )


def sample_inputs(meta: ModelMeta, sizes: list[tuple[int, int]], seed: int, vocab: int = 256,
                  ) -> tuple[dict[str, np.ndarray], list[slice], list[PackedSequence]]:
    """Random images of the given sizes plus a padded text batch that uses them.

    Row i holds image i; the last row has no image and is the shortest.
    """
    rng = np.random.default_rng(seed)
    spec = meta.vision
    images = [patchify_frames(rng.standard_normal((1, 3, h, w)).astype(np.float32), spec) for h, w in sizes]
    vb = build_vision_batch(images, spec)
    sp = meta.special
    seqs = []
    for i in range(len(images) + 1):
        pre = Prefix()
        if i < len(images):
            pre.add_text([sp["vision_start"]])
            pre.add_image(images[i].grid, spec.merge_size, sp["image_pad"])
            pre.add_text([sp["vision_end"]])
        pre.add_text(list(rng.integers(0, vocab, size=5 + 3 * i)))
        suffixes = [list(rng.integers(0, vocab, size=3 + k)) for k in range(3)] if meta.role == "tagger" else []
        if meta.role == "embedder":  # two mICL readouts: after the image part and at the end
            pre.mark_readout()
            pre.add_text(list(rng.integers(0, vocab, size=4)))
            pre.mark_readout()
        seqs.append(PackedSequence(pre, suffixes))
    vision = {"pixel_values": vb.pixel_values, "position_ids": vb.position_ids, "patch_mask": vb.patch_mask}
    return vision, vb.token_slices, seqs


def row_embeds(merged: np.ndarray, slices: list[np.ndarray], rows: int) -> list[np.ndarray]:
    """Image i's tokens for row i, nothing for the rows beyond the images."""
    width = merged.shape[-1]
    merged = merged.reshape(-1, width)
    return [merged[slices[i]] if i < len(slices) else np.zeros((0, width), np.float32) for i in range(rows)]


EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def data_file(path: Path) -> Path:
    """Where a graph's weights live beside it: one file per graph, whatever the model's size."""
    return path.with_name(path.name + ".data")


def _one_data_file(path: Path) -> None:
    """Rewrite an exported graph as ``path`` plus one ``<name>.data`` file: the exporter writes a model over
    2 GB as one loose file per tensor (428 of them for the real tagger), which no one wants to ship."""
    import onnx

    loose = external_files(path)
    model = onnx.load(str(path), load_external_data=True)
    target = data_file(path)
    if target.exists():
        target.unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=target.name, size_threshold=1024)
    for name in loose:
        if name != target.name:
            (path.parent / name).unlink(missing_ok=True)


def export_graph(module: nn.Module, args: tuple, path: Path, inputs: list[str], output: str,
            dynamic: dict[str, dict[int, str]]) -> None:
    import warnings

    # The tracer warns about every shape it freezes (the fixed image size, the masks' Python branches);
    # the parity check after each export is what tells whether the graph is right, so they are noise here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=[output],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)


def export_model(role: str, out_dir: Path, preset: str = "tiny", seed: int = 0, checkpoint: Path | None = None,
                 gate_path: Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 progress: Callable[[str], None] = log.info, dtype: str = "float32") -> ExportResult:
    """Export ``role`` from a checkpoint directory, else from a random-weight preset, and check parity.

    Each graph is written as ``<graph>.onnx`` plus one ``<graph>.onnx.data`` holding its weights, in
    ``dtype`` (``float16``: half the size, what the GPU serves; inputs and outputs in float16 too).

    The embedder's late-fusion gate comes from ``gate_path`` (a ``.pt`` state dict of
    ``LateFusionGate``) when given; otherwise tiny presets get a random gate and real
    models an untrained one that mixes in a fixed visual share.
    """
    if checkpoint is not None:
        progress(f"loading {role} checkpoint {checkpoint}")
        src = checkpoint_source(role, checkpoint, max_pixels)
    else:
        progress(f"building {role} preset {preset!r} with random weights")
        src = preset_source(role, preset, seed)
    model = src.model
    width = int(model.config.text_config.hidden_size)
    vision_graph = VisionGraph(model).eval()
    gate = None
    if role == "embedder":
        if gate_path is not None:
            gate = LateFusionGate(width)
            gate.load_state_dict(torch.load(gate_path, map_location="cpu", weights_only=True))
        elif checkpoint is None and preset == "tiny":
            gate = LateFusionGate.random(width, seed)
        else:
            gate = LateFusionGate.untrained(width)
    text_graph = TextGraph(model, role, src.label_token_ids or None, gate).eval()
    version = f"{src.name}-{weights_digest(*(m for m in (model, gate) if m is not None))}"
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"export dtype {dtype!r}: expected one of {sorted(EXPORT_DTYPES)}")
    float_type = EXPORT_DTYPES[dtype]
    if float_type != torch.float32:
        vision_graph.to(float_type), text_graph.to(float_type)
        version += f"-{dtype}"
    meta = meta_for(src, role, version)
    meta = dataclasses.replace(meta, float_type=dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    if src.hf_tokenizer is not None:
        src.hf_tokenizer.save_pretrained(str(out_dir / "tokenizer"))

    vocab = 256 if src.tokenizer == "bytes" else min(1000, int(model.config.text_config.vocab_size))
    vision_inputs, slices, seqs = sample_inputs(meta, [(56, 84), (112, 112)], seed, vocab)
    v_names = list(vision_inputs)
    t0 = time.perf_counter()
    progress("exporting vision graph")
    export_graph(vision_graph, _torch_args(vision_inputs, v_names, float_type), out_dir / "vision.onnx",
            v_names, "image_embeds",
            {k: {0: "frames", 1: "slots"} for k in v_names} | {"image_embeds": {0: "frames", 1: "tokens"}})
    _one_data_file(out_dir / "vision.onnx")
    with torch.no_grad():
        merged = vision_graph(*_torch_args(vision_inputs, v_names, float_type)).float().numpy()
    text_inputs = build_text_batch(seqs, meta.special["pad"]).as_inputs(row_embeds(merged, slices, len(seqs)), width)
    out_name = "label_logits" if role == "tagger" else "embeddings"
    out_axes = {0: "batch", 1: "readouts"} if role == "tagger" else {0: "batch"}
    progress(f"exported vision graph in {time.perf_counter() - t0:.1f}s; exporting text graph")
    export_graph(text_graph, _torch_args(text_inputs, TEXT_INPUTS, float_type), out_dir / "text.onnx",
            TEXT_INPUTS, out_name,
            {"input_ids": {0: "batch", 1: "seq"}, "attn_segments": {0: "batch", 1: "seq"},
             "position_ids": {0: "batch", 2: "seq"}, "image_embeds": {0: "batch", 1: "image_tokens"},
             "readout_index": {0: "batch", 1: "readouts"}, out_name: out_axes})
    _one_data_file(out_dir / "text.onnx")
    progress(f"exported in {time.perf_counter() - t0:.1f}s; checking parity")
    meta.write(out_dir / "meta.json")
    diffs = check_parity(out_dir, vision_graph, text_graph, meta, seed=seed + 1, vocab=vocab)
    progress(f"parity ok: {diffs}")
    return ExportResult(out_dir, meta, diffs)


def _torch_args(inputs: dict[str, np.ndarray], names: Sequence[str], float_type: torch.dtype) -> tuple:
    """The graph's arguments, its float inputs in the export's float type."""
    return tuple(torch.from_numpy(inputs[k]).to(float_type) if inputs[k].dtype == np.float32
                 else torch.from_numpy(inputs[k]) for k in names)


def _feed(inputs: dict[str, np.ndarray], float_type: torch.dtype) -> dict[str, np.ndarray]:
    """The same inputs for ONNX Runtime."""
    np_type = np.float16 if float_type == torch.float16 else np.float32
    return {k: v.astype(np_type) if v.dtype == np.float32 else v for k, v in inputs.items()}


def check_parity(out_dir: Path, vision_graph: nn.Module, text_graph: nn.Module, meta: ModelMeta,
                 seed: int, tol: float = 1e-4, vocab: int = 256) -> dict[str, float]:
    """ONNX Runtime vs PyTorch on image sizes and padding the export never saw. In float16 both sides round
    to 11 bits, so there the tolerance is relative: 1 % of the largest output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    vs = ort.InferenceSession(str(out_dir / "vision.onnx"), opts, providers=["CPUExecutionProvider"])
    ts = ort.InferenceSession(str(out_dir / "text.onnx"), opts, providers=["CPUExecutionProvider"])
    diffs: dict[str, float] = {}
    float_type = EXPORT_DTYPES[meta.float_type]
    scale = 0.0
    for case, sizes in enumerate([[(28, 28)], [(112, 56), (84, 112), (28, 56)]]):
        v_in, slices, seqs = sample_inputs(meta, sizes, seed + case, vocab)
        onnx_v = vs.run(None, _feed(v_in, float_type))[0].astype(np.float32)
        with torch.no_grad():
            torch_v = vision_graph(*_torch_args(v_in, list(v_in), float_type)).float().numpy()
        t_in = build_text_batch(seqs, meta.special["pad"], bucket=8).as_inputs(
            row_embeds(torch_v, slices, len(seqs)), meta.hidden_size)
        onnx_t = ts.run(None, _feed(t_in, float_type))[0].astype(np.float32)
        with torch.no_grad():
            torch_t = text_graph(*_torch_args(t_in, TEXT_INPUTS, float_type)).float().numpy()
        scale = max(scale, float(np.abs(torch_v).max()), float(np.abs(torch_t).max()))
        unit = meta.vision.merge_size ** 2
        real = v_in["patch_mask"].reshape(len(onnx_v), -1, unit).all(axis=-1)  # padding outputs are never read
        diffs[f"vision[{case}]"] = float(np.abs(onnx_v - torch_v)[real].max())
        diffs[f"text[{case}]"] = float(np.abs(onnx_t - torch_t).max())
    worst = max(diffs.values())
    if float_type != torch.float32:
        tol = max(tol, 0.01 * scale)
    if not np.isfinite(worst) or worst > tol:
        raise ParityError(f"ONNX Runtime differs from PyTorch by {worst:.3g} (> {tol}): {diffs}")
    return diffs
