"""Quality metrics of the evaluations (pure functions of predictions and gold): micro P/R/F1, recall and
nDCG at k, and the paired bootstrap interval of a difference between two statistics over the same items."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

K = 10


def prf(predicted: Sequence[set[str]], gold: Sequence[set[str]]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 over items."""
    tp = sum(len(p & g) for p, g in zip(predicted, gold, strict=True))
    n_pred, n_gold = sum(len(p) for p in predicted), sum(len(g) for g in gold)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4)}


def paired_difference(a: Callable[[np.ndarray], float], b: Callable[[np.ndarray], float], n: int,
                      rounds: int = 1000, seed: int = 0) -> dict[str, float | list[float]]:
    """``a - b`` of two statistics over the same ``n`` items (each a function of the item indices it is
    computed over) and its 95 % paired bootstrap interval: both resampled with the same items, so the
    interval says how far the difference moves with the draw of items, not how far each score does."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        diffs.append(a(idx) - b(idx))
    whole = np.arange(n)
    lo, hi = np.percentile(diffs, [2.5, 97.5]) if n else (0.0, 0.0)
    return {"difference": round(a(whole) - b(whole), 4), "interval_95": [round(float(lo), 4), round(float(hi), 4)]}


def recalls_at(found: Sequence[Sequence[str]], gold: Sequence[set[str]], k: int = K) -> list[float]:
    """Each query's recall@k: its gold items among its first ``k`` found, over as many as it could hold."""
    return [sum(1.0 for x in f[:k] if x in g) / min(k, len(g)) for f, g in zip(found, gold, strict=True)]


def recall_ndcg(found: Sequence[Sequence[str]], gold: Sequence[set[str]], k: int = K) -> dict[str, float]:
    recalls, ndcgs = recalls_at(found, gold, k), []
    for f, g in zip(found, gold, strict=True):
        hits = [1.0 if x in g else 0.0 for x in f[:k]]
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
        ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(g))))
        ndcgs.append(dcg / ideal)
    return {f"recall@{k}": round(float(np.mean(recalls)), 4), f"ndcg@{k}": round(float(np.mean(ndcgs)), 4)}


def top_tags(sims: np.ndarray, vocab: list[str], n: int) -> list[list[str]]:
    order = np.argsort(-sims, axis=1)[:, :n]
    return [[vocab[j] for j in row] for row in order]
