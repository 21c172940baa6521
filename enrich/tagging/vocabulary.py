"""The live tag vocabulary and candidate selection.

Tags arrive at run time (``tags.vocab``); each is embedded once with the
embedder's text path, and items pick their top-M candidates by cosine
similarity before the tagger grades them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from enrich.errors import InvalidItem
from enrich.schemas import VocabEntry


def readable_tag(tag: str) -> str:
    """How a faceted tag reads to a text model: ``works-with::audio`` -> ``works with: audio``."""
    if "::" not in tag:
        return tag
    facet, _, value = tag.partition("::")
    return f"{facet.replace('-', ' ')}: {value.replace('-', ' ').replace(':', ' ')}"


@dataclass(frozen=True)
class VocabSnapshot:
    tags: list[str]
    matrix: np.ndarray  # [T, D] unit vectors

    def similarities(self, vectors: np.ndarray) -> np.ndarray:
        """[B, T] cosines between items and the tags' vectors."""
        if not self.tags:
            return np.zeros((len(vectors), 0), np.float32)
        return vectors @ self.matrix.T

    def candidates(self, vectors: np.ndarray, top_m: int, sims: np.ndarray | None = None) -> list[list[str]]:
        """Each item's top-M tags by ``sims`` ([B, T], default: the cosines)."""
        if not self.tags or top_m <= 0:
            return [[] for _ in range(len(vectors))]
        sims = self.similarities(vectors) if sims is None else sims
        m = min(top_m, len(self.tags))
        top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        ranked = np.take_along_axis(top, order, axis=1)
        return [[self.tags[j] for j in row] for row in ranked]


class TagVocabulary:
    """Thread-safe: updated by the vocabulary feed, read by the pipeline thread.

    A tag's vector is its prototype when the entry carries one made by ``embedder`` (this
    worker's embedder version; see ``enrich/tagging/prototypes.py``), else its embedded name."""

    def __init__(self, embed_texts: Callable[[Sequence[str]], np.ndarray], embedder: str = "", dim: int = 0) -> None:
        self._embed = embed_texts
        self.embedder = embedder
        self.dim = dim  # the embedder's width: a prototype of another length is refused (0: not checked)
        self._lock = threading.Lock()
        self._entries: dict[str, VocabEntry] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._pending: set[str] = set()
        self._claimed: set[str] = set()  # pending tags some thread is embedding now (no other thread takes them)
        self._snapshot = VocabSnapshot([], np.zeros((0, 0), np.float32))
        self._dirty = False

    def check(self, entry: VocabEntry) -> None:
        """Raise ``InvalidItem`` for an entry that must never reach the vocabulary."""
        if entry.deleted or not entry.prototype or entry.prototype_embedder != self.embedder:
            return  # a prototype of another embedder is never used, whatever its shape
        if self.dim and len(entry.prototype) != 4 * self.dim:
            raise InvalidItem("bad_prototype", f"prototype of {entry.tag!r} has {len(entry.prototype) // 4} floats; "
                              f"embedder {self.embedder} has {self.dim}")
        v = np.frombuffer(entry.prototype, dtype="<f4")
        if not np.isfinite(v).all() or not float(np.abs(v).max(initial=0.0)) > 0:
            raise InvalidItem("bad_prototype", f"prototype of {entry.tag!r} is not a finite non-zero vector")

    def apply(self, entry: VocabEntry) -> None:
        """Add, change or retire a tag; an entry ``check`` refuses raises and changes nothing."""
        self.check(entry)
        with self._lock:
            if entry.deleted:
                self._entries.pop(entry.tag, None)
                self._vectors.pop(entry.tag, None)
                self._pending.discard(entry.tag)
            else:
                old = self._entries.get(entry.tag)
                self._entries[entry.tag] = entry
                if old is None or (old.description, old.prototype, old.prototype_embedder) != (
                        entry.description, entry.prototype, entry.prototype_embedder):
                    self._pending.add(entry.tag)
            self._dirty = True

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def pending(self) -> int:
        """Tags applied but not yet embedded (items are graded against the others meanwhile)."""
        with self._lock:
            return len(self._pending)

    def embed_pending(self, limit: int | None = None) -> int:
        """Embed up to ``limit`` pending tags (all: None) that no other thread is embedding; returns how many
        got their vector. Threads calling this at once share the pending tags out, each embedded once."""
        with self._lock:
            free = sorted(self._pending - self._claimed)
            claimed = {t: self._entries[t] for t in (free if limit is None else free[:max(0, limit)])}
            self._claimed.update(claimed)
        if not claimed:
            return 0
        try:
            learned = {t: self._prototype(e) for t, e in claimed.items()}
            to_embed = [t for t, v in learned.items() if v is None]
            if to_embed:
                learned.update(zip(to_embed, self._embed([self._text(claimed[t]) for t in to_embed]), strict=True))
        except BaseException:
            with self._lock:
                self._claimed.difference_update(claimed)
            raise
        with self._lock:  # installed and released at once: no other thread may take them in between
            self._claimed.difference_update(claimed)
            done = 0
            for tag, entry in claimed.items():
                # an entry changed or retired while it was embedded stays as apply() left it
                if self._entries.get(tag) is entry:
                    self._vectors[tag] = learned[tag]
                    self._pending.discard(tag)
                    self._dirty = True
                    done += 1
            return done

    def snapshot(self, embed_limit: int | None = None) -> VocabSnapshot:
        """A consistent view of the embedded tags, after embedding up to ``embed_limit`` pending ones
        (None: all of them; the worker's feed embeds the rest in the background)."""
        if embed_limit != 0:
            self.embed_pending(embed_limit)
        with self._lock:
            if self._dirty:
                tags = sorted(self._vectors)
                matrix = np.stack([self._vectors[t] for t in tags]) if tags else np.zeros((0, 0), np.float32)
                self._snapshot = VocabSnapshot(tags, matrix)
                self._dirty = False
            return self._snapshot

    def _prototype(self, e: VocabEntry) -> np.ndarray | None:
        if not e.prototype or not self.embedder or e.prototype_embedder != self.embedder:
            return None
        v = np.frombuffer(e.prototype, dtype="<f4").astype(np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    @staticmethod
    def _text(e: VocabEntry) -> str:
        return f"{readable_tag(e.tag)}: {e.description}" if e.description else readable_tag(e.tag)
