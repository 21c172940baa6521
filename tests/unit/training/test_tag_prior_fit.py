"""How the prior's fit chooses the longest text beside which the tagger still reads an item's image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from enrich.models.base import TagScores
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


def _choose(gold: list[set[str]], texts: list[str]) -> dict:
    val = [_item(t) for t in texts]
    tagger = ReadsTheImageAsGames()
    scores = tagger.score(val, [["games", "mail"]] * len(val))
    view = PriorView(["games", "mail"], np.zeros((len(val), 2), np.float32), np.zeros((len(val), 2), np.float32),
                     np.zeros(2, bool))  # no exemplar carries them: the tagger's own grades decide
    return image_text_chars(val, gold, scores, view, DecisionHead.unfitted(), tagger, list(range(len(val))),
                            say=lambda _m: None)


def test_the_image_is_read_beside_short_texts_and_not_beside_long_ones_where_that_scores_best():
    long_text, short_text = "x" * 150, "y" * 20
    chosen = _choose([{"mail"}, {"games"}], [long_text, short_text])  # the image misleads only the long one
    assert chosen["tagger_image_text_chars"] == 100  # the longest limit under 150 on the grid
    f1 = chosen["tagger_image_text_chars_validation_f1"]
    assert f1["None"] < f1["100"] and f1["0"] < f1["100"]


def test_where_the_image_never_hurts_it_is_always_read():
    chosen = _choose([{"games"}, {"games"}], ["x" * 150, "y" * 20])
    assert chosen["tagger_image_text_chars"] is None
