"""The reference recall indexes: ranking, re-enrichment, ANN quality, semantic-ID prefixes."""

from __future__ import annotations

import numpy as np
import pytest

from ops.recall.index import NeighborIndex, TagIndex

DAY_MS = 24 * 3600 * 1000


def edge(item: str, tag: str, grade: int, prob: float, created: int = 0, enriched: int = 1) -> dict:
    return {"item_id": item, "tag": tag, "grade": grade, "prob": prob, "created_at": created, "enriched_at": enriched}


def neighbor(item: str, vec: np.ndarray, sid: list[int], enriched: int = 1) -> dict:
    return {"item_id": item, "vector": vec.astype(np.float32).tobytes(), "semantic_id": sid, "enriched_at": enriched}


def test_tags_rank_by_grade_then_fresh_probability() -> None:
    idx = TagIndex(half_life_s=DAY_MS / 1000)
    now = 10 * DAY_MS
    idx.apply_edge(edge("weak", "audio", 1, 0.99, created=now))
    idx.apply_edge(edge("old-strong", "audio", 2, 0.95, created=now - 2 * DAY_MS))  # decayed to 0.2375
    idx.apply_edge(edge("new-strong", "audio", 2, 0.60, created=now))
    idx.apply_edge(edge("other", "video", 2, 0.9, created=now))
    hits = idx.query("audio", k=10, now_ms=now)
    assert [h.item_id for h in hits] == ["new-strong", "old-strong", "weak"]
    assert hits[1].score == pytest.approx(0.95 * 0.25)
    assert [h.item_id for h in idx.query("audio", k=10, now_ms=now, min_grade=2)] == ["new-strong", "old-strong"]
    assert idx.query("audio", k=1, now_ms=now)[0].item_id == "new-strong"
    assert idx.query("unknown") == []


def test_re_enrichment_replaces_an_items_edges_in_any_arrival_order() -> None:
    idx = TagIndex()
    idx.apply_edge(edge("a", "audio", 2, 0.9, enriched=1))
    idx.apply_edge(edge("a", "video", 1, 0.8, enriched=1))
    idx.apply_edge(edge("a", "images", 2, 0.7, enriched=2))  # newer enrichment: old edges go
    idx.apply_edge(edge("a", "video", 2, 0.9, enriched=1))  # a late record of the old one: ignored
    assert idx.tags_of("a") == {"images"}
    assert idx.query("audio") == [] and idx.query("video") == []
    # a newer enrichment with no tags at all arrives only as the neighbour record
    idx.apply_enrichment("a", 3)
    assert idx.tags_of("a") == set() and idx.query("images") == []
    # replays of the same enrichment add up to the same set
    idx.apply_edge(edge("a", "text", 2, 0.9, enriched=3))
    idx.apply_edge(edge("a", "text", 2, 0.9, enriched=3))
    assert [h.item_id for h in idx.query("text")] == ["a"]


def test_ann_index_finds_the_exact_neighbours_and_queries_by_item_or_vector() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = NeighborIndex()
    for i, v in enumerate(x):
        idx.apply(neighbor(f"i{i}", v, [i % 4, i % 7, i]))
    assert len(idx) == 500
    recall = []
    for q in range(0, 500, 25):
        exact = {f"i{j}" for j in np.argsort(-(x @ x[q]))[1:11]}
        got = idx.by_item(f"i{q}", 10)
        assert f"i{q}" not in {h.item_id for h in got} and len(got) == 10
        recall.append(len(exact & {h.item_id for h in got}) / 10)
    assert np.mean(recall) >= 0.95
    hits = idx.by_vector(x[7], 3)
    assert hits[0].item_id == "i7" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(KeyError, match="not in the neighbour index"):
        idx.by_item("nope")


def test_re_enrichment_moves_an_item_and_older_records_are_ignored() -> None:
    idx = NeighborIndex()
    a, b, c = np.eye(3, dtype=np.float32)
    idx.apply(neighbor("x", a, [0, 0, 0], enriched=1))
    idx.apply(neighbor("y", b, [1, 0, 0], enriched=1))
    idx.apply(neighbor("z", c, [2, 0, 0], enriched=1))
    assert idx.by_vector(b, 1)[0].item_id == "y"
    assert idx.apply(neighbor("x", b, [1, 0, 1], enriched=2))  # x now looks like y
    assert not idx.apply(neighbor("x", a, [0, 0, 0], enriched=1))  # the late old record
    assert len(idx) == 3
    assert {h.item_id for h in idx.by_vector(b, 2)} == {"x", "y"}
    assert idx.by_semantic_id("y", 5)[0].item_id == "x"  # prefix moved with it
    with pytest.raises(ValueError, match="different embedder versions"):
        idx.apply(neighbor("w", np.ones(4, np.float32), [0], enriched=1))


def test_semantic_id_prefix_index_ranks_by_shared_prefix_length() -> None:
    idx = NeighborIndex()
    v = np.ones(4, np.float32)
    for item, sid in [("q", [1, 2, 3, 0]), ("same3", [1, 2, 3, 1]), ("same2", [1, 2, 9, 0]),
                      ("same1", [1, 5, 5, 0]), ("none", [7, 7, 7, 0])]:
        idx.apply(neighbor(item, v, sid))
    hits = idx.by_semantic_id("q", 10)
    assert [(h.item_id, h.score) for h in hits] == [("same3", 3.0), ("same2", 2.0), ("same1", 1.0)]
    assert [h.item_id for h in idx.by_semantic_id("q", 2)] == ["same3", "same2"]
