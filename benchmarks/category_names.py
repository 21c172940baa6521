"""Tag names in another language: the AppStream menu categories as the whole vocabulary, named in English and
then in Chinese (zh_CN, from Debian's gnome-menus; never trained on), graded by each small preset's tagger.

The English test apps that have one of the 26 named categories, as listing + icon, each graded against all
26 names in-process with the exported tagger (the graphs the worker serves). Per preset and language: AUC of
the grade-2 probability (an app's own categories against the others) and the grade-2 F1 (the tagger's own
argmax grade, no prior). Exports each preset into ``--state`` first when it is not there.

Run: ``python benchmarks/category_names.py [--out benchmarks/results/category_names.json]`` (about 2 minutes
on 2 cores once both presets are exported).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from corpora import appstream, appstream_zh
from enrich.assembly import in_process_models
from enrich.preprocess import prepare_event
from ops.local.stack import ensure_models
from ops.measure.quality import prf
from ops.settings import ToolSettings

PRESETS = ("small", "multilingual")
LANGUAGES = ("en", "zh_CN")


def measure(settings: ToolSettings) -> dict[str, dict[str, float]]:
    cats = appstream_zh.load_categories()
    keys = sorted(cats)
    icons = appstream.load_icons()
    apps = [a for a in appstream.load_snapshot() if a.split == "test" and set(a.categories) & set(cats)]
    items = [prepare_event(a.event("long_text_image", icons[a.id]), settings.model_text_chars) for a in apps]
    gold = [set(a.categories) & set(keys) for a in apps]
    out = {}
    with in_process_models(settings) as (_, tagger):
        for lang in LANGUAGES:
            names = [cats[k][lang] for k in keys]
            scores = tagger.score(items, [names] * len(items))
            pos, neg, strong = [], [], []
            for g, sc in zip(gold, scores, strict=True):
                strong.append({k for k, p in zip(keys, sc.probs, strict=True) if int(np.argmax(p)) == 2})
                for k, p in zip(keys, sc.probs, strict=True):
                    (pos if k in g else neg).append(p[2])
            auc = float((np.array(pos)[:, None] > np.array(neg)[None, :]).mean())
            out[lang] = {"auc": round(auc, 3), "items": len(apps)} | prf(strong, gold)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, default=Path(".enrich/category-names"), help="state dir per preset")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/category_names.json"))
    a = ap.parse_args()
    result = {}
    for preset in PRESETS:
        s = ToolSettings(state_dir=a.state / preset, model_preset=preset, backend="onnxruntime")
        ensure_models(s, progress=print)
        result[preset] = measure(s)
        print(preset, json.dumps(result[preset]))
    a.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
