import numpy as np

from enrich.schemas import VocabEntry
from enrich.tags import TagVocabulary


def _embed(texts):
    # deterministic unit vectors: one axis per known word
    axes = {"cats": 0, "dogs": 1, "jazz": 2, "kafka": 3}
    out = np.zeros((len(texts), 4), np.float32)
    for i, t in enumerate(texts):
        out[i, axes[t.split(":")[0]]] = 1
    return out


def test_candidates_rank_by_similarity_and_follow_updates():
    v = TagVocabulary(_embed)
    for t in ("cats", "dogs", "jazz"):
        v.apply(VocabEntry(t))
    q = np.array([[0.1, 0.9, 0.3, 0.0]], np.float32)
    assert v.snapshot().candidates(q, 2) == [["dogs", "jazz"]]
    v.apply(VocabEntry("dogs", deleted=True))
    v.apply(VocabEntry("kafka"))
    assert v.snapshot().candidates(q, 5) == [["jazz", "cats", "kafka"]]


def test_empty_vocabulary_gives_no_candidates():
    v = TagVocabulary(_embed)
    assert v.snapshot().candidates(np.ones((2, 4), np.float32), 3) == [[], []]
