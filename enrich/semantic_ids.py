"""Semantic IDs by residual quantisation.

``ResidualKMeans`` is the provisional codebook (k-means per level on the
residual of the previous levels); anything with ``version`` and
``quantize(vectors) -> int codes [B, L]`` can replace it (the RQ-VAE).
Artifacts are ``.npz`` files carrying the codebooks and their metadata.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from enrich.errors import ModelConfigError


class Quantizer(Protocol):
    version: str

    def quantize(self, vectors: np.ndarray) -> np.ndarray: ...


def _kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; empty clusters are re-seeded from far points."""
    n = len(x)
    centers = np.empty((k, x.shape[1]), np.float64)
    centers[0] = x[rng.integers(n)]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for i in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centers[i] = x[rng.choice(n, p=probs)]
        d2 = np.minimum(d2, ((x - centers[i]) ** 2).sum(1))
    for _ in range(iters):
        assign = _nearest(x, centers)
        for c in range(k):
            members = x[assign == c]
            if len(members):
                centers[c] = members.mean(0)
            else:
                far = ((x - centers[assign]) ** 2).sum(1).argmax()
                centers[c] = x[far]
    return centers


def _nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    d = (x**2).sum(1, keepdims=True) - 2 * x @ centers.T + (centers**2).sum(1)
    return d.argmin(1)


@dataclass
class ResidualKMeans:
    codebooks: np.ndarray  # [L, K, D]
    version: str

    @classmethod
    def fit(cls, vectors: np.ndarray, levels: int, codes: int, iters: int = 25, seed: int = 0) -> ResidualKMeans:
        x = np.asarray(vectors, np.float64)
        if x.ndim != 2 or len(x) < codes:
            raise ValueError(f"need a [N, D] array with N >= {codes} codes, got shape {x.shape}")
        rng = np.random.default_rng(seed)
        books, residual = [], x.copy()
        for _ in range(levels):
            c = _kmeans(residual, codes, iters, rng)
            residual = residual - c[_nearest(residual, c)]
            books.append(c)
        cb = np.stack(books).astype(np.float32)
        digest = hashlib.sha256(cb.tobytes()).hexdigest()[:12]
        return cls(cb, f"rkm-L{levels}K{codes}-{digest}")

    def quantize(self, vectors: np.ndarray) -> np.ndarray:
        residual = np.asarray(vectors, np.float32).copy()
        out = np.zeros((len(residual), len(self.codebooks)), np.int64)
        for level, book in enumerate(self.codebooks):
            idx = _nearest(residual, book)
            out[:, level] = idx
            residual -= book[idx]
        return out

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        return sum(self.codebooks[level][codes[:, level]] for level in range(codes.shape[1]))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"kind": "residual_kmeans", "version": self.version})
        with open(path, "wb") as f:
            np.savez(f, codebooks=self.codebooks, meta=np.array(meta))

    @classmethod
    def load(cls, path: Path) -> ResidualKMeans:
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                return cls(z["codebooks"], meta["version"])
        except FileNotFoundError:
            raise ModelConfigError(f"codebook {path} not found: fit one with `enrich codebook fit`") from None
        except (KeyError, ValueError, OSError) as exc:
            raise ModelConfigError(f"codebook {path} is unreadable: {exc}") from exc
