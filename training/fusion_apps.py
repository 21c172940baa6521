"""Retrain the small embedder's late-fusion gate on real multimodal items, so an image cannot drown the text.

Data: the AppStream snapshot's train split (``corpora/appstream.py``), each app in all three kinds. The
towers and the image projection (trained on emoji, ``train_fusion.py``) stay frozen; only the NoteLLM-2
gate ``z = sigmoid(W [v; t] + b)``, conditioned on both modalities, is trained, with modality dropout:
each training item shows one kind, drawn at random. The head sees exactly what serving gives it: the
MiniLM vector of the text the pipeline prepares for that kind (the empty string for an icon alone, as the
worker embeds it) and the EfficientNet-Lite0 feature of the icon as the serving decoder decodes it.

- listing + icon, name and summary + icon: the fused vector must retrieve the same app's listing vector
  (its most complete description) among the batch (InfoNCE), so the gate keeps the text where the text
  says more than the icon;
- icon alone: the fused vector must stay the projected icon (the empty text carries nothing to mix in).

The own-listing objective is met at any small image share, so it does not say how much of the icon a
neighbour search can bear; trained to retrieve related apps instead, the gate learns the train families'
icons and does worse on validation (both measured, ``docs/models.md``). So the trained gate is then
**calibrated on validation**: one offset added to its logit, chosen from a grid as the one whose fused
vectors' 10 nearest apps (each kind searched among all apps of that kind, as ``enrich eval`` does) share
the most debtags with the query (mean Jaccard over the tagged validation apps, both kinds with an icon).
An icon alone is fused with the constant vector of no text, so the offset barely moves its neighbours.

Validation and the training record: per kind, recall@1 of the app's own listing among all apps' listings,
the mean cosine of the fused vector to the item's text and to its icon, and the gate's mean image share;
the calibration's table (offset -> image share and neighbours' tag agreement per kind).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import torch
import torch.nn.functional as F

from enrich import artifacts
from triton_models.small_models import (
    EfficientNetLite0,
    FusionHead,
    image_pixels,
    load_fusion_head,
    save_fusion_artifact,
    tower_vectors,
)

FUSION_APPS_VERSION = "fusion-effnet-minilm-apps-v3"
FUSION_APPS_VERSIONS = {"minilm": FUSION_APPS_VERSION, "use": "fusion-effnet-use-apps-v1"}
GATE_OFFSETS = (0.0, -0.25, -0.5, -0.75, -1.0, -1.25, -1.5, -2.0, -3.0)
KINDS = ("long_text_image", "short_text_image", "image_only")


@dataclass
class AppFeatures:
    splits: list[str]
    text: dict[str, torch.Tensor]  # kind -> [N, width] unit vectors of the text that kind carries
    icon: torch.Tensor  # [N, 1280] image features
    tags: list[frozenset[str]] | None = None  # the apps' debtags (empty when the package has none)

    @property
    def listing(self) -> torch.Tensor:
        return self.text["long_text_image"]


@torch.no_grad()
def app_features(max_tokens: int = 256, model_text_chars: int = 8000, tower: str = "minilm") -> AppFeatures:
    """The text tower's vectors of each kind's prepared text and the icons' image features, as serving makes them."""
    from corpora import appstream
    from enrich.preprocess import prepare
    from enrich.schemas import decode_item

    items, icons = appstream.load_snapshot(), appstream.load_icons()
    text, images = {}, []
    for kind in KINDS:
        prepared = [prepare(decode_item(msgpack.packb(it.event(kind, icons[it.id]), use_bin_type=True)),
                            model_text_chars) for it in items]
        text[kind] = tower_vectors(tower, [p.text for p in prepared], max_tokens=max_tokens)
        images = images or [p.images[0] for p in prepared]  # decoded by the serving decoder
    net = EfficientNetLite0.pretrained()
    feats = torch.cat([net.features(image_pixels(images[i:i + 64])) for i in range(0, len(images), 64)])
    return AppFeatures([it.split for it in items], text, feats, [frozenset(it.tags) for it in items])


@torch.no_grad()
def evaluate(head: FusionHead, f: AppFeatures, split: str) -> dict[str, dict[str, float]]:
    idx = np.array([i for i, s in enumerate(f.splits) if s == split])
    v = head.project(f.icon[idx])
    out = {}
    for kind in KINDS:
        t = f.text[kind][idx]
        fused = head.fuse(v, t, torch.ones(len(idx)))
        out[kind] = {
            "own_listing_recall_at_1": round(float(((fused @ f.listing.T).argmax(1).numpy() == idx).mean()), 4),
            "cosine_to_text": round(float((fused * t).sum(1).mean()), 4),
            "cosine_to_icon": round(float((fused * v).sum(1).mean()), 4),
            "mean_image_share": round(torch.sigmoid(head.gate.proj(torch.cat([v, t], dim=-1))).mean().item(), 4),
        }
    return out


def train_gate(f: AppFeatures, start: Path, epochs: int = 40, batch: int = 128, lr: float = 5e-3,
               temperature: float = 0.05, seed: int = 0) -> FusionHead:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head, _ = load_fusion_head(start)
    for p in head.projection.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(head.gate.parameters(), lr=lr, weight_decay=0.01)
    train_idx = np.array([i for i, s in enumerate(f.splits) if s == "train"])
    with torch.no_grad():
        icons = head.project(f.icon)
    for _ in range(epochs):
        order = rng.permutation(train_idx)
        for s in range(0, len(order) - batch + 1, batch):
            a = order[s:s + batch]
            kinds = rng.integers(0, len(KINDS), len(a))  # modality dropout: each item shows one kind
            t = torch.stack([f.text[KINDS[k]][i] for k, i in zip(kinds, a, strict=True)])
            v = icons[a]
            z = head.fuse(v, t, torch.ones(len(a)))
            with_text = torch.from_numpy(kinds != KINDS.index("image_only"))
            logits = z @ f.listing[a].T / temperature
            loss = F.cross_entropy(logits[with_text], torch.arange(len(a))[with_text])
            if (~with_text).any():
                loss = loss + (1 - (z[~with_text] * v[~with_text]).sum(-1)).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
    return head.eval()


def neighbour_tag_agreement(fused: torch.Tensor, tags: list[frozenset[str]], queries: np.ndarray,
                            k: int = 10) -> float:
    """Mean over ``queries`` of the debtags Jaccard between a query and each of its ``k`` nearest rows."""
    sims = fused[queries] @ fused.T
    sims[torch.arange(len(queries)), torch.from_numpy(queries)] = -torch.inf
    near = sims.topk(k, dim=1).indices.numpy()
    return float(np.mean([[len(tags[q] & tags[j]) / len(tags[q] | tags[j]) for j in row]
                          for q, row in zip(queries, near, strict=True)]))


@torch.no_grad()
def calibrate_gate(head: FusionHead, f: AppFeatures, split: str = "val",
                   offsets: tuple[float, ...] = GATE_OFFSETS) -> tuple[FusionHead, dict]:
    """``head`` with the offset of ``offsets`` added to its gate's bias whose neighbours agree best on
    ``split``'s tags (the module docstring), and the table it was chosen from."""
    if f.tags is None:
        raise ValueError("calibrating the gate needs the apps' tags")
    queries = np.array([i for i, (s, t) in enumerate(zip(f.splits, f.tags, strict=True)) if s == split and t])
    v = head.project(f.icon)
    table = {}
    for offset in offsets:
        z = torch.sigmoid(head.gate.proj(torch.cat([v, f.listing], dim=-1)) + offset)
        row = {"image_share_listing": round(float(z.mean()), 4)}
        for kind in ("long_text_image", "short_text_image"):
            t = f.text[kind]
            z = torch.sigmoid(head.gate.proj(torch.cat([v, t], dim=-1)) + offset)
            row[kind] = round(neighbour_tag_agreement(F.normalize(z * v + (1 - z) * t, dim=-1), f.tags, queries), 4)
        table[str(offset)] = row
    text_alone = {kind: round(neighbour_tag_agreement(f.text[kind], f.tags, queries), 4)
                  for kind in ("long_text_image", "short_text_image")}
    best = max(offsets, key=lambda o: table[str(o)]["long_text_image"] + table[str(o)]["short_text_image"])
    head.gate.proj.bias += best
    return head, {"split": split, "queries": len(queries), "offset": best, "table": table,
                  "text_alone": text_alone}


def train_fusion_apps(out: Path, start: Path, epochs: int = 40, seed: int = 0, tower: str = "minilm") -> dict:
    """``start``: the emoji-trained head of the same ``tower``."""
    t0 = time.perf_counter()
    f = app_features(tower=tower)
    before = load_fusion_head(start)[0]
    trained = train_gate(f, start, epochs=epochs, seed=seed)
    uncalibrated = evaluate(trained, f, "val")
    head, calibration = calibrate_gate(trained, f)
    info = {"version": FUSION_APPS_VERSIONS[tower], "text_tower": tower, "started_from": start.name, "epochs": epochs,
            "trained": "gate only, then its offset calibrated on validation", "calibration": calibration,
            "validation_uncalibrated": uncalibrated,
            "data": "appstream-bookworm-v1 train split, three kinds, modality dropout",
            "validation_before": evaluate(before, f, "val"), "validation": evaluate(head, f, "val"),
            "test": evaluate(head, f, "test"), "train_seconds": round(time.perf_counter() - t0, 1)}
    save_fusion_artifact(head, out, info)
    artifacts.write_record(out, info)
    return info
