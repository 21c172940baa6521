"""What the pipeline asks of an embedder and a tagger, whichever family drives them (the Qwen-VL graphs in
``enrich.models.base`` or the small encoders in ``enrich.models.encoders``), and what both families share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from enrich.models.inference import InferenceBackend
from enrich.models.meta import ModelMeta
from enrich.preprocess import PreparedItem


@dataclass(frozen=True)
class TagScores:
    """Per candidate: probabilities of grades 0, 1, 2."""

    tags: list[str]
    probs: np.ndarray  # [M, 3]


class ModelClient(Protocol):
    meta: ModelMeta
    backend: InferenceBackend

    @property
    def version(self) -> str: ...

    @property
    def image_pixels(self) -> int:
        """The most pixels of one image the model can use (0: it takes no images)."""
        ...

    @property
    def graphs(self) -> list[str]:
        """The served models this one calls."""
        ...


class EmbedderModel(ModelClient, Protocol):
    def embed(self, items: Sequence[PreparedItem]) -> np.ndarray:
        """[N, H] unit vectors of the items."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[N, H] unit vectors of texts alone, in the items' space (the tag vocabulary's)."""
        ...


class TaggerModel(ModelClient, Protocol):
    def score(self, items: Sequence[PreparedItem], candidates: Sequence[Sequence[str]]) -> list[TagScores]:
        """Each item's candidates graded 2/1/0."""
        ...


def chunks(n: int, size: int) -> list[slice]:
    """``n`` items as model calls of at most ``size``."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def softmax_grades(logits: np.ndarray) -> np.ndarray:
    """[M, 3] logits -> grade probabilities (float32)."""
    if not len(logits):
        return np.zeros((0, 3), np.float32)
    lg = logits.astype(np.float64)
    p = np.exp(lg - lg.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)
