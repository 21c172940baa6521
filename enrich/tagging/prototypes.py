"""Tag prototypes: a tag's candidate vector learned from items already carrying it.

Candidates are the vocabulary tags nearest to an item's vector. A tag's name alone ("works
with: audio") lands far from the items that carry it; the mean vector of those items (the
tag's prototype, a nearest-centroid classifier) lands among them. On the debtags test split
the right tag is among the 8 candidates for 66% of gold tags with prototypes against 41% with
names, so the tagger gets to grade far more of the right tags.

Prototypes ride on ``tags.vocab`` entries (``prototype``, ``prototype_embedder``), so they reach
every worker the way tags do. A prototype is only meaningful in the vector space of the
embedder that made it: a worker uses it when the versions match and falls back to embedding
the tag's name otherwise, which is also what a new tag without labelled items gets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enrich import artifacts


@dataclass(frozen=True)
class TagPrototypes:
    tags: list[str]
    vectors: np.ndarray  # [T, D], unit rows
    embedder: str  # the embedder version whose space they live in
    info: dict

    @classmethod
    def compute(cls, item_tags: Sequence[Sequence[str]], vectors: np.ndarray, embedder: str,
                min_items: int = 1) -> TagPrototypes:
        """The normalised mean vector of the items carrying each tag (tags with ``min_items`` or more)."""
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for tags, v in zip(item_tags, vectors, strict=True):
            for t in tags:
                sums[t] = sums.get(t, 0.0) + v
                counts[t] = counts.get(t, 0) + 1
        tags = sorted(t for t in sums if counts[t] >= min_items)
        if not tags:
            raise ValueError("no tag has enough labelled items for a prototype")
        mat = np.stack([sums[t] for t in tags]).astype(np.float32)
        mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        info = {"items": len(vectors), "tags": len(tags), "min_items": min_items,
                "median_items_per_tag": int(np.median([counts[t] for t in tags]))}
        return cls(tags, mat, embedder, info)

    @property
    def version(self) -> str:
        digest = hashlib.sha256(self.vectors.astype(np.float16).tobytes() + "\n".join(self.tags).encode())
        return f"prototypes-{digest.hexdigest()[:12]}"

    def vector_bytes(self) -> dict[str, bytes]:
        return {t: self.vectors[i].astype(np.float32).tobytes() for i, t in enumerate(self.tags)}

    def save(self, path: Path) -> None:
        artifacts.write(path, self.info, vectors=self.vectors.astype(np.float16), tags=np.array(self.tags),
                        embedder=self.embedder)

    @classmethod
    def load(cls, path: Path) -> TagPrototypes:
        with artifacts.reading(path, "tag prototypes", "enrich vocab prototypes") as z:
            vecs = z["vectors"].astype(np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            return cls([str(t) for t in z["tags"]], vecs, str(z["embedder"]), artifacts.info_of(z))
