"""Train the small multimodal embedder's image projection and late-fusion gate on real emoji.

Data: the npm package ``emoji-datasource-google`` (64 px PNGs with names, short names,
categories and subcategories; ``npm pack emoji-datasource-google`` and unpack it, then
pass the ``package`` directory). An item is one emoji: its image and its short name (the
terse text a producer would send, e.g. ``flag-eg``); two items are related when they share
a subcategory. Both towers stay frozen; two losses train the head:

- alignment: the projected image vector should retrieve the MiniLM vector of the emoji's
  full name among the batch (puts images into the text space, CLIP-style);
- fusion: the fused vector of an item should retrieve the fused vector of another item of
  its subcategory (InfoNCE with in-batch negatives), which is what neighbour recall asks.

Evaluation on held-out emoji (split by name hash): recall@10 of same-subcategory
neighbours for text only, image only, and fused.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corpora.emoji import Emoji, load_emoji
from enrich import artifacts
from enrich.errors import EnrichError
from triton_models.small_models import (
    EfficientNetLite0,
    FusionHead,
    image_pixels,
    save_fusion_artifact,
    tower_vectors,
    tower_width,
)

log = logging.getLogger(__name__)
FUSION_ARTIFACT_VERSION = "fusion-effnet-minilm-emoji-v1"
FUSION_VERSIONS = {"minilm": FUSION_ARTIFACT_VERSION, "use": "fusion-effnet-use-emoji-v1"}


@torch.no_grad()
def image_features(emoji: list[Emoji], batch: int = 64) -> torch.Tensor:
    from PIL import Image
    from tqdm import tqdm

    net = EfficientNetLite0.pretrained()
    out = []
    for i in tqdm(range(0, len(emoji), batch), desc="image features", unit="batch"):
        out.append(net.features(image_pixels([Image.open(e.image) for e in emoji[i:i + batch]])))
    return torch.cat(out)


def _info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = a @ b.T / temperature
    target = torch.arange(len(a))
    return F.cross_entropy(logits, target)


def recall_at(vectors: np.ndarray, groups: list[str], k: int = 10) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]
    g = np.array(groups)
    scores = []
    for i, row in enumerate(top):
        relevant = int((g == g[i]).sum()) - 1
        if relevant:
            scores.append(float((g[row] == g[i]).sum()) / min(k, relevant))
    return float(np.mean(scores)) if scores else 0.0


def train_fusion(package_dir: Path, out: Path, epochs: int = 30, batch: int = 128, lr: float = 2e-3,
                 temperature: float = 0.05, seed: int = 0, tower: str = "minilm") -> dict:
    """``tower``: the text tower whose space the images are projected into (``small_models.TEXT_TOWERS``)."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    emoji = load_emoji(package_dir)
    if len(emoji) < 100:
        raise EnrichError(f"{package_dir}: only {len(emoji)} emoji with images; is it the full package?")
    t0 = time.perf_counter()
    feats = image_features(emoji)
    short = tower_vectors(tower, [e.short_name for e in emoji])
    names = tower_vectors(tower, [e.name for e in emoji])
    train_idx = [i for i, e in enumerate(emoji) if not e.held_out]
    test_idx = [i for i, e in enumerate(emoji) if e.held_out]
    by_group: dict[str, list[int]] = {}
    for i in train_idx:
        by_group.setdefault(emoji[i].subcategory, []).append(i)
    head = FusionHead(tower_width(tower))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    ones = torch.ones(batch)
    for _ in tqdm(range(epochs), desc="training fusion head", unit="epoch"):
        order = rng.permutation(train_idx)
        for s in range(0, len(order) - batch + 1, batch):
            a = order[s:s + batch]
            # A positive per anchor from the same subcategory (itself when it is alone there).
            b = np.array([rng.choice(by_group[emoji[i].subcategory]) for i in a])
            va, vb = head.project(feats[a]), head.project(feats[b])
            fa = head.fuse(va, short[a], ones)
            fb = head.fuse(vb, short[b], ones)
            loss = _info_nce(va, names[a], temperature) + _info_nce(fa, fb, temperature)
            loss.backward()
            opt.step()
            opt.zero_grad()
    head.eval()
    with torch.no_grad():
        t = short[test_idx]
        v = head.project(feats[test_idx])
        fused = head.fuse(v, t, torch.ones(len(test_idx)))
        gate = torch.sigmoid(head.gate.proj(torch.cat([v, t], dim=-1))).mean().item()
    groups = [emoji[i].subcategory for i in test_idx]
    info = {
        "version": FUSION_VERSIONS[tower], "text_tower": tower, "data": "emoji-datasource-google 64px",
        "emoji": len(emoji),
        "train": len(train_idx), "held_out": len(test_idx), "epochs": epochs,
        "recall_at_10_same_subcategory": {
            "text_only": round(recall_at(t.numpy(), groups), 4),
            "image_only": round(recall_at(v.numpy(), groups), 4),
            "fused": round(recall_at(fused.numpy(), groups), 4),
        },
        "mean_visual_share": round(gate, 4), "train_seconds": round(time.perf_counter() - t0, 1),
    }
    save_fusion_artifact(head, out, info)
    artifacts.write_record(out, info)
    return info
