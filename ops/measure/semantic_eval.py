"""How good a semantic-ID codebook is on a given set of embeddings.

Reconstruction, per-level utilisation and perplexity, collisions before the
disambiguating digit, quantisation speed, and neighbour recall: for sampled
query items, the 10 items sharing the longest code prefix with the query
(ties in item order: the IDs alone cannot rank them) against the 10 exact
cosine nearest neighbours. Beside it, the recall of neighbours searched over
the codebook's decoded vectors and of a random pick, for scale.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from enrich.vectors.semantic_ids import SemanticIdCodebook, code_stats, unit


def exact_neighbours(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = unit(x[queries]) @ unit(x).T
    sims[np.arange(len(queries)), queries] = -np.inf
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), 1), 1)


def prefix_neighbours(codes: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Items ranked by the length of the code prefix they share with each query."""
    out = np.empty((len(queries), k), np.int64)
    for row, q in enumerate(queries):
        shared = np.cumprod(codes == codes[q], axis=1).sum(1)
        shared[q] = -1
        out[row] = np.argsort(-shared, kind="stable")[:k]
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def quantise_rate(book: SemanticIdCodebook, x: np.ndarray, batch: int = 256, repeats: int = 3) -> float:
    """Items per second through ``quantize`` in stream-sized batches (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, len(x), batch):
            book.quantize(x[s:s + batch])
        best = min(best, time.perf_counter() - t0)
    return len(x) / best


def evaluate(book: SemanticIdCodebook, x: np.ndarray, queries: int = 1000, k: int = 10,
             seed: int = 0) -> dict[str, Any]:
    x = np.asarray(x, np.float32)
    codes = book.quantize(x)
    decoded = book.reconstruct(codes)
    q = np.random.default_rng(seed).choice(len(x), size=min(queries, len(x)), replace=False)
    truth = exact_neighbours(x, q, k)
    cos = (unit(decoded) * unit(x)).sum(1)
    # A normalised codebook is trained on directions, so its error is measured on unit vectors too.
    target, approx = (unit(x), unit(decoded)) if book.normalise else (x, decoded)
    decoded_nn = exact_neighbours(np.concatenate([decoded, x[q]]), np.arange(len(x), len(x) + len(q)), k + 1)
    decoded_nn = np.array([[j for j in row if j != qi][:k] for row, qi in zip(decoded_nn, q, strict=True)])
    return {
        "codebook": book.version,
        "items": len(x), "dim": int(x.shape[1]), "levels": book.levels, "codes": book.codes,
        "reconstruction_cosine": float(cos.mean()),
        "reconstruction_mse": float(((approx - target) ** 2).sum(1).mean()),
        **code_stats(codes, book.codes),
        f"recall@{k}": {"semantic_id_prefix": recall_at_k(prefix_neighbours(codes, q, k), truth),
                        "decoded_vectors": recall_at_k(decoded_nn, truth),
                        "exact_cosine": 1.0,
                        "random": k / (len(x) - 1)},
        "queries": len(q),
        "quantise_items_per_s": quantise_rate(book, x),
    }


def format_report(r: dict[str, Any]) -> str:
    recall = next(v for key, v in r.items() if key.startswith("recall@"))
    k = next(key for key in r if key.startswith("recall@")).split("@")[1]
    lines = [
        f"codebook {r['codebook']} on {r['items']} items (dim {r['dim']}, L={r['levels']}, K={r['codes']})",
        f"  reconstruction cosine {r['reconstruction_cosine']:.4f}   mse {r['reconstruction_mse']:.4f}",
        "  utilisation per level " + " ".join(f"{u:.1%}" for u in r["utilisation"]),
        "  perplexity per level  " + " ".join(f"{p:.1f}" for p in r["perplexity"]),
        f"  distinct IDs {r['distinct_ids']}   collision rate before the digit {r['collision_rate']:.2%}"
        f"   max items per ID {r['max_items_per_id']}",
        f"  recall@{k} vs exact cosine ({r['queries']} queries): semantic-ID prefix "
        f"{recall['semantic_id_prefix']:.3f}   decoded vectors {recall['decoded_vectors']:.3f}"
        f"   exact {recall['exact_cosine']:.3f}   random {recall['random']:.4f}",
        f"  quantisation {r['quantise_items_per_s']:,.0f} items/s (numpy, batches of 256)",
    ]
    return "\n".join(lines)
