"""`enrich eval`'s per-language report: the same packages compared across languages, with the targets."""

from __future__ import annotations

import numpy as np

from corpora.debtags import DebtagsItem
from ops.measure.evaluate_languages import languages_report


def _item(i: int, related: list[str], tags: list[str]) -> DebtagsItem:
    return DebtagsItem(id=f"p{i}", title=f"p{i}: x", text="t", tags=tags, related=related, split="test")


def _record(vec: np.ndarray, strong: list[str]) -> dict:
    return {"embedding": vec.astype(np.float32).tobytes(), "tags": [{"tag": t, "grade": 2} for t in strong]}


def _setup(zh_noise: float, zh_tags_right: bool) -> dict:
    rng = np.random.default_rng(0)
    dim, n = 16, 6
    catalogue = [DebtagsItem(id=f"c{j}", title="c", text="c", tags=["x::y"], related=[], split="train")
                 for j in range(80)]  # a random vector lands in a top 10 of 91 one time in nine
    cat_vecs = rng.standard_normal((len(catalogue), dim))
    pairs, records = [], {}
    for i in range(n):
        tags = [f"t::{i}", "t::common"]
        en = _item(i, [f"c{i}"], tags)
        pairs.append((en, en))
        v = cat_vecs[i] + 0.05 * rng.standard_normal(dim)  # each test package sits next to its related one
        records[en.id] = _record(v, tags)
        records[f"{en.id}#zh_CN"] = _record(v + zh_noise * rng.standard_normal(dim),
                                            tags if zh_tags_right else ["t::wrong"])
    return languages_report(records, pairs, catalogue, cat_vecs, {c.id for c in catalogue})


def test_a_language_read_as_well_as_english_meets_every_target() -> None:
    r = _setup(zh_noise=0.01, zh_tags_right=True)
    assert r["tags_grade2"]["en"]["f1"] == r["tags_grade2"]["zh_CN"]["f1"] == 1.0
    assert r["twin_in_top10"] == 1.0
    assert r["neighbour_recall@10"] == {"en": 1.0, "zh_CN": 1.0}
    assert all(t["met"] for t in r["targets"])
    lo, hi = r["targets"][0]["interval_95"]
    assert lo <= r["targets"][0]["difference"] <= hi


def test_a_language_the_model_cannot_read_misses_them() -> None:
    r = _setup(zh_noise=50.0, zh_tags_right=False)  # Chinese vectors anywhere, Chinese tags wrong
    assert r["tags_grade2"]["zh_CN"]["f1"] == 0.0
    assert not r["targets"][0]["met"] and r["targets"][0]["interval_95"][1] < 0
    assert r["twin_in_top10"] < 0.5 and not r["targets"][1]["met"]
    assert r["neighbour_recall@10"]["zh_CN"] <= r["neighbour_recall@10"]["en"]
