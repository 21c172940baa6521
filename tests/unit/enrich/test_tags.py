import numpy as np

from enrich.schemas import VocabEntry
from enrich.tagging.vocabulary import TagVocabulary


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


def test_a_prototype_of_this_embedder_replaces_the_name_and_others_fall_back_to_it():
    embedded = []

    def embed(texts):
        embedded.extend(texts)
        return _embed(texts)

    v = TagVocabulary(embed, embedder="emb-1")
    proto = np.array([0, 0, 3, 4], np.float32)  # unnormalised on purpose: the vocabulary normalises
    v.apply(VocabEntry("cats", prototype=proto.tobytes(), prototype_embedder="emb-1"))
    v.apply(VocabEntry("dogs", prototype=proto.tobytes(), prototype_embedder="emb-0"))  # another space
    v.apply(VocabEntry("jazz"))
    snap = v.snapshot()
    assert sorted(embedded) == ["dogs", "jazz"]
    np.testing.assert_allclose(snap.matrix[snap.tags.index("cats")], [0, 0, 0.6, 0.8])
    np.testing.assert_allclose(snap.matrix[snap.tags.index("dogs")], [0, 1, 0, 0])
    # a new prototype for the same tag is picked up; an unchanged entry is not embedded again
    v.apply(VocabEntry("jazz", prototype=np.array([1, 0, 0, 0], np.float32).tobytes(), prototype_embedder="emb-1"))
    v.apply(VocabEntry("dogs", prototype=proto.tobytes(), prototype_embedder="emb-0"))
    snap = v.snapshot()
    assert sorted(embedded) == ["dogs", "jazz"]
    np.testing.assert_allclose(snap.matrix[snap.tags.index("jazz")], [1, 0, 0, 0])
