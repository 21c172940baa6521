"""What the packed tagger learns from an emoji: its subcategory and its name, against hard negatives."""

from __future__ import annotations

from emoji_package import write_emoji_package

from corpora.emoji import load_emoji
from training.packed_tagger import emoji_labels


def test_an_emoji_is_labelled_with_its_subcategory_and_name_against_its_categorys_other_subcategories(tmp_path):
    emoji = load_emoji(write_emoji_package(tmp_path / "pkg", 40))
    gold, negatives = emoji_labels(emoji, seed=0)
    by_sub: dict[str, set[str]] = {}
    for e in emoji:
        by_sub.setdefault(e.subcategory, set()).update((e.subcategory, e.name))
    for e, g, neg in zip(emoji, gold, negatives, strict=True):
        assert g == [e.subcategory, e.name]
        assert neg and not set(neg) & by_sub[e.subcategory]  # no name of its own subcategory: they would fit
        same_category = {x.subcategory for x in emoji if x.category == e.category} | {
            x.name for x in emoji if x.category == e.category}
        assert set(neg) <= same_category  # hard: from its own category
        assert e.category not in g + neg  # the category is the held-out vocabulary
    assert emoji_labels(emoji, seed=0) == (gold, negatives)
