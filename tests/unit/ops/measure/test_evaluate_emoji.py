"""`enrich eval --emoji`: held-out image-only items tagged from a vocabulary that replaces the live one."""

from __future__ import annotations

from emoji_package import write_emoji_package

from corpora.emoji import load_emoji
from ops.measure.evaluate_emoji import VOCABULARIES, format_emoji, run_emoji_eval


def test_held_out_emoji_are_tagged_only_from_their_own_vocabulary_beside_the_baselines(small_model_settings,
                                                                                         tmp_path):
    pkg = write_emoji_package(tmp_path / "pkg", 60)
    test = [e for e in load_emoji(pkg) if e.split == "test"]
    report = run_emoji_eval(small_model_settings, pkg, say=lambda _m: None)
    assert report["held_out_emoji"] == len(test) > 0
    assert set(report["vocabularies"]) == set(VOCABULARIES)
    subs = report["vocabularies"]["subcategory"]
    assert subs["tags"] == 8  # four colours x two shapes: the debtags vocabulary is gone
    for row in report["vocabularies"].values():
        for name in ("tags_grade2", "most_popular_tag", "zero_shot_top1"):
            assert 0.0 <= row[name]["f1"] <= 1.0
        assert 0 <= row["tags_grade2"]["items_without_strong_tag"] <= len(test)
    for name, row in report["vocabularies"].items():
        vocabulary = {e.subcategory if name == "subcategory" else e.category for e in load_emoji(pkg)}
        assert row["examples"] and all(tag in vocabulary for ex in row["examples"] for tag, _ in ex["graded"])
    assert report["vocabularies"]["category"]["tags"] == 2
    assert "held-out emoji" in format_emoji(report)
