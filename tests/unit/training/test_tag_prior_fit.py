"""How the prior's fit chooses the longest text beside which the tagger still reads an item's image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from enrich.models.protocol import TagScores
from enrich.preprocess import PreparedItem
from enrich.schemas import Item
from enrich.tagging.prior import DecisionHead, PriorView
from training.tag_prior import image_text_chars


class ReadsTheImageAsGames:
    """A tagger whose strong tag is "games" when it sees an image and "mail" when it does not."""

    image_pixels = 224 * 224

    def score(self, items, candidates):  # noqa: ANN001, ANN201 - the Tagger interface
        return [TagScores(list(c), np.array([[0.1, 0.1, 0.8] if (t == "games") == bool(it.images) else [0.8, 0.1, 0.1]
                                             for t in c])) for it, c in zip(items, candidates, strict=True)]


def _item(text: str) -> PreparedItem:
    return PreparedItem(Item(id=text[:8], kind="image_post", title="", text=text, created_at=0),
                        text, [Image.new("RGB", (8, 8))])


def _choose(gold: list[set[str]], texts: list[str], kinds: list[str] | None = None) -> dict:
    val = [_item(t) for t in texts]
    tagger = ReadsTheImageAsGames()
    scores = tagger.score(val, [["games", "mail"]] * len(val))
    view = PriorView(["games", "mail"], np.zeros((len(val), 2), np.float32), np.zeros((len(val), 2), np.float32),
                     np.zeros(2, bool))  # no exemplar carries them: the tagger's own grades decide
    return image_text_chars(val, gold, scores, view, DecisionHead.unfitted(), tagger, list(range(len(val))),
                            say=lambda _m: None, kinds=kinds)


def test_the_image_is_read_beside_short_texts_and_not_beside_long_ones_where_that_scores_best():
    long_text, short_text = "x" * 150, "y" * 20
    chosen = _choose([{"mail"}, {"games"}], [long_text, short_text])  # the image misleads only the long one
    assert chosen["tagger_image_text_chars"] == 100  # the longest limit under 150 on the grid
    f1 = chosen["tagger_image_text_chars_validation_f1"]
    assert f1["None"] < f1["100"] and f1["0"] < f1["100"]


def test_a_limit_that_scores_best_overall_but_lowers_one_kind_is_not_chosen():
    # Three listings, where the image misleads two and helps one; three items of another kind, one short and
    # two long, where it helps all three. Read everywhere, the whole scores best, but the listings lose a tag.
    texts = ["x" * 150, "w" * 160, "v" * 170, "y" * 20, "z" * 900, "u" * 950]
    gold = [{"mail"}, {"mail"}, {"games"}, {"games"}, {"games"}, {"games"}]
    overall = _choose(gold, texts)
    assert overall["tagger_image_text_chars"] is None
    kinds = ["long_text_image"] * 3 + ["short_text_image"] * 3
    chosen = _choose(gold, texts, kinds)
    assert chosen["tagger_image_text_chars"] == 100  # under the shortest listing: it reads no listing's image
    by_kind = chosen["tagger_image_text_chars_validation_f1_by_kind"]
    assert by_kind["long_text_image"]["None"] < by_kind["long_text_image"]["not_reading"]
    assert by_kind["short_text_image"]["100"] > by_kind["short_text_image"]["not_reading"]


def test_where_the_image_never_hurts_it_is_always_read():
    chosen = _choose([{"games"}, {"games"}], ["x" * 150, "y" * 20])
    assert chosen["tagger_image_text_chars"] is None


class Unsure:
    """A tagger that calls every candidate a weak 2 (what the packed tagger does with a sticker's new tags)."""

    image_pixels = 0

    def score(self, items, candidates):  # noqa: ANN001, ANN201 - the Tagger interface
        return [TagScores(list(c), np.tile([0.3, 0.3, 0.4], (len(c), 1))) for c in candidates]


def test_the_open_head_learns_that_the_nearest_new_name_is_the_items_tag():
    from enrich.tagging.prior import TagPrior
    from enrich.tagging.vocabulary import VocabSnapshot
    from training.tag_prior import OpenSet, fit_open_head

    rng = np.random.default_rng(0)
    names = rng.normal(size=(12, 8)).astype(np.float32)
    names /= np.linalg.norm(names, axis=1, keepdims=True)
    vocab = VocabSnapshot([f"new-{j}" for j in range(12)], names)
    vectors = names[rng.integers(0, 12, 200)] + rng.normal(0, 0.2, (200, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gold = [{vocab.tags[int(np.argmax(names @ v))]} for v in vectors]  # each item is its nearest name
    val = [PreparedItem(Item(id=str(i), kind="image_post", title="", text="", created_at=0), "",
                        [Image.new("RGB", (8, 8))]) for i in range(200)]
    prior = TagPrior.from_items([["old"]], names[:1], DecisionHead.unfitted(), {"embedder": "e", "tagger": "t"})
    opened = fit_open_head(prior, [OpenSet("names", val, gold, vectors, vocab)], Unsure(), 4, say=lambda _m: None)
    f1 = opened.info["open_validation_f1"]["names without_text"]
    assert f1["head"] > 0.9 > 0.5 > f1["tagger_alone"]  # every candidate a 2: precision 1/4
    assert opened.info["open_weights"]["cosine_below_nearest_new_tag"] < 0
    assert opened.open_head_for(False).threshold == opened.info["open_threshold_without_text"]
