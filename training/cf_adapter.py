"""Train the CF adapter on co-use pairs (seed 000: itemCF positives, in-batch + hard negatives).

On the debtags data the co-use signal is the package relations (Depends / Recommends /
Suggests / same source): packages installed together are used together, which is what an
item-to-item co-interaction log records on a content platform. Training pairs are relations
between two train-split items; held-out pairs are relations of test-split items (their
partners anywhere), so no evaluated item was seen in training.

Loss: InfoNCE of ``cf(a)`` against ``cf(b)`` with the batch's other positives and, per
anchor, its content-nearest items that are not related (hard negatives) as negatives, plus
``reg * |W|^2`` to keep the adapter close to the content space.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from corpora.debtags import DebtagsItem
from enrich.vectors.cf_adapter import CfAdapter
from triton_models.export_small import CF_ARTIFACT_VERSION, DEFAULT_CF  # noqa: F401 (DEFAULT_CF: the CLI's default)


def _recall_at(queries: np.ndarray, corpus: np.ndarray, gold: list[set[int]], k: int, exclude: list[int]) -> float:
    sims = queries @ corpus.T
    for i, j in enumerate(exclude):
        sims[i, j] = -np.inf
    top = np.argsort(-sims, axis=1)[:, :k]
    return float(np.mean([len(set(row) & g) / min(k, len(g)) for row, g in zip(top, gold, strict=True)]))


def _overlap_at(a: np.ndarray, b: np.ndarray, rows: list[int], k: int) -> float:
    """Content-similarity retention: share of each item's top-k content neighbours still in its CF top-k."""
    out = []
    for i in rows:
        na = set(np.argsort(-(a @ a[i]))[1:k + 1])
        nb = set(np.argsort(-(b @ b[i]))[1:k + 1])
        out.append(len(na & nb) / k)
    return float(np.mean(out))


def train_cf(items: Sequence[DebtagsItem], vectors: np.ndarray, embedder: str, epochs: int = 5, batch: int = 256,
             lr: float = 1e-3, temperature: float = 0.05, hard: int = 8, reg: float = 1e-3, seed: int = 0,
             k: int = 10, progress: bool = True, version: str = CF_ARTIFACT_VERSION) -> CfAdapter:
    """``version``: the artifact's name, which its weights' digest follows."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    index = {it.id: i for i, it in enumerate(items)}
    train_ids = {i for i, it in enumerate(items) if it.split == "train"}
    pairs = np.array(sorted({(index[it.id], index[r]) for it in items for r in it.related
                             if index[it.id] in train_ids and index.get(r) in train_ids}))
    related = [set() for _ in items]
    for it in items:
        related[index[it.id]] = {index[r] for r in it.related if r in index}
    x = torch.from_numpy(vectors.astype(np.float32))
    # hard negatives: content-nearest items that are not related, mined once from the content space
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1)[:, :hard * 4]
    hard_neg = np.zeros((len(items), hard), np.int64)
    for i, row in enumerate(near):
        if sum(j not in related[i] for j in row) < hard:  # an item with many related neighbours: look further
            row = np.argsort(-sims[i])
        hard_neg[i] = [j for j in row if j not in related[i]][:hard]
    w = torch.zeros(x.shape[1], x.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)

    def cf(v: torch.Tensor) -> torch.Tensor:
        return F.normalize(v + v @ w.T, dim=-1)

    for _ in tqdm(range(epochs), desc="training CF adapter", unit="epoch", disable=not progress):
        order = rng.permutation(len(pairs))
        for s in range(0, len(order), batch):
            p = pairs[order[s:s + batch]]
            a, b = cf(x[p[:, 0]]), cf(x[p[:, 1]])
            negs = cf(x[hard_neg[p[:, 0]].reshape(-1)]).reshape(len(p), hard, -1)
            in_batch = a @ b.T / temperature
            hard_logits = torch.einsum("bd,bhd->bh", a, negs) / temperature
            logits = torch.cat([in_batch, hard_logits], dim=1)
            loss = F.cross_entropy(logits, torch.arange(len(p))) + reg * (w ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    weight = w.detach().numpy()
    adapter = CfAdapter(weight, "", {})
    cf_vecs = adapter.apply(vectors)
    queries = {split: [i for i, it in enumerate(items) if it.split == split and related[i]]
               for split in ("val", "test")}

    def recall(split: str, space: np.ndarray) -> float:
        q = queries[split]
        return round(_recall_at(space[q], space, [related[i] for i in q], k, q), 4) if q else 0.0

    test = queries["test"]
    info = {
        "version": version, "embedder": embedder, "train_pairs": int(len(pairs)),
        "held_out_queries": len(test), "validation_queries": len(queries["val"]),
        "epochs": epochs, "lr": lr, "temperature": temperature, "hard_negatives": hard, "reg": reg,
        f"recall@{k}": {"content": recall("test", vectors), "cf_tuned": recall("test", cf_vecs)},
        f"validation_recall@{k}": {"content": recall("val", vectors),
                                   "cf_tuned": recall("val", cf_vecs)},
        f"content_neighbour_retention@{k}": round(_overlap_at(vectors, cf_vecs, test[:500], k), 4) if test else 0.0,
        "mean_cosine_to_content": round(float((vectors[test] * cf_vecs[test]).sum(1).mean()), 4) if test else 0.0,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    digest = hashlib.sha256(weight.astype(np.float16).tobytes()).hexdigest()[:12]
    return CfAdapter(weight, f"{version}-{digest}", info)
