"""Caption features: a description from the graded tags, hashed into a bounded, versioned id space."""

from __future__ import annotations

import msgpack

from corpora import samples
from enrich.assembly import make_backend, make_pipeline
from enrich.pipeline import Enriched, RawEvent, SourceRef
from enrich.schemas import TagGrade
from enrich.tagging.captions import CaptionHasher, describe


def test_the_description_reads_the_tags_strong_first_with_kind_and_media():
    tags = [TagGrade("field::arts", 1, 0.6), TagGrade("use::editing", 2, 0.9), TagGrade("works-with::image", 2, 0.8)]
    assert describe("image_post", tags, 2, False) == (
        "image post, 2 images. strong: use: editing; works with: image. weak: field: arts")
    assert describe("video", [], 0, True) == "video, video"
    assert describe("article", [TagGrade("game::toys", 1, 0.5)], 0, False) == "article, text only. weak: game: toys"


def test_feature_ids_are_stable_bounded_distinct_and_versioned():
    h = CaptionHasher(buckets=1024, max_features=8)
    text = "strong: use: editing; works with: image image"
    ids = h.features(text)
    assert ids == CaptionHasher(buckets=1024, max_features=8).features(text)  # no per-process salt
    assert len(ids) == len(set(ids)) == 8 and all(0 <= i < 1024 for i in ids)
    assert h.tokens("Works with: image")[-2:] == ["works with", "with image"]
    big = CaptionHasher(buckets=1 << 18)
    assert big.version != h.version
    # the version keys the hash: another recipe or bucket count gives another id space
    assert [big.feature_id(t) for t in h.tokens(text)] != [h.feature_id(t) for t in h.tokens(text)]
    assert big.features("") == []


def test_the_pipeline_publishes_caption_features_and_their_version(model_settings):
    p = make_pipeline(model_settings, make_backend(model_settings))
    for e in samples.vocab_entries():
        p.vocabulary.apply(e)
    items = samples.sample_items(3)
    out = p.run([RawEvent(None, msgpack.packb(i), SourceRef("items.new", 0, n)) for n, i in enumerate(items)])
    hasher = CaptionHasher(model_settings.caption_buckets)
    for o, it in zip(out, items, strict=True):
        assert isinstance(o, Enriched)
        assert o.record.caption == describe(it["kind"], o.record.tags, len(it.get("images", [])), False)
        assert o.record.caption_features == hasher.features(o.record.caption) and o.record.caption_features
    assert p.versions.captions == hasher.version
    off = make_pipeline(model_settings.updated(caption_buckets=0), make_backend(model_settings))
    rec = off.run([RawEvent(None, msgpack.packb(items[0]), SourceRef("items.new", 0, 0))])[0].record
    assert rec.caption is None and rec.caption_features is None and off.versions.captions == ""
