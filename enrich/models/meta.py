"""The contract between an exported model and the pipeline (``meta.json``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from enrich.errors import ModelConfigError
from enrich.media.images import VisionSpec

# Bumped whenever the graphs' inputs or outputs change; 2: batch-first text inputs, mICL + late fusion;
# 3: vision a row of patch slots per frame (patch_mask), text masks from attn_segments (no dense bias).
GRAPH_CONTRACT = 3


@dataclass(frozen=True)
class ModelMeta:
    name: str
    role: str  # "embedder" | "tagger"
    arch: str  # "qwen2_vl" | "qwen2_5_vl"
    version: str
    hidden_size: int
    tokenizer: str  # "bytes" | "hf"
    special: dict[str, int]
    vision: VisionSpec | None  # None: the model has no vision graph, or takes fixed-size images (encoders)
    label_token_ids: list[int] = field(default_factory=list)
    contract: int = 1  # files written before the field existed are contract 1
    # "qwen_vl": vision + text graphs of a Qwen2(.5)-VL (the production architectures);
    # "encoder": the real small models (MiniLM text encoder, EfficientNet-Lite0 image tower).
    family: str = "qwen_vl"
    image_size: int = 0  # encoder family: side of the square image the vision graph takes
    max_tokens: int = 0  # encoder family: longest row the model was trained on (rows are truncated to it)
    source: str = ""  # small presets: digest of the trained artifact the export was made from
    float_type: str = "float32"  # the graphs' float inputs and outputs: "float32" or "float16"

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True))

    @classmethod
    def read(cls, path: Path) -> ModelMeta:
        try:
            raw = json.loads(path.read_text())
            raw["vision"] = VisionSpec(**raw["vision"]) if raw.get("vision") else None
            meta = cls(**raw)
        except FileNotFoundError:
            raise ModelConfigError(f"{path} not found: export the model first (enrich models export)") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelConfigError(f"{path} is not a valid model meta file: {exc}") from exc
        if meta.contract != GRAPH_CONTRACT:
            raise ModelConfigError(f"{path.parent} was exported for graph contract {meta.contract}, this version "
                                   f"serves contract {GRAPH_CONTRACT}: export it again (enrich models export)")
        return meta
