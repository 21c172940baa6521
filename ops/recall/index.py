"""Reference consumers of the two recall feeds: a tag-recall index and a neighbour index.

Both are plain in-memory structures fed one record at a time, so the same code serves a
live consumer, a catch-up read of the topics, and the evaluation.

Re-enrichment: every record carries ``enriched_at``, the time of the enrichment that
produced it. An item's edges and vector are replaced as a whole when a newer enrichment
of it shows up, on either topic, in any order; older records are ignored. An item
re-enriched with no tags left still sends its neighbour record, which is what clears its
old tag edges.

The ANN index is usearch (HNSW): wheels for every platform (hnswlib must compile),
in-place removal and re-insertion by key (re-enrichment), cosine metric, and f16/i8
storage when the catalogue outgrows memory; faiss would need an ID map and offers
nothing more at this scale.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from enrich.schemas import vector_from_bytes


@dataclass(frozen=True)
class TagHit:
    item_id: str
    grade: int
    prob: float
    created_at: int
    score: float  # prob, decayed by age: what orders hits of equal grade


@dataclass(frozen=True)
class NeighborHit:
    item_id: str
    score: float  # cosine similarity, or shared prefix length for the semantic-ID index


class TagIndex:
    """tag -> items, best first: grade, then grade probability decayed by age (freshness)."""

    def __init__(self, half_life_s: float = 7 * 24 * 3600) -> None:
        self.half_life_ms = half_life_s * 1000
        self._lock = threading.Lock()
        self._gen: dict[str, int] = {}
        self._edges: dict[str, dict[str, tuple[int, float, int]]] = defaultdict(dict)  # tag -> item -> edge
        self._item_tags: dict[str, set[str]] = defaultdict(set)

    def _advance(self, item: str, enriched_at: int) -> bool:
        """True when a record of this enrichment may be applied; drops edges of older enrichments."""
        current = self._gen.get(item, -1)
        if enriched_at < current:
            return False
        if enriched_at > current:
            for tag in self._item_tags.pop(item, set()):
                self._edges[tag].pop(item, None)
                if not self._edges[tag]:
                    del self._edges[tag]
            self._gen[item] = enriched_at
        return True

    def apply_edge(self, rec: dict) -> None:
        """A ``recall.tags`` record."""
        item = rec["item_id"]
        with self._lock:
            if self._advance(item, int(rec.get("enriched_at", 0))):
                self._edges[rec["tag"]][item] = (int(rec["grade"]), float(rec["prob"]), int(rec["created_at"]))
                self._item_tags[item].add(rec["tag"])

    def apply_enrichment(self, item: str, enriched_at: int) -> None:
        """Any record of an enrichment (the neighbour record): retires edges of older ones."""
        with self._lock:
            self._advance(item, enriched_at)

    def query(self, tag: str, k: int = 10, now_ms: int | None = None, min_grade: int = 1) -> list[TagHit]:
        with self._lock:
            edges = list(self._edges.get(tag, {}).items())
        now = now_ms if now_ms is not None else max((e[2] for _, e in edges), default=0)
        hits = [TagHit(item, grade, prob, created, prob * math.pow(0.5, max(0, now - created) / self.half_life_ms))
                for item, (grade, prob, created) in edges if grade >= min_grade]
        hits.sort(key=lambda h: (-h.grade, -h.score, h.item_id))
        return hits[:k]

    def matching(self, q: str, n: int = 20) -> list[str]:
        """Tags containing ``q`` (case-insensitive), most items first."""
        q = q.lower()
        with self._lock:
            found = [(len(items), tag) for tag, items in self._edges.items() if q in tag.lower()]
        return [tag for _, tag in sorted(found, key=lambda x: (-x[0], x[1]))[:n]]

    def tags_of(self, item: str) -> set[str]:
        with self._lock:
            return set(self._item_tags.get(item, set()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._gen)


class NeighborIndex:
    """Item vectors in an HNSW index (cosine) plus a semantic-ID prefix index; query by item or vector.

    ``vector_field`` picks which vector of a ``recall.neighbors`` record is indexed: ``vector``
    (content) or ``cf_vector`` (through the CF adapter; records without one are skipped)."""

    def __init__(self, dim: int | None = None, connectivity: int = 16, expansion_search: int = 128,
                 vector_field: str = "vector") -> None:
        self.vector_field = vector_field
        self._dim = dim
        self._conn, self._ef = connectivity, expansion_search
        self._index = None
        self._lock = threading.Lock()
        self._key: dict[str, int] = {}
        self._item: dict[int, str] = {}
        self._gen: dict[str, int] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._sid: dict[str, tuple[int, ...]] = {}
        self._prefix: dict[tuple[int, ...], set[str]] = defaultdict(set)
        self._next = 0

    def _ensure(self, dim: int) -> None:
        from usearch.index import Index

        if self._index is None:
            self._dim = self._dim or dim
            self._index = Index(ndim=self._dim, metric="cos", dtype="f32", connectivity=self._conn,
                                expansion_search=self._ef)
        if dim != self._dim:
            raise ValueError(f"vector of dim {dim} for an index of dim {self._dim}: different embedder versions "
                             "belong in different indexes")

    def apply(self, rec: dict) -> bool:
        """A ``recall.neighbors`` record; False when it has no such vector or an equal or newer
        enrichment is already in."""
        item = rec["item_id"]
        if not rec.get(self.vector_field):
            return False
        vec = vector_from_bytes(rec[self.vector_field]).astype(np.float32)
        sid = tuple(int(c) for c in rec["semantic_id"])
        enriched_at = int(rec.get("enriched_at", 0))
        with self._lock:
            if enriched_at <= self._gen.get(item, -1) and item in self._key:
                return False
            self._ensure(len(vec))
            if item in self._key:
                self._index.remove(self._key[item])
                del self._item[self._key[item]]
                old = self._sid.pop(item)
                for p in range(1, len(old) + 1):
                    self._prefix[old[:p]].discard(item)
            key = self._next
            self._next += 1
            self._index.add(key, vec)
            self._key[item], self._item[key] = key, item
            self._gen[item] = enriched_at
            self._vectors[item] = vec / max(float(np.linalg.norm(vec)), 1e-12)
            self._sid[item] = sid
            for p in range(1, len(sid) + 1):
                self._prefix[sid[:p]].add(item)
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._key)

    def __contains__(self, item: str) -> bool:
        with self._lock:
            return item in self._key

    def vector(self, item: str) -> np.ndarray:
        with self._lock:
            try:
                return self._vectors[item]
            except KeyError:
                raise KeyError(f"item {item!r} is not in the neighbour index") from None

    def by_vector(self, vec: np.ndarray, k: int = 10, exclude: str | None = None) -> list[NeighborHit]:
        vec = np.asarray(vec, np.float32)
        if not 1 <= k <= 1000:
            raise ValueError("k must be between 1 and 1000")
        with self._lock:
            if self._index is None or not len(self._key):
                return []
            if vec.shape != (self._dim,) or not np.isfinite(vec).all():
                raise ValueError(f"the vector must be {self._dim} finite floats, got shape {vec.shape}")
            want = min(len(self._key), k + (1 if exclude else 0))
            found = self._index.search(np.asarray(vec, np.float32), want)
            hits = [NeighborHit(self._item[int(key)], 1.0 - float(dist))
                    for key, dist in zip(found.keys, found.distances, strict=True)]
        return [h for h in hits if h.item_id != exclude][:k]

    def by_item(self, item: str, k: int = 10) -> list[NeighborHit]:
        return self.by_vector(self.vector(item), k, exclude=item)

    def by_semantic_id(self, item: str, k: int = 10) -> list[NeighborHit]:
        """Items sharing the longest semantic-ID prefix with ``item`` (a lookup, no vectors), then the
        shorter prefixes; ties in order of item id, so results are stable."""
        with self._lock:
            try:
                sid = self._sid[item]
            except KeyError:
                raise KeyError(f"item {item!r} is not in the neighbour index") from None
            hits: list[NeighborHit] = []
            seen = {item}
            for p in range(len(sid), 0, -1):
                for other in sorted(self._prefix.get(sid[:p], set()) - seen):
                    hits.append(NeighborHit(other, float(p)))
                    seen.add(other)
                    if len(hits) >= k:
                        return hits
            return hits
