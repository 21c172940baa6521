"""Semantic IDs: the serving side of the RQ-VAE codebook, numpy only.

An artifact (``.npz``) holds the encoder MLP, L residual codebooks of K codes
and the decoder, trained by ``training.rqvae`` (PyTorch, offline). Quantising is
encoder -> L levels of nearest-code-on-the-residual, vectorised over the
batch; it needs no torch, so workers stay light. The artifact's ``version``
(a digest of every array) is stamped on every output.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from enrich import artifacts
from enrich.errors import ModelConfigError

Layer = tuple[np.ndarray, np.ndarray]  # weight [out, in], bias [out]


class Quantizer(Protocol):
    version: str

    def check_embedder(self, version: str) -> None: ...  # refuses codes fitted on another embedder

    def quantize(self, vectors: np.ndarray) -> np.ndarray: ...


def nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest center (squared Euclidean) for each row of ``x``."""
    d = (x * x).sum(1, keepdims=True) - 2 * x @ centers.T + (centers * centers).sum(1)
    return d.argmin(1)


def _mlp(x: np.ndarray, layers: list[Layer]) -> np.ndarray:
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            np.maximum(x, 0, out=x)
    return x


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class SemanticIdCodebook:
    encoder: list[Layer]
    codebooks: np.ndarray  # [L, K, latent]
    decoder: list[Layer]
    normalise: bool
    meta: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    @property
    def embedder(self) -> str:
        """The embedder version whose vectors this codebook was fitted on; codes of another's mean nothing."""
        return str(self.meta.get("embedder", ""))

    def check_embedder(self, version: str) -> None:
        if self.embedder != version:
            fitted = f"fitted on embedder {self.embedder}" if self.embedder else "not bound to any embedder"
            raise ModelConfigError(f"codebook {self.version} is {fitted}, but the worker runs embedder {version}: "
                                   "its semantic IDs would mean nothing; fit one on this embedder's vectors with "
                                   "`enrich codebook fit` (it binds the codebook to the exported embedder)")

    def __post_init__(self) -> None:
        if not self.version:
            self.version = f"rqvae-L{self.levels}K{self.codes}-{self.digest()}"

    @property
    def levels(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def codes(self) -> int:
        return int(self.codebooks.shape[1])

    @property
    def dim(self) -> int:
        return int(self.encoder[0][0].shape[1])

    def digest(self) -> str:
        h = hashlib.sha256()
        for w, b in [*self.encoder, *self.decoder]:
            h.update(w.tobytes())
            h.update(b.tobytes())
        h.update(self.codebooks.tobytes())
        h.update(b"n" if self.normalise else b"r")
        return h.hexdigest()[:12]

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected [N, {self.dim}] vectors, got shape {x.shape}")
        if self.normalise:
            x = unit(x)
        z = _mlp(x, self.encoder)
        return unit(z) if self.normalise else z

    def quantize_latent(self, z: np.ndarray) -> np.ndarray:
        residual = np.array(z, np.float32)
        out = np.empty((len(residual), self.levels), np.int64)
        for level, book in enumerate(self.codebooks):
            idx = nearest(residual, book)
            out[:, level] = idx
            residual -= book[idx]
        return out

    def quantize(self, vectors: np.ndarray) -> np.ndarray:
        """Code tuples ``[N, L]`` for ``[N, dim]`` embeddings."""
        return self.quantize_latent(self.encode(vectors))

    def latent_of(self, codes: np.ndarray) -> np.ndarray:
        return sum(self.codebooks[level][codes[:, level]] for level in range(codes.shape[1]))

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Decoded embeddings of code tuples (what the IDs still know about the content)."""
        return _mlp(self.latent_of(codes).astype(np.float32), self.decoder)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"codebooks": self.codebooks}
        for name, layers in (("enc", self.encoder), ("dec", self.decoder)):
            for i, (w, b) in enumerate(layers):
                arrays[f"{name}{i}_w"], arrays[f"{name}{i}_b"] = w, b
        meta = self.meta | {"kind": "rqvae", "version": self.version, "normalise": self.normalise,
                            "levels": self.levels, "codes": self.codes, "dim": self.dim,
                            "latent_dim": int(self.codebooks.shape[2]),
                            "encoder_layers": len(self.encoder), "decoder_layers": len(self.decoder)}
        artifacts.write(path, meta, **arrays)

    @classmethod
    def load(cls, path: Path) -> SemanticIdCodebook:
        with artifacts.reading(path, "codebook", "enrich codebook fit") as z:
            meta = artifacts.info_of(z) if "info" in z else json.loads(str(z["meta"]))  # "meta": older codebooks
            if meta.get("kind") != "rqvae":
                raise ModelConfigError(f"codebook {path} is a {meta.get('kind')!r} artifact, not an RQ-VAE: "
                                       "train one with `enrich codebook fit`")
            enc = [(z[f"enc{i}_w"], z[f"enc{i}_b"]) for i in range(meta["encoder_layers"])]
            dec = [(z[f"dec{i}_w"], z[f"dec{i}_b"]) for i in range(meta["decoder_layers"])]
            book = cls(enc, z["codebooks"], dec, bool(meta["normalise"]), meta, meta["version"])
        if book.digest() != book.version.rsplit("-", 1)[-1]:
            raise ModelConfigError(f"codebook {path} does not match its version {book.version} (corrupt or edited)")
        return book


def code_stats(codes: np.ndarray, k: int) -> dict[str, Any]:
    """Per-level utilisation (share of the K codes used) and perplexity (exp of the usage entropy;
    K when all codes are used equally), and the collision rate before the disambiguating digit:
    the share of items whose full code tuple is also another item's."""
    n, levels = codes.shape
    util, perplexity = [], []
    for level in range(levels):
        counts = np.bincount(codes[:, level], minlength=k).astype(np.float64)
        util.append(float((counts > 0).mean()))
        p = counts[counts > 0] / n
        perplexity.append(float(np.exp(-(p * np.log(p)).sum())))
    tuples = Counter(map(tuple, codes.tolist()))
    colliding = sum(c for c in tuples.values() if c > 1)
    return {"utilisation": util, "perplexity": perplexity, "distinct_ids": len(tuples),
            "collision_rate": colliding / n, "max_items_per_id": max(tuples.values())}
