"""Export the real small presets to ONNX with the same layout as the Qwen exports.

``small`` (both roles):

- embedder: ``vision.onnx`` (EfficientNet-Lite0 + trained projection: ``pixel_values``
  [N,3,224,224] -> ``image_embeds`` [N,384]) and ``text.onnx`` (MiniLM + trained late-fusion
  gate: ``input_ids``, ``attention_mask`` [B,S], ``image_embeds`` [B,384] (the item's mean image
  vector), ``has_image`` [B] -> ``embeddings`` [B,384]);
- tagger, packed (the default, ``packed_tagger.py``): ``vision.onnx`` (EfficientNet-Lite0 + visual
  projection: ``pixel_values`` [N,3,224,224] -> ``image_embeds`` [N,9,384], the image's visual tokens) and
  ``text.onnx`` (MiniLM over packed rows: ``input_ids``, ``attn_segments`` [B,S], ``position_ids`` [B,3,S],
  ``token_type_ids`` [B,S], ``image_embeds`` [B,T,384], ``readout_index`` [B,R] -> ``label_logits``
  [B,R,3]);
- tagger, pairwise (the text cross-encoder it replaced, kept as the baseline): ``text.onnx`` only
  (``input_ids``, ``attention_mask``, ``token_type_ids`` [N,S] -> ``label_logits`` [N,3]).

The MiniLM tokenizer is saved beside the graphs; parity against PyTorch is checked on
padded batches the export never saw.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from enrich.errors import ModelConfigError
from enrich.models.meta import GRAPH_CONTRACT, ModelMeta
from triton_models.export import ExportResult, ParityError, export_graph, weights_digest
from triton_models.packed_tagger import (
    VISUAL_TOKENS,
    PackedTaggerVision,
    is_packed_artifact,
    load_packed_tagger,
)
from triton_models.small_models import (
    ARTIFACTS,
    IMAGE_SIZE,
    TEXT_WIDTH,
    EfficientNetLite0,
    FusionEmbedderText,
    FusionEmbedderVision,
    load_fusion_head,
    load_minilm,
    load_tagger,
    minilm_tokenizer,
)

log = logging.getLogger(__name__)

SMALL_PRESET = "small"
EMBEDDER_NAME = "minilm-effnet-fusion"
TAGGER_NAME = "minilm-cross-encoder"
PACKED_TAGGER_NAME = "minilm-effnet-packed-tagger"
EMOJI_FUSION = ARTIFACTS / "fusion-effnet-minilm-emoji-v1.pt"  # the image projection, trained on emoji
DEFAULT_FUSION = ARTIFACTS / "fusion-effnet-minilm-apps-v3.pt"  # its gate retrained on the AppStream kinds, calibrated
PAIRWISE_TAGGER = ARTIFACTS / "tagger-minilm-debtags-v2.pt"  # text only, one row per (item, tag)
DEFAULT_TAGGER = ARTIFACTS / "tagger-packed-visual-v3.pt"  # from v2, with image-only emoji added
DEFAULT_PROTOTYPES = ARTIFACTS / "tag-prototypes-debtags-v1.npz"
DEFAULT_TAG_PRIOR = ARTIFACTS / "tag-prior-debtags-v3.npz"  # for the packed visual tagger, with the open head
PAIRWISE_TAG_PRIOR = ARTIFACTS / "tag-prior-debtags-v1.npz"  # for the pairwise text tagger
CF_ARTIFACT_VERSION = "cf-adapter-debtags-v1"
DEFAULT_CF = ARTIFACTS / f"{CF_ARTIFACT_VERSION}.npz"
EMBEDDER_MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on (and truncates to) 256 word pieces

MULTILINGUAL_PRESET = "multilingual"
USE_EMBEDDER_NAME = "use-effnet-fusion"
USE_TAGGER_NAME = "use-effnet-tagger"
USE_EMOJI_FUSION = ARTIFACTS / "fusion-effnet-use-emoji-v1.pt"
USE_FUSION = ARTIFACTS / "fusion-effnet-use-apps-v1.pt"
USE_TAGGER = ARTIFACTS / "tagger-use-debtags-zh-v1.pt"


@dataclass(frozen=True)
class SmallPreset:
    """A preset of real small models: a text tower, EfficientNet-Lite0, and the artifacts trained for them."""

    name: str
    tower: str  # "minilm" | "use" (``small_models.TEXT_TOWERS``)
    languages: str  # what it reads, for the docs and the CLI
    embedder_name: str
    fusion: Path  # the embedder's image projection and gate
    taggers: dict[str, tuple[str, Path]]  # ENRICH_SMALL_TAGGER -> (model name, artifact)
    prototypes: Path
    tag_priors: tuple[Path, ...]
    cf: Path

    def tagger(self, small_tagger: str) -> tuple[str, Path]:
        if small_tagger not in self.taggers:
            raise ModelConfigError(f"the {self.name} preset has no {small_tagger!r} tagger (it has "
                                   f"{', '.join(self.taggers)}): set ENRICH_SMALL_TAGGER=packed")
        return self.taggers[small_tagger]


SMALL_PRESETS = {
    SMALL_PRESET: SmallPreset(
        SMALL_PRESET, "minilm", "English", EMBEDDER_NAME, DEFAULT_FUSION,
        {"packed": (PACKED_TAGGER_NAME, DEFAULT_TAGGER), "pairwise": (TAGGER_NAME, PAIRWISE_TAGGER)},
        DEFAULT_PROTOTYPES, (DEFAULT_TAG_PRIOR, PAIRWISE_TAG_PRIOR), DEFAULT_CF),
    MULTILINGUAL_PRESET: SmallPreset(
        MULTILINGUAL_PRESET, "use", "the 16 languages of USE multilingual v3, Chinese (Simplified and Traditional) "
        "and English among them", USE_EMBEDDER_NAME, USE_FUSION, {"packed": (USE_TAGGER_NAME, USE_TAGGER)},
        ARTIFACTS / "tag-prototypes-use-v1.npz", (ARTIFACTS / "tag-prior-use-v1.npz",),
        ARTIFACTS / "cf-adapter-use-v1.npz"),
}


def small_preset(name: str) -> SmallPreset:
    """The named small preset; a random-weight preset's tools (eval, builds) use the English small one."""
    return SMALL_PRESETS.get(name, SMALL_PRESETS[SMALL_PRESET])


def _text_inputs(role: str, rows: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 20000, size=(rows, seq)).astype(np.int64)
    mask = np.ones((rows, seq), np.int64)
    for r in range(rows):  # each row shorter than the last: exercise padding
        mask[r, seq - r:] = 0
        ids[r, seq - r:] = 0
    if role == "tagger":
        types = np.zeros((rows, seq), np.int64)
        types[:, seq // 2:] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types * mask}
    v = rng.standard_normal((rows, TEXT_WIDTH)).astype(np.float32)
    has = (np.arange(rows) % 2 == 0).astype(np.float32)
    return {"input_ids": ids, "attention_mask": mask, "image_embeds": v, "has_image": has}


def check_parity(path: Path, module: nn.Module, cases: list[dict[str, np.ndarray]], tol: float) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for inputs in cases:
        with torch.no_grad():
            ref = module(*[torch.from_numpy(v) for v in inputs.values()]).numpy()
        got = sess.run(None, inputs)[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    if not np.isfinite(worst) or worst > tol:
        raise ParityError(f"{path.name}: ONNX Runtime differs from PyTorch by {worst:.3g} (> {tol})")
    return worst


def default_artifact(role: str, small_tagger: str = "packed", preset: str = SMALL_PRESET) -> Path:
    p = SMALL_PRESETS[preset]
    return p.fusion if role == "embedder" else p.tagger(small_tagger)[1]


def model_name(role: str, small_tagger: str = "packed", preset: str = SMALL_PRESET) -> str:
    p = SMALL_PRESETS[preset]
    return p.embedder_name if role == "embedder" else p.tagger(small_tagger)[0]


def artifact_digest(path: Path) -> str:
    """What an export records of the artifact it was made from, so a state dir exported from an older
    shipped artifact is noticed and exported again."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def export_small(role: str, out_dir: Path, artifact: Path | None = None,
                 progress: Callable[[str], None] = log.info, preset: str = SMALL_PRESET) -> ExportResult:
    """Export the small ``role`` of ``preset`` from the package weights and its trained artifact."""
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = artifact if artifact is not None else default_artifact(role, preset=preset)
    for stale in ("vision.onnx", "text.onnx"):
        (out_dir / stale).unlink(missing_ok=True)
    if SMALL_PRESETS[preset].tower == "use":
        from triton_models.export_multilingual import export_use

        return export_use(role, out_dir, artifact, progress)
    minilm_tokenizer().save_pretrained(str(out_dir / "tokenizer"))
    diffs: dict[str, float] = {}
    max_tokens = EMBEDDER_MAX_TOKENS
    if role == "embedder":
        head, _ = load_fusion_head(artifact)
        vision = FusionEmbedderVision(EfficientNetLite0.pretrained(), head).eval()
        text: nn.Module = FusionEmbedderText(load_minilm(), head).eval()
        name, arch, out_name = EMBEDDER_NAME, "minilm_effnet_fusion", "embeddings"
        progress("exporting the EfficientNet-Lite0 image graph")
        pixels = np.random.default_rng(0).uniform(-1, 1, (2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
        export_graph(vision, (torch.from_numpy(pixels),), out_dir / "vision.onnx", ["pixel_values"], "image_embeds",
                # fixed-size images, so unlike the Qwen vision graphs this one is batch-first: Triton may batch it
                {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
        other = np.random.default_rng(1).uniform(-1, 1, (3, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
        diffs["vision"] = check_parity(out_dir / "vision.onnx", vision, [{"pixel_values": other}], 1e-4)
        digest = weights_digest(vision, text)
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "image_embeds": {0: "batch"}, "has_image": {0: "batch"}, out_name: {0: "batch"}}
    elif role == "tagger" and is_packed_artifact(artifact):
        return _export_packed_tagger(artifact, out_dir, progress)
    elif role == "tagger":
        model, info = load_tagger(artifact)
        # Rows as long as in training: longer ones would be text the head never learned from.
        max_tokens = int(info.get("max_tokens", max_tokens))
        text = model.merge_lora().eval()
        name, arch, out_name = TAGGER_NAME, "minilm_cross_encoder", "label_logits"
        digest = weights_digest(text)
        axes = {k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask", "token_type_ids")}
        axes[out_name] = {0: "batch"}
    else:
        raise ValueError(f"unknown role {role!r}")
    progress(f"exporting the MiniLM {role} text graph")
    sample = _text_inputs(role, 3, 12, seed=2)
    export_graph(text, tuple(torch.from_numpy(v) for v in sample.values()), out_dir / "text.onnx", list(sample),
            out_name, axes)
    diffs["text"] = check_parity(out_dir / "text.onnx", text, [_text_inputs(role, 5, 23, seed=3),
                                                         _text_inputs(role, 1, 7, seed=4)], 1e-4)
    tok = minilm_tokenizer()
    meta = ModelMeta(name=name, role=role, arch=arch, version=f"{name}-{digest}", hidden_size=TEXT_WIDTH,
                     tokenizer="hf", special={"pad": int(tok.pad_token_id), "eos": int(tok.sep_token_id),
                                              "vision_start": -1, "vision_end": -1, "image_pad": -1},
                     vision=None, contract=GRAPH_CONTRACT, family="encoder",
                     image_size=IMAGE_SIZE if role == "embedder" else 0, max_tokens=max_tokens,
                     source=artifact_digest(artifact))
    meta.write(out_dir / "meta.json")
    progress(f"parity ok: {diffs}")
    if role == "embedder":
        ship_cf_adapter(meta.version, out_dir, progress)
    return ExportResult(out_dir, meta, diffs)


def _packed_sample(tok, rows: int, seed: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Packed rows with and without visual tokens, candidates of unequal counts and lengths."""
    from enrich.models.encoders import IMAGE_TOKEN, PackedRowTokens, packed_inputs

    rng = np.random.default_rng(seed)
    tokens = PackedRowTokens(tok.cls_token_id, tok.sep_token_id, tok.convert_tokens_to_ids(IMAGE_TOKEN))
    seqs, visual = [], []
    for r in range(rows):
        n_visual = VISUAL_TOKENS * (r % 3)  # 0, 1 or 2 images
        text = rng.integers(1000, 20000, size=5 + 3 * r).tolist()
        tags = [rng.integers(1000, 20000, size=1 + (j % 4)).tolist() for j in range(2 + r)]
        seqs.append(tokens.row(n_visual, text, tags))
        visual.append(rng.standard_normal((n_visual, TEXT_WIDTH)).astype(np.float32))
    inputs = packed_inputs(seqs, visual, int(tok.pad_token_id))
    return {k: inputs[k] for k in PACKED_TEXT_INPUTS}


PACKED_TEXT_INPUTS = ("input_ids", "attn_segments", "position_ids", "token_type_ids", "image_embeds", "readout_index")


def _export_packed_tagger(artifact: Path, out_dir: Path, progress: Callable[[str], None]) -> ExportResult:
    from enrich.models.encoders import PACKED_TAGGER_ARCH

    model, info = load_packed_tagger(artifact)
    text = model.merge_lora().eval()
    vision = PackedTaggerVision(EfficientNetLite0.pretrained(), model.visual).eval()
    tok = minilm_tokenizer()
    diffs: dict[str, float] = {}
    progress("exporting the packed tagger's visual-token graph")
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    export_graph(vision, (torch.from_numpy(pixels),), out_dir / "vision.onnx", ["pixel_values"], "image_embeds",
            {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
    other = np.random.default_rng(1).uniform(-1, 1, (3, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    diffs["vision"] = check_parity(out_dir / "vision.onnx", vision, [{"pixel_values": other}], 1e-4)
    progress("exporting the packed tagger's MiniLM text graph")
    sample = _packed_sample(tok, 3, seed=2)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attn_segments": {0: "batch", 1: "seq"},
            "position_ids": {0: "batch", 2: "seq"}, "token_type_ids": {0: "batch", 1: "seq"},
            "image_embeds": {0: "batch", 1: "image_tokens"}, "readout_index": {0: "batch", 1: "readouts"},
            "label_logits": {0: "batch", 1: "readouts"}}
    export_graph(text, tuple(torch.from_numpy(v) for v in sample.values()), out_dir / "text.onnx",
            list(PACKED_TEXT_INPUTS), "label_logits", axes)
    diffs["text"] = check_parity(out_dir / "text.onnx", text, [_packed_sample(tok, 5, seed=3),
                                                         _packed_sample(tok, 1, seed=4)], 1e-4)
    digest = weights_digest(vision, text)
    meta = ModelMeta(name=PACKED_TAGGER_NAME, role="tagger", arch=PACKED_TAGGER_ARCH,
                     version=f"{PACKED_TAGGER_NAME}-{digest}", hidden_size=TEXT_WIDTH, tokenizer="hf",
                     special={"pad": int(tok.pad_token_id), "eos": int(tok.sep_token_id),
                              "cls": int(tok.cls_token_id), "vision_start": -1, "vision_end": -1,
                              "image_pad": int(model.image_token_id), "visual_tokens": VISUAL_TOKENS},
                     vision=None, contract=GRAPH_CONTRACT, family="encoder", image_size=IMAGE_SIZE,
                     max_tokens=int(info.get("max_tokens", 96)), source=artifact_digest(artifact))
    meta.write(out_dir / "meta.json")
    progress(f"parity ok: {diffs}")
    return ExportResult(out_dir, meta, diffs)


def shipped_tag_priors() -> list[Path]:
    return [p for preset in SMALL_PRESETS.values() for p in preset.tag_priors if p.exists()]


def ship_tag_prior(models_path: Path, progress: Callable[[str], None]) -> None:
    """The shipped tag prior built with both exported models goes beside the tagger: its exemplars live
    in the embedder's space and its head reads the tagger's grades. None fits: none is shipped."""
    from enrich.models.meta import ModelMeta
    from enrich.tagging.prior import TAG_PRIOR_FILE, TagPrior

    target = models_path / "tagger" / TAG_PRIOR_FILE
    versions = {role: ModelMeta.read(models_path / role / "meta.json").version for role in ("embedder", "tagger")}
    same_tagger = []
    for path in shipped_tag_priors():
        prior = TagPrior.load(path)
        if (prior.embedder, prior.tagger) == (versions["embedder"], versions["tagger"]):
            if not target.exists() or target.read_bytes() != path.read_bytes():
                shutil.copyfile(path, target)
                progress(f"tag prior {prior.version} -> {target}")
            return
        if prior.tagger == versions["tagger"]:
            same_tagger.append(f"{prior.version} (built for {prior.embedder} + {prior.tagger})")
    if target.exists() or same_tagger:
        progress(f"not shipping {', '.join(same_tagger) or 'a tag prior'}: none was built for "
                 f"{versions['embedder']} + {versions['tagger']}")
    target.unlink(missing_ok=True)


def ship_cf_adapter(embedder_version: str, out_dir: Path, progress: Callable[[str], None]) -> None:
    """The shipped CF adapter goes beside the embedder it was trained on (and so into bundles);
    after any other embedder it would be meaningless, so it is left out."""
    from enrich.vectors.cf_adapter import CF_ADAPTER_FILE, CfAdapter

    target = out_dir / CF_ADAPTER_FILE
    target.unlink(missing_ok=True)
    others = []
    for path in [p.cf for p in SMALL_PRESETS.values() if p.cf.exists()]:
        adapter = CfAdapter.load(path)
        if adapter.embedder == embedder_version:
            shutil.copyfile(path, target)
            progress(f"CF adapter {adapter.version} -> {target}")
            return
        others.append(f"{adapter.version} (trained on {adapter.embedder})")
    if others:
        progress(f"not shipping {', '.join(others)}: this embedder is {embedder_version}")
