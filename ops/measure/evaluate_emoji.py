"""`enrich eval --emoji DIR`: image-only items tagged from a vocabulary of their own, on held-out emoji.

What a sticker platform asks of the product: an item with no text at all, and a vocabulary that is the
platform's, not Debian's. The held-out fifth of Google's emoji (``corpora/emoji.py``, never trained on)
goes through the worker's pipeline in-process (the same code and exported graphs as a worker, on ONNX
Runtime), as image-only ``items.new`` records, with the live vocabulary replaced by one of:

- ``subcategory``: the emoji's 99 subcategories (``face-smiling``, ``animal-mammal``, ...); the packed
  tagger trains on the other emoji's subcategories, so these are trained tags on unseen images;
- ``category``: the ten categories (``Smileys & Emotion``, ...), which no trainer reads: a vocabulary
  the models never saw.

Per vocabulary: grade-2 precision / recall / F1 against each emoji's own label, the items left without a
strong tag, and two baselines from the same run: the most common label of the training emoji, and
zero-shot (the label whose name vector is nearest the item's vector, top 1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from corpora.emoji import Emoji, load_emoji
from ops.measure.quality import prf
from ops.settings import ToolSettings
from streams.topology import ITEMS_NEW

VOCABULARIES = ("subcategory", "category")


def label(e: Emoji, vocabulary: str) -> str:
    return e.subcategory if vocabulary == "subcategory" else e.category


def run_emoji_eval(settings: ToolSettings, package_dir: Path, say: Callable[[str], None] = print,
                   limit: int = 0) -> dict:
    from enrich.assembly import in_process_models, make_backend, make_pipeline
    from enrich.pipeline import RawEvent, SourceRef
    from enrich.preprocess import prepare_event
    from enrich.schemas import VocabEntry, encode_item
    from enrich.tagging.vocabulary import readable_tag
    from ops.local.stack import ensure_codebook, ensure_models

    emoji = load_emoji(package_dir)
    test = [e for e in emoji if e.split == "test"][: limit or None]
    train = [e for e in emoji if e.split == "train"]
    events = [e.event(f"emoji-{n}") for n, e in enumerate(test)]
    local = settings.updated(backend="onnxruntime", model_preset="small")
    local.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_models(local, progress=say)
    ensure_codebook(local, progress=say)
    with in_process_models(local) as (embedder, _):
        prepared = [prepare_event(ev, local.model_text_chars) for ev in events]
        vectors = np.concatenate([embedder.embed(prepared[i:i + 64]) for i in range(0, len(prepared), 64)])
        names = {v: embedder.embed_texts([readable_tag(t) for t in sorted({label(e, v) for e in emoji})])
                 for v in VOCABULARIES}
    out: dict = {"held_out_emoji": len(test), "vocabularies": {}}
    raw = [RawEvent(None, encode_item(ev), SourceRef(ITEMS_NEW, 0, n))
           for n, ev in enumerate(events)]
    pipeline = make_pipeline(local, make_backend(local))
    try:
        for vocabulary in VOCABULARIES:
            tags = sorted({label(e, vocabulary) for e in emoji})
            for t in pipeline.vocabulary.snapshot().tags:  # the platform's vocabulary, only
                pipeline.vocabulary.apply(VocabEntry(tag=t, deleted=True))
            for t in tags:
                pipeline.vocabulary.apply(VocabEntry(tag=t))
            results = [r for i in range(0, len(raw), 32) for r in pipeline.run(raw[i:i + 32])]
            out["vocabularies"][vocabulary] = _scores(vocabulary, tags, test, train, results, vectors,
                                                      names[vocabulary])
    finally:
        pipeline.close()
    say(format_emoji(out))
    return out


def _scores(vocabulary: str, tags: list[str], test: list[Emoji], train: list[Emoji], results: list,
            vectors: np.ndarray, names: np.ndarray) -> dict:
    from enrich.pipeline import Enriched

    rejected = [r for r in results if not isinstance(r, Enriched)]
    if rejected:
        raise RuntimeError(f"{len(rejected)} held-out emoji were rejected: {rejected[0]}")
    gold = [{label(e, vocabulary)} for e in test]
    strong = [{t.tag for t in r.record.tags if t.grade == 2} for r in results]
    popular = Counter(label(e, vocabulary) for e in train).most_common(1)[0][0]
    nearest = (vectors @ names.T).argmax(axis=1)
    return {
        "tags": len(tags),
        "tags_grade2": prf(strong, gold) | {"items_without_strong_tag": sum(1 for s in strong if not s)},
        "most_popular_tag": prf([{popular}] * len(test), gold),
        "zero_shot_top1": prf([{tags[j]} for j in nearest], gold),
        "examples": [{"emoji": e.name, "label": label(e, vocabulary), "strong": sorted(st),
                      "graded": [[t.tag, t.grade] for t in r.record.tags]}
                     for e, st, r in list(zip(test, strong, results, strict=True))[:12]],
    }


def format_emoji(r: dict) -> str:
    lines = [f"\n== image only, a vocabulary of its own: {r['held_out_emoji']} held-out emoji ==",
             f"{'vocabulary':<14}{'tags':>6}{'tag P':>8}{'tag R':>8}{'tag F1':>8}{'no tag':>8}"
             f"{'popular F1':>12}{'zero-shot F1':>14}"]
    for name, v in r["vocabularies"].items():
        t = v["tags_grade2"]
        lines.append(f"{name:<14}{v['tags']:>6}{t['precision']:>8.3f}{t['recall']:>8.3f}{t['f1']:>8.3f}"
                     f"{t['items_without_strong_tag']:>8}{v['most_popular_tag']['f1']:>12.3f}"
                     f"{v['zero_shot_top1']['f1']:>14.3f}")
    return "\n".join(lines)
