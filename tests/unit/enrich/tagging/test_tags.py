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


def test_threads_snapshotting_at_once_embed_each_pending_tag_once():
    """Two batches in flight both found the same pending tags and embedded them twice (316 embedder requests
    where 157 would do under a 5,000-tag flood); they now share the pending tags out."""
    import threading
    import time

    seen: list[str] = []

    def slow_embed(texts):
        seen.extend(texts)
        time.sleep(0.05)
        return np.ones((len(texts), 4), np.float32) / 2

    v = TagVocabulary(slow_embed)
    tags = [f"tag-{i:03d}" for i in range(200)]
    for t in tags:
        v.apply(VocabEntry(t))
    threads = [threading.Thread(target=v.snapshot, args=(16,)) for _ in range(6)]
    for th in threads:
        th.start()
    while v.pending:  # and the feed's share, a chunk at a time
        v.embed_pending(16)
    for th in threads:
        th.join()
    assert sorted(seen) == tags  # every tag once, none twice
    assert v.snapshot().tags == tags


def test_a_batch_embeds_at_most_its_chunk_and_is_graded_against_the_tags_embedded_so_far():
    v = TagVocabulary(_embed)
    for t in ("cats", "dogs", "jazz", "kafka"):
        v.apply(VocabEntry(t))
    first = v.snapshot(embed_limit=3)
    assert first.tags == ["cats", "dogs", "jazz"] and v.pending == 1
    assert v.snapshot(embed_limit=0).tags == first.tags  # 0: embed nothing, only read
    assert v.snapshot().tags == ["cats", "dogs", "jazz", "kafka"] and v.pending == 0


def test_a_tag_changed_while_it_was_embedded_is_embedded_again():
    v = TagVocabulary(lambda texts: _embed([t.split(" ")[0] for t in texts]))

    def embed_then_change(texts):
        v.apply(VocabEntry("cats", description="a changed description"))  # lands while the first one embeds
        return _embed(texts)

    v._embed = embed_then_change
    v.apply(VocabEntry("cats"))
    assert v.embed_pending() == 0 and v.pending == 1  # the stale vector was not installed
    v._embed = _embed
    assert v.embed_pending() == 1 and v.pending == 0
