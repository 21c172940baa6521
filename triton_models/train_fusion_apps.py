"""Retrain the small embedder's late-fusion gate on real multimodal items, so an image cannot drown the text.

Data: the AppStream snapshot's train split (``enrich/appstream.py``), each app in all three kinds. The
towers and the image projection (trained on emoji, ``train_fusion.py``) stay frozen; only the NoteLLM-2
gate ``z = sigmoid(W [v; t] + b)``, conditioned on both modalities, is trained, with modality dropout:
each training item shows one kind, drawn at random. The head sees exactly what serving gives it: the
MiniLM vector of the text the pipeline prepares for that kind (the empty string for an icon alone, as the
worker embeds it) and the EfficientNet-Lite0 feature of the icon as the serving decoder decodes it.

- listing + icon, name and summary + icon: the fused vector must retrieve the same app's listing vector
  (its most complete description) among the batch (InfoNCE), so the gate keeps the text where the text
  says more than the icon;
- icon alone: the fused vector must stay the projected icon (the empty text carries nothing to mix in).

Validation and the training record: per kind, recall@1 of the app's own listing among all apps' listings,
the mean cosine of the fused vector to the item's text and to its icon, and the gate's mean image share.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import torch
import torch.nn.functional as F

from triton_models.small_models import (
    EfficientNetLite0,
    FusionHead,
    embed_texts,
    image_pixels,
    load_fusion_head,
    load_minilm,
    minilm_tokenizer,
    save_fusion_artifact,
)

FUSION_APPS_VERSION = "fusion-effnet-minilm-apps-v2"
KINDS = ("long_text_image", "short_text_image", "image_only")


@dataclass
class AppFeatures:
    splits: list[str]
    text: dict[str, torch.Tensor]  # kind -> [N, 384] unit vectors of the text that kind carries
    icon: torch.Tensor  # [N, 1280] image features

    @property
    def listing(self) -> torch.Tensor:
        return self.text["long_text_image"]


@torch.no_grad()
def app_features(max_tokens: int = 256, max_text_chars: int = 8000) -> AppFeatures:
    """MiniLM vectors of each kind's prepared text and the icons' image features, as serving makes them."""
    from enrich import appstream
    from enrich.preprocess import prepare
    from enrich.schemas import decode_item

    items, icons = appstream.load_snapshot(), appstream.load_icons()
    bert, tok = load_minilm(), minilm_tokenizer()
    text, images = {}, []
    for kind in KINDS:
        prepared = [prepare(decode_item(msgpack.packb(it.event(kind, icons[it.id]), use_bin_type=True)),
                            max_text_chars) for it in items]
        text[kind] = embed_texts(bert, tok, [p.text for p in prepared], max_tokens=max_tokens)
        images = images or [p.images[0] for p in prepared]  # decoded by the serving decoder
    net = EfficientNetLite0.pretrained()
    feats = torch.cat([net.features(image_pixels(images[i:i + 64])) for i in range(0, len(images), 64)])
    return AppFeatures([it.split for it in items], text, feats)


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


def train_fusion_apps(out: Path, start: Path, epochs: int = 40, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    f = app_features()
    before = load_fusion_head(start)[0]
    head = train_gate(f, start, epochs=epochs, seed=seed)
    info = {"version": FUSION_APPS_VERSION, "started_from": start.name, "epochs": epochs, "trained": "gate only",
            "data": "appstream-bookworm-v1 train split, three kinds, modality dropout",
            "validation_before": evaluate(before, f, "val"), "validation": evaluate(head, f, "val"),
            "test": evaluate(head, f, "test"), "train_seconds": round(time.perf_counter() - t0, 1)}
    save_fusion_artifact(head, out, info)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info
