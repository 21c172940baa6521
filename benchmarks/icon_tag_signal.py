"""How much of a package's debtags the shipped image tower can read from its 64 px AppStream icon.

The bound on tagging an icon alone, whatever sits on top of the tower: models fitted on the train apps'
icons (debtags only, nothing of the stream), scored on the validation and test apps, each predicting 3
tags, beside the train apps' 3 most popular tags:

- a linear probe (one logistic regression per tag) on EfficientNet-Lite0's pooled features, decoded as
  serving decodes them;
- kNN votes over those features (cosine, the 30 nearest train icons);
- an icon projection aligned to the app's listing (InfoNCE, the listing's MiniLM vector as the target),
  then kNN votes among the train apps' listings (the icon read as the text it stands for).

Run: ``python benchmarks/icon_tag_signal.py [--out benchmarks/results/icon_tag_signal.json]`` (about 6
minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import torch
import torch.nn.functional as F

from corpora import appstream
from enrich.preprocess import prepare, prepare_event
from enrich.schemas import decode_item
from ops.measure.quality import prf
from triton_models.small_models import EfficientNetLite0, embed_texts, image_pixels, load_minilm, minilm_tokenizer

TOP = 3


def icon_features(apps: list[appstream.AppItem]) -> torch.Tensor:
    icons = appstream.load_icons()
    images = [prepare_event(a.event("image_only", icons[a.id]), 8000).images[0] for a in apps]
    net = EfficientNetLite0.pretrained()
    with torch.no_grad():
        return torch.cat([net.features(image_pixels(images[i:i + 64])) for i in range(0, len(images), 64)])


def listing_vectors(apps: list[appstream.AppItem]) -> torch.Tensor:
    icons = appstream.load_icons()
    texts = [prepare(decode_item(msgpack.packb(a.event("long_text_image", icons[a.id]), use_bin_type=True)),
                     8000).text for a in apps]
    return embed_texts(load_minilm(), minilm_tokenizer(), texts, max_tokens=256)


def probe(x: torch.Tensor, y: np.ndarray, train: np.ndarray, l2: float = 1e-3, steps: int = 300) -> torch.nn.Linear:
    torch.manual_seed(0)
    w = torch.nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():  # start at the tags' base rates
        p = y[train].mean(0).clip(1e-3, 1 - 1e-3)
        w.bias.copy_(torch.from_numpy(np.log(p / (1 - p))))
        w.weight.zero_()
    opt = torch.optim.Adam(w.parameters(), lr=1e-3)
    target = torch.from_numpy(y[train])
    for _ in range(steps):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(w(x[train]), target) + l2 * (w.weight ** 2).sum()
        loss.backward()
        opt.step()
    return w


def aligned_projection(icon: torch.Tensor, listing: torch.Tensor, train: np.ndarray, epochs: int = 40,
                       temperature: float = 0.05) -> torch.nn.Linear:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    proj = torch.nn.Linear(icon.shape[1], listing.shape[1])
    opt = torch.optim.AdamW(proj.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        order = rng.permutation(train)
        for s in range(0, len(order) - 127, 128):
            b = order[s:s + 128]
            logits = F.normalize(proj(icon[b]), dim=1) @ listing[b].T / temperature
            y = torch.arange(len(b))
            loss = (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
    return proj


def knn_votes(queries: torch.Tensor, exemplars: torch.Tensor, tags: list[list[str]], k: int = 30) -> list[set[str]]:
    sims = (F.normalize(queries, dim=1) @ F.normalize(exemplars, dim=1).T).numpy()
    out = []
    for row in sims:
        votes: Counter = Counter()
        for j in np.argsort(-row)[:k]:
            for t in tags[j]:
                votes[t] += max(float(row[j]), 0.0)
        out.append({t for t, _ in votes.most_common(TOP)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/icon_tag_signal.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    apps = appstream.load_snapshot()
    icon, listing = icon_features(apps), listing_vectors(apps)
    split = np.array([a.split for a in apps])
    tagged = np.array([bool(a.tags) for a in apps])
    train = np.flatnonzero((split == "train") & tagged)
    vocab = sorted({t for i in train for t in apps[i].tags})
    column = {t: j for j, t in enumerate(vocab)}
    y = np.zeros((len(apps), len(vocab)), np.float32)
    for i, a in enumerate(apps):
        for t in a.tags:
            if t in column:
                y[i, column[t]] = 1
    x = (icon - icon[train].mean(0)) / (icon[train].std(0) + 1e-6)
    w = probe(x, y, train)
    proj = aligned_projection(icon, listing, np.flatnonzero(split == "train"))
    with torch.no_grad():
        aligned = proj(icon)
    popular = {t for t, _ in Counter(t for i in train for t in apps[i].tags).most_common(TOP)}
    train_tags = [apps[i].tags for i in train]
    result: dict = {"train_icons": len(train), "tags": len(vocab), "predicted_per_item": TOP, "splits": {}}
    for name in ("val", "test"):
        idx = np.flatnonzero((split == name) & tagged)
        gold = [set(apps[i].tags) for i in idx]
        with torch.no_grad():
            scores = w(x[idx]).numpy()
        result["splits"][name] = {
            "apps": len(idx),
            "most_popular_3_tags": prf([popular] * len(idx), gold),
            "linear_probe": prf([{vocab[j] for j in np.argsort(-r)[:TOP]} for r in scores], gold),
            "knn_icon_features": prf(knn_votes(icon[idx], icon[train], train_tags), gold),
            "aligned_icon_to_listings_knn": prf(knn_votes(aligned[idx], listing[train], train_tags), gold),
        }
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
