"""The paired bootstrap interval beside each per-kind target of `enrich eval`, and the targets it is put on."""

from __future__ import annotations

import numpy as np

from ops.measure.evaluate_kinds import KINDS, kind_targets
from ops.measure.quality import paired_difference, recalls_at


def test_a_difference_every_item_shares_has_an_interval_on_its_side_of_zero():
    better = np.linspace(0.5, 1.0, 40)
    worse = better - 0.1
    d = paired_difference(lambda idx: float(better[idx].mean()), lambda idx: float(worse[idx].mean()), 40)
    assert d["difference"] == 0.1
    assert d["interval_95"][0] > 0.09 and d["interval_95"][1] < 0.11  # paired: the items' spread cancels


def test_a_difference_of_one_item_in_many_has_an_interval_across_zero():
    a = np.zeros(100)
    a[0] = 1.0
    d = paired_difference(lambda idx: float(a[idx].mean()), lambda idx: 0.0, 100)
    assert d["difference"] == 0.01
    assert d["interval_95"][0] == 0.0 and d["interval_95"][1] > 0.01


def test_recall_at_k_is_over_what_the_query_could_hold():
    assert recalls_at([["a", "x", "b"], ["x"]], [{"a", "b", "c"}, {"y"}], k=2) == [0.5, 0.0]


def _kind(f1: float, recall: float) -> dict:
    return {"tags_grade2": {"f1": f1}, "neighbours": {"recall@10": recall}}


def test_targets_compare_each_image_kind_with_the_better_of_its_text_and_the_icon_and_say_by_how_much():
    gold = [{"games"}, {"mail"}, {"games"}, {"mail"}]
    right = [{"games"}, {"mail"}, {"games"}, {"mail"}]
    wrong_once = [{"games"}, {"mail"}, {"games"}, {"games"}]
    strong = {k: right for k in KINDS} | {"long_text_image": wrong_once, "image_only": [set()] * 4}
    recalls = {k: [0.5, 0.5] for k in KINDS}
    kinds = {k: _kind(1.0, 0.5) for k in KINDS} | {"long_text_image": _kind(0.75, 0.5), "image_only": _kind(0.0, 0.1)}
    out = kind_targets(kinds, {"f1": 0.5}, {"gold": gold, "popular": [{"games"}] * 4, "strong": strong,
                                        "recalls": recalls})
    listing = out["long_text_image tag_f1"]
    assert listing["bar_kind"] == "long_text" and not listing["met"] and listing["difference"] == -0.25
    assert listing["interval_95"][0] < -0.25 < 0 <= listing["interval_95"][1]  # one item of four: either way
    assert out["short_text_image tag_f1"]["met"] and out["short_text_image tag_f1"]["difference"] == 0
    assert out["long_text_image neighbour_recall@10"]["met"]
    icon = out["image_only tag_f1 vs most popular"]
    assert not icon["met"] and icon["difference"] == -0.5 and icon["bar_kind"] == "most_popular_3"
