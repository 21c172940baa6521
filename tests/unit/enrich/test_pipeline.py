import msgpack
import numpy as np
import pytest

from corpora import samples
from enrich.assembly import make_backend, make_pipeline
from enrich.errors import BackendUnavailable
from enrich.pipeline import DeadLetter, Enriched, RawEvent, SourceRef
from enrich.schemas import VocabEntry, vector_from_bytes


@pytest.fixture(scope="module")
def pipeline(model_settings):
    p = make_pipeline(model_settings, make_backend(model_settings))
    for e in samples.vocab_entries():
        p.vocabulary.apply(e)
    return p


def _events(records):
    return [RawEvent(None, raw, SourceRef("items.new", 0, i)) for i, raw in enumerate(records)]


def test_valid_items_enriched_and_bad_ones_dead_lettered_in_order(pipeline):
    items = samples.sample_items(6)
    bad = samples.malformed_events()
    raws = [msgpack.packb(i) for i in items] + [raw for _, raw in bad]
    out = pipeline.run(_events(raws))
    assert len(out) == len(raws)
    for o, it in zip(out[: len(items)], items, strict=True):
        assert isinstance(o, Enriched) and o.record.item_id == it["id"]
        assert o.record.dim == 64 and len(vector_from_bytes(o.record.embedding)) == 64
        assert len(o.record.semantic_id) == 3
        assert all(t.grade >= 1 for t in o.record.tags)
        assert [e.tag for e in o.tag_edges] == [t.tag for t in o.record.tags]
        assert o.neighbor.vector == o.record.embedding
        assert o.record.versions == pipeline.versions
    for o, (reason, raw) in zip(out[len(items):], bad, strict=True):
        assert isinstance(o, DeadLetter)
        assert o.reason == reason and o.original == raw and o.source_topic == "items.new"
    assert {"decode", "preprocess", "embed", "candidates", "tag", "semantic_id"} <= set(pipeline.last_timings)


def test_replay_is_idempotent(pipeline):
    raws = [msgpack.packb(i) for i in samples.sample_items(4)]
    a, b = pipeline.run(_events(raws)), pipeline.run(_events(raws[::-1]))[::-1]
    for x, y in zip(a, b, strict=True):
        assert x.record.semantic_id == y.record.semantic_id
        np.testing.assert_allclose(vector_from_bytes(x.record.embedding), vector_from_bytes(y.record.embedding),
                                   atol=1e-5)
        assert [t.tag for t in x.record.tags] == [t.tag for t in y.record.tags]


def test_min_grade_two_keeps_only_strong_tags(model_settings):
    s = model_settings.updated(min_grade=2, candidate_tags=30)
    p = make_pipeline(s, make_backend(s))
    for e in samples.vocab_entries():
        p.vocabulary.apply(e)
    out = p.run(_events([msgpack.packb(i) for i in samples.sample_items(3)]))
    assert all(t.grade == 2 for o in out for t in o.record.tags)


def test_vocabulary_change_is_used_by_the_next_batch(pipeline):
    raws = [msgpack.packb(samples.sample_items(1)[0])]
    pipeline.vocabulary.apply(VocabEntry("brand-new-tag"))
    s = pipeline.vocabulary.snapshot()
    assert "brand-new-tag" in s.tags
    pipeline.vocabulary.apply(VocabEntry("brand-new-tag", deleted=True))
    out = pipeline.run(_events(raws))
    assert all(t.tag != "brand-new-tag" for t in out[0].record.tags)


def test_unavailable_backend_fails_the_whole_batch(model_settings):
    class Down:
        def infer(self, model, inputs):
            raise BackendUnavailable("down")

        def close(self):
            pass

    p = make_pipeline(model_settings, make_backend(model_settings))
    p.embedder.backend = Down()
    with pytest.raises(BackendUnavailable):
        p.run(_events([msgpack.packb(samples.sample_items(1)[0])]))
