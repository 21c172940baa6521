"""`enrich eval`, per kind of item: what the image does, on the AppStream snapshot's held-out test apps.

Real application listings nobody in this project wrote (``corpora/appstream.py``). Each test app goes
through the stream as five items: the listing without its icon and with it, the name and summary
without the icon and with it, and the icon alone. Per kind:

- tags: grade-2 precision, recall and F1 against the package's debtags (apps that have them), beside
  baselines from the same run: kNN propagation over the debtags catalogue, prototype cosine (top 3),
  and the train apps' three most popular tags;
- neighbours: recall@10 of the app's debtags-related apps among all 1,770 apps embedded as the same
  kind (in-process with the same graphs, as a backfill would);
- the late-fusion gate's mean image share (``z`` of ``z * v + (1 - z) * t``, averaged over dimensions).

The targets (issue 20): with the image, each kind at least the better of its text alone and the icon
alone; an icon alone tagged well above the popular-tags baseline.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corpora import appstream
from corpora.appstream import app_event
from enrich.preprocess import prepare_event
from ops.measure.quality import K, paired_difference, prf, recall_ndcg, recalls_at, top_tags
from ops.settings import ToolSettings

KINDS = appstream.EVAL_KINDS
# each kind with an image, and what it must at least match: its text alone, the icon alone
WITH_IMAGE = {"long_text_image": "long_text", "short_text_image": "short_text"}


@dataclass
class AppCatalogue:
    apps: list[appstream.AppItem]
    vectors: dict[str, np.ndarray]  # kind -> [N, d] content vectors
    icons: np.ndarray  # [N, d] the projected icon vectors (the gate's v)
    empty_text: np.ndarray  # [d] what an icon alone is fused with: the text vector of no text
    fusion: Path  # the preset's fusion artifact (its gate gives the image share)


def select_apps(limit: int = 0, catalogue_limit: int = 0) -> list[appstream.AppItem]:
    """All apps, or (smoke runs) the first ``limit`` test apps within the first ``catalogue_limit`` others."""
    apps = appstream.load_snapshot()
    test = [it for it in apps if it.split == "test"][: limit or None]
    rest = [it for it in apps if it.split != "test"][: catalogue_limit or None]
    return rest + test


def embed_catalogue(settings: ToolSettings, apps: list[appstream.AppItem],
                    say: Callable[[str], None] = print) -> AppCatalogue:
    """``apps`` in every kind, embedded in-process with the exported embedder; cached per embedder version."""
    from enrich.assembly import in_process_models
    from triton_models.export_small import small_preset

    fusion = small_preset(settings.model_preset).fusion
    icons = appstream.load_icons()
    with in_process_models(settings) as (embedder, _):
        ids = "\n".join(it.id for it in apps)
        key = hashlib.sha256(f"{embedder.version}/{appstream.SNAPSHOT_VERSION}/{KINDS}/{ids}".encode()).hexdigest()
        cache = settings.state_dir / "vectors" / f"apps-{key[:12]}.npz"
        if cache.exists():
            with np.load(cache) as z:
                say(f"AppStream catalogue vectors from {cache}")
                return AppCatalogue(apps, {k: z[k] for k in KINDS}, z["icons"], z["empty_text"], fusion)
        t0 = time.perf_counter()
        vectors, icon_vecs = {}, []
        for kind in KINDS:
            prepared = [prepare_event(app_event(it, kind, icons[it.id]), settings.model_text_chars)
                        for it in apps]
            vectors[kind] = np.concatenate([embedder.embed(prepared[i:i + 64]) for i in range(0, len(prepared), 64)])
            if kind == "image_only":
                icon_vecs = [embedder.image_vectors(prepared[i:i + 64])[0] for i in range(0, len(prepared), 64)]
        empty = embedder.embed_texts([""])[0]
        say(f"{len(apps)} apps x {len(KINDS)} kinds embedded in-process in {time.perf_counter() - t0:.0f}s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, icons=np.concatenate(icon_vecs), empty_text=empty, **vectors)
    return AppCatalogue(apps, vectors, np.concatenate(icon_vecs), empty, fusion)


def held_out_events(apps: list[appstream.AppItem]) -> list[dict]:
    """The test apps of ``apps`` in every kind, as the stream receives them."""
    icons = appstream.load_icons()
    return [app_event(it, kind, icons[it.id]) for kind in KINDS for it in apps if it.split == "test"]


def image_share(fusion: Path, v: np.ndarray, t: np.ndarray) -> float:
    """The mean ``z`` of the gate in ``fusion`` for icon vectors ``v`` and text vectors ``t`` (rows paired)."""
    import torch

    from triton_models.small_models import load_fusion_head

    head, _ = load_fusion_head(fusion)
    with torch.no_grad():
        z = torch.sigmoid(head.gate.proj(torch.cat([torch.from_numpy(v), torch.from_numpy(t)], dim=-1)))
    return round(float(z.mean()), 4)


def _prf(pred: list[set[str]], gold: list[set[str]]) -> dict[str, float]:

    return prf(pred, gold) | {"items_without_strong_tag": sum(1 for p in pred if not p)}


def kinds_report(records: dict[str, dict], cat: AppCatalogue, debtags_vecs: np.ndarray, debtags_tags: list[list[str]],
                 proto_vecs: np.ndarray, vocab: list[str]) -> dict:
    """Per kind: the stream's tags and neighbours beside the baselines (``records``: items.enriched by id)."""
    from enrich.schemas import vector_from_bytes
    from training.pairwise_tagger import neighbour_candidates

    index = {it.id: n for n, it in enumerate(cat.apps)}
    test = [it for it in cat.apps if it.split == "test"]
    tagged = [it for it in test if it.tags]
    gold = [set(it.tags) for it in tagged]
    popular = {t for t, _ in Counter(t for it in cat.apps if it.split == "train" for t in it.tags).most_common(3)}
    queries = [it for it in test if any(r in index for r in it.related)]
    out: dict = {"test_apps": len(test), "tagged_test_apps": len(tagged), "neighbour_queries": len(queries),
                 "most_popular_3_tags": _prf([popular] * len(tagged), gold), "kinds": {}}
    per_item = {"gold": gold, "popular": [popular] * len(tagged), "strong": {}, "recalls": {}}
    for kind in KINDS:
        vec = {it.id: vector_from_bytes(records[f"{it.id}#{kind}"]["embedding"]) for it in test}
        strong = [{t["tag"] for t in records[f"{it.id}#{kind}"]["tags"] if t["grade"] == 2} for it in tagged]
        tv = np.stack([vec[it.id] for it in tagged]) if tagged else np.zeros((0, debtags_vecs.shape[1]), np.float32)
        knn = neighbour_candidates(tv, debtags_vecs, debtags_tags, 3, k=K)
        found, rel = [], []
        for it in queries:
            sims = cat.vectors[kind] @ vec[it.id]
            sims[index[it.id]] = -np.inf
            found.append([cat.apps[j].id for j in np.argsort(-sims)[:K]])
            rel.append({r for r in it.related if r in index})
        per_item["strong"][kind], per_item["recalls"][kind] = strong, recalls_at(found, rel)
        row = {"tags_grade2": _prf(strong, gold),
               "knn_propagation_top3": _prf([set(k) for k in knn], gold),
               "prototype_top3": _prf([set(z) for z in top_tags(tv @ proto_vecs.T, vocab, 3)], gold),
               "neighbours": recall_ndcg(found, rel) if queries else None}
        if kind.endswith("image") or kind == "image_only":
            rows = [index[it.id] for it in test]
            text_kind = WITH_IMAGE.get(kind)
            t = cat.vectors[text_kind][rows] if text_kind else np.tile(cat.empty_text, (len(rows), 1))
            row["gate_image_share"] = image_share(cat.fusion, cat.icons[rows], t)
        out["kinds"][kind] = row
    out["targets"] = kind_targets(out["kinds"], out["most_popular_3_tags"], per_item)
    return out


def kind_targets(kinds: dict, popular: dict, per_item: dict) -> dict:
    """Issue 20's bar: with the image, at least the better of the text alone and the icon alone. Each beside
    the paired bootstrap interval of its difference to the bar (over the same apps), so that a difference of
    a tag or two reads as what it is."""
    from training.tag_prior import micro_f1

    gold = per_item["gold"]

    def f1_of(predicted: list[set[str]]) -> Callable[[np.ndarray], float]:
        return lambda idx: micro_f1([predicted[i] for i in idx], [gold[i] for i in idx])

    def mean_of(values: list[float]) -> Callable[[np.ndarray], float]:
        return lambda idx: float(np.mean([values[i] for i in idx])) if len(idx) else 0.0

    metrics = {"tag_f1": (lambda r: r["tags_grade2"]["f1"], lambda k: f1_of(per_item["strong"][k]), len(gold)),
               "neighbour_recall@10": (lambda r: r["neighbours"]["recall@10"] if r["neighbours"] else 0,
                                       lambda k: mean_of(per_item["recalls"][k]),
                                       len(per_item["recalls"][KINDS[0]]))}
    out = {}
    for kind, text_kind in WITH_IMAGE.items():
        for metric, (get, stat, n) in metrics.items():
            bar_kind = max((text_kind, "image_only"), key=lambda k: get(kinds[k]))  # noqa: B023 - used at once
            out[f"{kind} {metric}"] = {"with_image": get(kinds[kind]), "bar": get(kinds[bar_kind]),
                                       "bar_kind": bar_kind, "met": get(kinds[kind]) >= get(kinds[bar_kind]),
                                       **paired_difference(stat(kind), stat(bar_kind), n)}
    out["image_only tag_f1 vs most popular"] = {
        "with_image": kinds["image_only"]["tags_grade2"]["f1"], "bar": popular["f1"], "bar_kind": "most_popular_3",
        "met": kinds["image_only"]["tags_grade2"]["f1"] > popular["f1"],
        **paired_difference(f1_of(per_item["strong"]["image_only"]), f1_of(per_item["popular"]), len(gold))}
    return out


def format_kinds(r: dict) -> str:
    lines = [f"\n== per kind: {r['test_apps']} held-out AppStream apps ({r['tagged_test_apps']} with debtags, "
             f"{r['neighbour_queries']} neighbour queries) ==",
             f"{'kind':<18}{'tag P':>7}{'tag R':>7}{'tag F1':>8}{'kNN F1':>8}{'proto F1':>9}{'nb R@10':>9}"
             f"{'image share':>13}"]
    for kind, row in r["kinds"].items():
        t = row["tags_grade2"]
        nb = row["neighbours"]["recall@10"] if row["neighbours"] else float("nan")
        share = f"{row['gate_image_share']:.2f}" if "gate_image_share" in row else "-"
        lines.append(f"{kind:<18}{t['precision']:>7.3f}{t['recall']:>7.3f}{t['f1']:>8.3f}"
                     f"{row['knn_propagation_top3']['f1']:>8.3f}{row['prototype_top3']['f1']:>9.3f}{nb:>9.3f}"
                     f"{share:>13}")
    lines.append(f"most popular 3 tags: F1 {r['most_popular_3_tags']['f1']:.3f}")
    for name, tgt in r["targets"].items():
        lo, hi = tgt["interval_95"]
        lines.append(f"target {name}: {tgt['with_image']:.3f} vs {tgt['bar']:.3f} ({tgt['bar_kind']}) "
                     f"{'met' if tgt['met'] else 'NOT met'}; difference {tgt['difference']:+.3f}, 95% paired "
                     f"bootstrap interval [{lo:+.3f}, {hi:+.3f}]")
    return "\n".join(lines)
