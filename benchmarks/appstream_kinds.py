"""What the image does today, per kind of item, on the held-out AppStream test split (issue 20's "before").

Real application listings nobody in this project wrote (``enrich/appstream.py``): each test app is sent
as four items, the listing without its icon (today's text-only baseline), the listing with its icon,
name and summary with the icon, and the icon alone. For each kind, through the real pipeline (small
presets, in-process ONNX Runtime, the shipped tag prior and the debtags vocabulary with prototypes):

- tags: grade-2 precision, recall and F1 against the package's debtags (apps that have them);
- neighbours: recall@10 of the app's debtags-related apps among all 1,770 apps sent as the same kind;
- how much of each modality the fused vector keeps: its mean cosine to the same app's text-only vector
  and to its icon-only vector.

Run: ``python benchmarks/appstream_kinds.py [--out benchmarks/results/appstream_kinds.json]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import msgpack
import numpy as np

from enrich import appstream
from enrich.inference import OnnxRuntimeBackend
from enrich.pipeline import Enriched, RawEvent, SourceRef
from enrich.preprocess import prepare
from enrich.schemas import decode_item
from enrich.settings import Settings
from streams.services import make_pipeline
from streams.stack import debtags_vocabulary, ensure_codebook, ensure_models

KINDS = ("text_only", *appstream.KINDS)


def event(it: appstream.AppItem, kind: str, icon: bytes) -> dict:
    if kind == "text_only":
        e = it.event("long_text_image", icon)
        return e | {"id": f"{it.id}#text_only", "kind": "article", "images": []}
    return it.event(kind, icon)


def tag_scores(pred: list[set[str]], gold: list[set[str]]) -> dict[str, float]:
    tp = sum(len(p & g) for p, g in zip(pred, gold, strict=True))
    n_pred, n_gold = sum(map(len, pred)), sum(map(len, gold))
    p, r = tp / max(1, n_pred), tp / max(1, n_gold)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(1e-9, p + r), 4),
            "items_without_strong_tag": sum(1 for x in pred if not x)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/appstream_kinds.json"))
    args = ap.parse_args()
    s = Settings(backend="onnxruntime", model_preset="small")
    ensure_models(s, progress=print)
    ensure_codebook(s, progress=print)
    pipeline = make_pipeline(s, OnnxRuntimeBackend(s.models_path))
    for entry in debtags_vocabulary(s):
        pipeline.vocabulary.apply(entry)
    items, icons = appstream.load_snapshot(), appstream.load_icons()
    test = [it for it in items if it.split == "test"]
    index = {it.id: k for k, it in enumerate(items)}
    t0 = time.perf_counter()
    result: dict = {"items": len(items), "test_items": len(test), "kinds": {}}
    vectors: dict[str, np.ndarray] = {}
    for kind in KINDS:
        raws = [msgpack.packb(event(it, kind, icons[it.id]), use_bin_type=True) for it in items]
        prepared = [prepare(decode_item(r), s.max_text_chars) for r in raws]
        vecs = np.concatenate([pipeline.embedder.embed(prepared[k:k + 64]) for k in range(0, len(prepared), 64)])
        vectors[kind] = vecs
        outs = [o for k in range(0, len(test), 16) for o in pipeline.run(
            [RawEvent(None, raws[index[it.id]], SourceRef("appstream", 0, n)) for n, it in
             enumerate(test[k:k + 16])])]
        tagged = [(o, it) for o, it in zip(outs, test, strict=True) if it.tags and isinstance(o, Enriched)]
        pred = [{t.tag for t in o.record.tags if t.grade == 2} for o, _ in tagged]
        gold = [set(it.tags) for _, it in tagged]
        sims = vecs @ vecs.T
        recalls = []
        for it in test:
            rel = {index[r] for r in it.related if r in index}
            if not rel:
                continue
            i = index[it.id]
            row = sims[i].copy()
            row[i] = -np.inf
            top = set(np.argsort(-row)[:10].tolist())
            recalls.append(len(top & rel) / min(10, len(rel)))
        result["kinds"][kind] = {"tags_grade2": tag_scores(pred, gold) | {"items": len(tagged)},
                                 "neighbour_recall_at_10": round(float(np.mean(recalls)), 4) if recalls else None,
                                 "neighbour_queries": len(recalls)}
        print(kind, json.dumps(result["kinds"][kind]))
    t, v = vectors["text_only"], vectors["image_only"]
    for kind in appstream.KINDS:
        f = vectors[kind]
        result["kinds"][kind]["mean_cosine_to_text_only"] = round(float((f * t).sum(1).mean()), 4)
        result["kinds"][kind]["mean_cosine_to_icon_only"] = round(float((f * v).sum(1).mean()), 4)
    # the most-popular-tags baseline: every test app gets the train split's three most common tags
    from collections import Counter

    popular = {t for t, _ in Counter(t for it in items if it.split == "train" for t in it.tags).most_common(3)}
    with_tags = [it for it in test if it.tags]
    result["most_popular_3_tags"] = tag_scores([popular] * len(with_tags), [set(it.tags) for it in with_tags])
    result["versions"] = pipeline.versions.__dict__
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    pipeline.close()


if __name__ == "__main__":
    main()
