"""`enrich eval`, per language: the held-out packages that have both an English and a Chinese (zh_CN)
description go through the stream in each language (``corpora/debtags_zh.py``), and the same packages are
compared across languages, with the targets of issue 33:

- tags: grade-2 F1 against the packages' debtags, in Chinese at least 0.85x the same packages' F1 in English;
- cross-lingual neighbours: a Chinese item's English twin among its 10 nearest neighbours in a mixed-language
  catalogue (the debtags catalogue, the English test items and the Chinese ones) for at least 80% of items;
- neighbours: recall@10 against the gold related packages, in Chinese at least 0.85x English. Both languages
  search the same mixed catalogue by exact cosine over the stream's vectors; an item in either language
  counts as its package, and a query's own package (its twin) is left out.

Each target comes with its 95 % paired bootstrap interval (``ops.measure.quality.paired_difference``): the
difference between the Chinese figure and the target, resampled over the same packages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from corpora import debtags_zh
from corpora.debtags import DebtagsItem
from enrich.schemas import vector_from_bytes
from ops.measure.quality import K, paired_difference, prf, recalls_at

LANGUAGE = "zh_CN"
SUFFIX = f"#{LANGUAGE}"
RATIO = 0.85  # Chinese at least this share of English
TWIN_RATE = 0.8


def held_out_pairs(test: Sequence[DebtagsItem]) -> list[tuple[DebtagsItem, DebtagsItem]]:
    """(English, Chinese) of each test package the Chinese snapshot has, in the English test order."""
    zh = {it.id: it for it in debtags_zh.load_snapshot() if it.split == "test"}
    return [(en, zh[en.id]) for en in test if en.id in zh]


def chinese_event(it: DebtagsItem) -> dict:
    from corpora import debtags

    return debtags.as_event(it) | {"id": f"{it.id}{SUFFIX}"}


def _package(item_id: str) -> str:
    return item_id.removesuffix(SUFFIX)


def languages_report(records: dict[str, dict], pairs: list[tuple[DebtagsItem, DebtagsItem]],
                     catalogue: Sequence[DebtagsItem], cat_vecs: np.ndarray, known: set[str]) -> dict:
    """``records``: items.enriched by id, English test items under their package id, Chinese under
    ``<package>#zh_CN``; ``known``: the package ids related packages may be."""
    en_ids = [en.id for en, _ in pairs]
    zh_ids = [f"{zh.id}{SUFFIX}" for _, zh in pairs]
    gold_tags = [set(en.tags) for en, _ in pairs]

    def strong(item_id: str) -> set[str]:
        return {t["tag"] for t in records[item_id]["tags"] if t["grade"] == 2}

    pred = {"en": [strong(i) for i in en_ids], LANGUAGE: [strong(i) for i in zh_ids]}

    def f1(lang: str, scale: float = 1.0):  # noqa: ANN202 - a statistic over item indices
        return lambda idx: scale * prf([pred[lang][i] for i in idx], [gold_tags[i] for i in idx])["f1"]

    n = len(pairs)
    tags = {"en": prf(pred["en"], gold_tags), LANGUAGE: prf(pred[LANGUAGE], gold_tags)}
    tag_target = paired_difference(f1(LANGUAGE), f1("en", RATIO), n)

    # the mixed-language catalogue, searched by exact cosine over the stream's vectors
    ids = [it.id for it in catalogue] + en_ids + zh_ids
    vecs = np.concatenate([cat_vecs, np.stack([vector_from_bytes(records[i]["embedding"]) for i in en_ids + zh_ids])])
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True).clip(min=1e-12)
    row = {i: k for k, i in enumerate(ids)}

    def nearest(item_id: str, k: int, drop: set[str]) -> list[str]:
        sims = vecs @ vecs[row[item_id]]
        out: list[str] = []
        for j in np.argsort(-sims):
            pkg = _package(ids[j])
            if ids[j] == item_id or pkg in drop or pkg in out:
                continue
            out.append(pkg)
            if len(out) == k:
                break
        return out

    def top(item_id: str) -> list[str]:
        return [ids[j] for j in np.argsort(-(vecs @ vecs[row[item_id]])) if ids[j] != item_id][:K]

    twin_hit = np.array([float(en in top(zh)) for en, zh in zip(en_ids, zh_ids, strict=True)])
    twin_target = paired_difference(lambda idx: float(twin_hit[idx].mean()), lambda idx: TWIN_RATE, n)

    queries = [k for k, (en, _) in enumerate(pairs) if set(en.related) & known]
    gold_rel = [set(pairs[k][0].related) & known for k in queries]
    rec = {"en": np.array(recalls_at([nearest(en_ids[k], K, {en_ids[k]}) for k in queries], gold_rel)),
           LANGUAGE: np.array(recalls_at([nearest(zh_ids[k], K, {en_ids[k]}) for k in queries], gold_rel))}
    rel_target = paired_difference(lambda idx: float(rec[LANGUAGE][idx].mean()),
                                   lambda idx: RATIO * float(rec["en"][idx].mean()), len(queries))

    def target(name: str, value: float, goal: float, diff: dict) -> dict:
        return {"name": name, "value": round(value, 4), "target": round(goal, 4), "met": diff["difference"] >= 0,
                "difference": diff["difference"], "interval_95": diff["interval_95"]}

    return {
        "packages": n, "neighbour_queries": len(queries), "mixed_catalogue": len(ids),
        "tags_grade2": tags,
        f"twin_in_top{K}": round(float(twin_hit.mean()), 4) if n else 0.0,
        f"neighbour_recall@{K}": {lang: round(float(r.mean()), 4) if len(r) else 0.0 for lang, r in rec.items()},
        "targets": [
            target(f"grade-2 tag F1, {LANGUAGE} >= {RATIO} x en", tags[LANGUAGE]["f1"], RATIO * tags["en"]["f1"],
                   tag_target),
            target(f"English twin in a {LANGUAGE} item's top {K}", float(twin_hit.mean()) if n else 0.0, TWIN_RATE,
                   twin_target),
            target(f"neighbour recall@{K}, {LANGUAGE} >= {RATIO} x en",
                   float(rec[LANGUAGE].mean()) if queries else 0.0,
                   RATIO * float(rec["en"].mean()) if queries else 0.0, rel_target),
        ],
    }


def format_languages(r: dict) -> str:
    t = r["tags_grade2"]
    lines = [f"\n== per language: {r['packages']} held-out packages in English and Chinese ({LANGUAGE}), "
             f"{r['neighbour_queries']} neighbour queries, a mixed catalogue of {r['mixed_catalogue']} ==",
             f"{'':<30}{'en':>10}{LANGUAGE:>10}",
             f"{'grade-2 tag F1':<30}{t['en']['f1']:>10.3f}{t[LANGUAGE]['f1']:>10.3f}",
             f"{f'neighbour recall@{K}':<30}{r[f'neighbour_recall@{K}']['en']:>10.3f}"
             f"{r[f'neighbour_recall@{K}'][LANGUAGE]:>10.3f}",
             f"English twin in the top {K} of its Chinese item: {r[f'twin_in_top{K}']:.3f}"]
    for tg in r["targets"]:
        lo, hi = tg["interval_95"]
        lines.append(f"target {tg['name']}: {tg['value']:.3f} vs {tg['target']:.3f} "
                     f"({'met' if tg['met'] else 'NOT met'}; difference {tg['difference']:+.3f}, 95% [{lo:+.3f}, "
                     f"{hi:+.3f}])")
    return "\n".join(lines)
