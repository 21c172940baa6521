"""Collaborative fine-tuning of item vectors: a residual linear adapter over the content embedding.

``cf(x) = normalise(x + W x)``. Trained offline (``training/cf_adapter.py``) with InfoNCE on
co-use pairs, so neighbours reflect what is used together while ``W`` starts at zero and stays
small, which keeps content similarity. Served with numpy in the worker as an extra output
vector; the pure content vector is published as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enrich import artifacts
from enrich.errors import ModelConfigError

CF_ADAPTER_FILE = "cf_adapter.npz"  # beside the embedder's graphs in a model directory


@dataclass(frozen=True)
class CfAdapter:
    weight: np.ndarray  # [D, D]
    version: str
    info: dict

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def embedder(self) -> str:
        """The embedder version whose vectors the adapter was trained on."""
        return str(self.info.get("embedder", ""))

    def check_embedder(self, version: str, dim: int) -> None:
        """An adapter maps one embedder's space; over another's its vectors would look fine and mean nothing."""
        if dim != self.dim or version != self.embedder:
            raise ModelConfigError(
                f"CF adapter {self.version} was trained on {self.embedder or 'an unknown embedder'} "
                f"({self.dim}-d), the worker serves {version} ({dim}-d): retrain it with "
                "`enrich models train-cf` after an embedder change, or unset ENRICH_CF_ADAPTER")

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        out = vectors + vectors @ self.weight.T
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def save(self, path: Path) -> None:
        artifacts.write(path, self.info, weight=self.weight.astype(np.float16), version=self.version)

    @classmethod
    def load(cls, path: Path) -> CfAdapter:
        with artifacts.reading(path, "CF adapter", "enrich models train-cf") as z:
            return cls(z["weight"].astype(np.float32), str(z["version"]), artifacts.info_of(z))
