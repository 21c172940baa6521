"""Export the multilingual small preset: the small preset's graph contracts, USE multilingual v3 as the text
tower (``triton_models/multilingual.py``), 512-d.

- embedder: ``vision.onnx`` (EfficientNet-Lite0 + the trained projection, ``pixel_values`` [N,3,224,224] ->
  ``image_embeds`` [N,512]) and ``text.onnx`` (USE + the trained late-fusion gate: ``input_ids``,
  ``attention_mask`` [B,S], ``image_embeds`` [B,512], ``has_image`` [B] -> ``embeddings`` [B,512]);
- tagger: ``vision.onnx`` (one visual token per image, [N,1,512]) and ``text.onnx`` with the packed tagger's
  inputs (-> ``label_logits`` [B,R,3]).

The tokenizer (``tokenizer.json``, from the package's SentencePiece model) goes beside the graphs. Parity
against PyTorch is checked on batches the export never saw, in Chinese and English.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from enrich.models.encoders import PackedRowTokens, packed_inputs
from enrich.models.meta import GRAPH_CONTRACT, ModelMeta
from triton_models.export import ExportResult, export_graph, weights_digest
from triton_models.export_small import (
    PACKED_TEXT_INPUTS,
    USE_EMBEDDER_NAME,
    USE_TAGGER_NAME,
    artifact_digest,
    check_parity,
    ship_cf_adapter,
)
from triton_models.multilingual import (
    BOS,
    EOS,
    IMAGE_SLOT,
    USE_MAX_TOKENS,
    USE_TAGGER_ARCH,
    USE_WIDTH,
    UseFusionText,
    UseTaggerVision,
    UseTextTower,
    load_use_tagger,
    save_use_tokenizer,
    use_tokenizer,
)
from triton_models.small_models import (
    IMAGE_SIZE,
    EfficientNetLite0,
    FusionEmbedderVision,
    load_fusion_head,
)

log = logging.getLogger(__name__)
EMBEDDER_ARCH = "use_effnet_fusion"
_SAMPLES = ["图像编辑器，支持图层和滤镜", "A fast vector graphics editor with layers", "游戏", "",
            "一个命令行工具，用于同步文件和目录，支持增量传输。", "Ein Texteditor für Programmierer",
            "Python 库：解析 XML 文档"]


def _pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


def _embedder_inputs(texts: list[str], seed: int) -> dict[str, np.ndarray]:
    tok = use_tokenizer()
    enc = tok.encode_batch(texts)
    rng = np.random.default_rng(seed)
    return {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "image_embeds": rng.standard_normal((len(texts), USE_WIDTH)).astype(np.float32),
            "has_image": (np.arange(len(texts)) % 2 == 0).astype(np.float32)}


def _tagger_inputs(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Packed rows with 0, 1 or 2 images and unequal candidate counts, in both languages."""
    tok = use_tokenizer()
    tok.no_padding()
    tokens = PackedRowTokens(BOS, EOS, IMAGE_SLOT)
    rng = np.random.default_rng(seed)
    seqs, visual = [], []
    for r in range(rows):
        text = tok.encode(_SAMPLES[(r + seed) % len(_SAMPLES)], add_special_tokens=False).ids
        names = ("图形", "games::arcade", "编程", "xml")[:2 + r % 3]
        tags = [tok.encode(t, add_special_tokens=False).ids for t in names]
        seqs.append(tokens.row(r % 3, text, tags))
        visual.append(rng.standard_normal((r % 3, USE_WIDTH)).astype(np.float32))
    inputs = packed_inputs(seqs, visual, EOS)
    return {k: inputs[k] for k in PACKED_TEXT_INPUTS}


def _export_vision(vision: nn.Module, out_dir: Path, progress: Callable[[str], None]) -> float:
    progress("exporting the EfficientNet-Lite0 image graph")
    export_graph(vision, (torch.from_numpy(_pixels(2, 0)),), out_dir / "vision.onnx", ["pixel_values"], "image_embeds",
                 {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
    return check_parity(out_dir / "vision.onnx", vision, [{"pixel_values": _pixels(3, 1)}], 1e-4)


def export_use(role: str, out_dir: Path, artifact: Path, progress: Callable[[str], None] = log.info) -> ExportResult:
    """Export the multilingual ``role`` from the packages' weights and its trained artifact."""
    save_use_tokenizer(out_dir / "tokenizer")
    net = EfficientNetLite0.pretrained()
    diffs: dict[str, float] = {}
    if role == "embedder":
        head, _ = load_fusion_head(artifact)
        vision: nn.Module = FusionEmbedderVision(net, head).eval()
        text: nn.Module = UseFusionText(UseTextTower.pretrained(), head).eval()
        diffs["vision"] = _export_vision(vision, out_dir, progress)
        progress("exporting the USE embedder text graph")
        sample = _embedder_inputs(_SAMPLES[:3], 2)
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "image_embeds": {0: "batch"}, "has_image": {0: "batch"}, "embeddings": {0: "batch"}}
        export_graph(text, tuple(torch.from_numpy(v) for v in sample.values()), out_dir / "text.onnx", list(sample),
                     "embeddings", axes)
        diffs["text"] = check_parity(out_dir / "text.onnx", text, [_embedder_inputs(_SAMPLES, 3),
                                                             _embedder_inputs(_SAMPLES[4:5], 4)], 1e-4)
        name, arch, max_tokens = USE_EMBEDDER_NAME, EMBEDDER_ARCH, USE_MAX_TOKENS
        special = {"pad": EOS, "eos": EOS, "vision_start": -1, "vision_end": -1, "image_pad": -1}
    elif role == "tagger":
        model, info = load_use_tagger(artifact)
        vision = UseTaggerVision(net, model.head).eval()
        text = model
        diffs["vision"] = _export_vision(vision, out_dir, progress)
        progress("exporting the USE tagger text graph")
        sample = _tagger_inputs(3, 2)
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attn_segments": {0: "batch", 1: "seq"},
                "position_ids": {0: "batch", 2: "seq"}, "token_type_ids": {0: "batch", 1: "seq"},
                "image_embeds": {0: "batch", 1: "image_tokens"}, "readout_index": {0: "batch", 1: "readouts"},
                "label_logits": {0: "batch", 1: "readouts"}}
        export_graph(text, tuple(torch.from_numpy(v) for v in sample.values()), out_dir / "text.onnx",
                     list(PACKED_TEXT_INPUTS), "label_logits", axes)
        diffs["text"] = check_parity(out_dir / "text.onnx", text, [_tagger_inputs(5, 3), _tagger_inputs(1, 4)], 1e-4)
        name, arch, max_tokens = USE_TAGGER_NAME, USE_TAGGER_ARCH, int(info.get("max_tokens", 96))
        special = {"pad": EOS, "eos": EOS, "cls": BOS, "vision_start": -1, "vision_end": -1,
                   "image_pad": IMAGE_SLOT, "visual_tokens": 1}
    else:
        raise ValueError(f"unknown role {role!r}")
    digest = weights_digest(vision, text)
    meta = ModelMeta(name=name, role=role, arch=arch, version=f"{name}-{digest}", hidden_size=USE_WIDTH,
                     tokenizer="hf", special=special, vision=None, contract=GRAPH_CONTRACT, family="encoder",
                     image_size=IMAGE_SIZE, max_tokens=max_tokens, source=artifact_digest(artifact))
    meta.write(out_dir / "meta.json")
    progress(f"parity ok: {diffs}")
    if role == "embedder":
        ship_cf_adapter(meta.version, out_dir, progress)
    return ExportResult(out_dir, meta, diffs)
