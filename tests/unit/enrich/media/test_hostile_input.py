"""No input may stop a partition: the hostile corpus through the real pipeline, the decoder sandbox's
bounds, per-item isolation of failures, dead letters that fit the broker, and a vocabulary that
refuses poison."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hostile_corpus import all_cases, item_event, long_clip, solid
from PIL import Image

from corpora import samples
from enrich import metrics
from enrich.assembly import make_pipeline
from enrich.errors import InvalidItem
from enrich.media.decode import MediaBudget, decode_image
from enrich.media.images import square_pixels
from enrich.media.sandbox import MediaDecoder, SandboxSpec
from enrich.media.video import VideoSpec, keyframes
from enrich.models.inference import OnnxRuntimeBackend
from enrich.pipeline import Enriched, RawEvent, SourceRef, dead_letter
from enrich.schemas import DeadLetter, VocabEntry, encode, vector_bytes
from streams.vocab_feed import VocabularyFeed


def events(raws: list[bytes], key: bytes | None = None) -> list[RawEvent]:
    return [RawEvent(key, raw, SourceRef("items.new", 3, k)) for k, raw in enumerate(raws)]


@pytest.fixture(scope="module", params=["tiny", "small"])
def pipeline(request):
    settings = request.getfixturevalue("model_settings" if request.param == "tiny" else "small_model_settings")
    p = make_pipeline(settings, OnnxRuntimeBackend(settings.models_path))
    for e in samples.vocab_entries():
        p.vocabulary.apply(e)
    yield p
    p.close()


def test_every_hostile_input_is_dead_lettered_with_its_reason_and_the_rest_enriched(pipeline):
    cases = all_cases()
    good = [msgpack.packb(i, use_bin_type=True) for i in samples.sample_items(4, seed=11)]
    raws = [c.event for c in cases] + good
    out = pipeline.run(events(raws))
    assert len(out) == len(raws)
    wrong = []
    for case, o in zip(cases, out, strict=False):
        got = o.reason if isinstance(o, DeadLetter) else None
        if got != case.reason:
            wrong.append((case.name, case.reason, got, getattr(o, "detail", "")))
    assert not wrong, wrong
    assert all(isinstance(o, Enriched) for o in out[len(cases):])
    for o in out:
        if isinstance(o, DeadLetter):
            assert o.detail and o.stage in ("decode", "preprocess")
            assert len(encode(o)) <= 1_000_000
            assert o.original_sha256 == hashlib.sha256(raws[o.source_offset]).hexdigest()


def test_a_dead_letter_that_would_pass_the_broker_limit_is_cut_and_says_so():
    raw = item_event("too-long", kind="article", title="x" * 997_000)
    ev = RawEvent(b"k" * 5000, raw, SourceRef("items.new", 0, 7))
    d = dead_letter(ev, InvalidItem("field_too_large", "y" * 50_000), "too-long", max_message_bytes=1_000_000)
    assert len(encode(d)) <= 1_000_000 - 512
    assert d.original_truncated and d.original_bytes == len(raw) and raw.startswith(d.original)
    assert d.original_sha256 == hashlib.sha256(raw).hexdigest()
    assert d.key_truncated and len(d.key) == 1024 and len(d.detail) < 2100
    small = dead_letter(RawEvent(b"k", b"abc", ev.source), InvalidItem("not_msgpack", "x"))
    assert small.original == b"abc" and not small.original_truncated and small.original_bytes == 3


def test_the_decoder_is_killed_past_its_time_budget_and_replaced():
    decoder = MediaDecoder(sandbox=SandboxSpec(workers=1, timeout_s=0.3))
    try:
        t0 = time.monotonic()
        with pytest.raises(InvalidItem) as e:
            decoder.decode([], long_clip())  # 3,000 frames: seconds of work
        assert e.value.reason == "media_decode_timeout" and time.monotonic() - t0 < 5
        assert decoder.decode([solid("PNG", 64)], None)[0].size == (64, 64)
    finally:
        decoder.close()


def test_the_decoders_memory_limit_is_the_items_reason_not_the_workers_memory():
    decoder = MediaDecoder(sandbox=SandboxSpec(workers=1, memory_mb=200))
    try:
        with pytest.raises(InvalidItem) as e:
            decoder.decode([solid("WEBP", 4000, lossless=True)], None)  # 64 MB of RGBA, twice
        assert e.value.reason == "media_memory_budget"
        assert decoder.decode([solid("PNG", 64)], None)[0].size == (64, 64)
    finally:
        decoder.close()


def test_a_codec_outside_the_allow_list_is_refused_before_any_probe_decodes_its_frame():
    """A PNG-in-MOV whose header says 64x48 holds a 15000x15000 frame: FFmpeg's stream probe decoded it
    (900 MB, 2-3 s) before its codec was refused. The decoder's peak memory now stays near its idle size."""
    from hostile_corpus import png_in_mov

    decoder = MediaDecoder(sandbox=SandboxSpec(workers=1, memory_mb=384))
    try:
        decoder.decode([solid("PNG", 8)], None)  # start the child
        child = decoder._idle.queue[0]
        with pytest.raises(InvalidItem) as e:
            decoder.decode([], png_in_mov())
        assert e.value.reason == "video_codec_not_allowed", e.value
        status = Path(f"/proc/{child.proc.pid}/status").read_text()
        peak_mb = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1]) / 1024
        assert peak_mb < 250, peak_mb
    finally:
        decoder.close()


def test_a_frame_larger_than_its_header_says_is_refused_by_the_decoder_before_it_is_allocated():
    budget = MediaBudget(max_image_pixels=64 * 40)  # the clip's frames are 64x48: over it
    with pytest.raises(InvalidItem) as e:
        keyframes(long_clip(frames=3, size=(64, 48)), VideoSpec(), budget)
    assert e.value.reason == "video_frame_too_large" and "64x48" in e.value.detail


def test_a_decoder_that_dies_mid_item_is_that_items_dead_letter_and_is_replaced():
    decoder = MediaDecoder(sandbox=SandboxSpec(workers=1, timeout_s=30))
    decoder.decode([solid("PNG", 8)], None)  # start the child
    child = decoder._idle.queue[0]
    result: list[BaseException] = []

    def work() -> None:
        try:
            decoder.decode([], long_clip())
        except InvalidItem as exc:
            result.append(exc)

    t = threading.Thread(target=work)
    t.start()
    # the decoder is checked out for the clip (its decoding takes 0.2 to 0.4 s here): kill it then, not after a
    # fixed sleep that a fast machine outlasts
    deadline = time.monotonic() + 5
    while decoder._idle.qsize() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.proc.pid, 9)  # what a segfault in a decoder looks like from here
    t.join(30)
    try:
        assert result and result[0].reason == "media_decoder_crashed" and "SIGKILL" in result[0].detail
        assert decoder.decode([solid("PNG", 64)], None)[0].size == (64, 64)
    finally:
        decoder.close()


def test_images_are_reduced_while_decoded_and_keep_their_aspect():
    budget = MediaBudget(work_pixels=256 * 256)
    img = decode_image(solid("JPEG", 4000, quality=20), budget)
    assert img.mode == "RGB" and img.width * img.height <= 256 * 256 and img.size == (256, 256)
    wide = io.BytesIO()
    Image.new("RGB", (3000, 100), (1, 2, 3)).save(wide, "PNG")
    w, h = decode_image(wide.getvalue(), budget).size
    assert w * h <= 256 * 256 and abs(w / h - 30) < 0.5


def test_a_transparent_png_gives_the_same_pixels_to_training_and_serving():
    buf = io.BytesIO()
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (200, 20, 20, 255)  # a red square on a transparent field
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    served = square_pixels([decode_image(buf.getvalue())], 32)
    trained = square_pixels([Image.open(io.BytesIO(buf.getvalue()))], 32)  # the training path opens files
    np.testing.assert_array_equal(served, trained)
    assert served[:, :, 0, 0].tolist() == [[1.0, 1.0, 1.0]]  # transparent became white, not black


def test_one_poison_item_in_a_batch_does_not_stop_the_others(pipeline, monkeypatch):
    raws = [msgpack.packb(i, use_bin_type=True) for i in samples.sample_items(7, seed=3)]
    poison = msgpack.packb(samples.sample_items(1, seed=4)[0] | {"id": "poison", "text": "poison pill"},
                           use_bin_type=True)
    real_score = pipeline.tagger.score
    calls = []

    def score(items, candidates):
        calls.append(len(items))
        if any("poison pill" in it.text for it in items):
            raise IndexError("a bug that only this item triggers")
        return real_score(items, candidates)

    monkeypatch.setattr(pipeline.tagger, "score", score)
    out = pipeline.run(events(raws[:3] + [poison] + raws[3:]))
    dead = [o for o in out if isinstance(o, DeadLetter)]
    assert len(dead) == 1 and dead[0].item_id == "poison" and dead[0].reason == "internal_error"
    assert dead[0].stage == "model" and "IndexError: a bug that only this item triggers" in dead[0].detail
    assert sorted(o.record.item_id for o in out if isinstance(o, Enriched)) == sorted(
        msgpack.unpackb(r)["id"] for r in raws)
    assert len(calls) <= 1 + 2 * 3  # halving: log2(8) rounds of two, not one call per item


def test_a_batch_past_its_pixel_budget_is_enriched_in_rounds(model_settings):
    budget = 20_000
    s = model_settings.updated(max_batch_pixels=budget)
    p = make_pipeline(s, OnnxRuntimeBackend(s.models_path))
    rounds: list[list[int]] = []
    real_embed = p.embedder.embed
    p.embedder.embed = lambda items: rounds.append([it.pixels for it in items]) or real_embed(items)  # type: ignore
    try:
        raws = [item_event(f"px-{k}", images=[solid("PNG", 150)]) for k in range(5)]
        out = p.run(events(raws))
        assert all(isinstance(o, Enriched) for o in out) and len(out) == 5
        assert sum(len(r) for r in rounds) == 5 and len(rounds) >= 2
        assert all(sum(r) <= budget for r in rounds)
        assert all(px <= p.config.media.work_pixels for r in rounds for px in r)  # reduced while decoded
    finally:
        p.close()


def test_bad_vocabulary_records_are_skipped_counted_dead_lettered_and_never_applied(model_settings):
    p = make_pipeline(model_settings, OnnxRuntimeBackend(model_settings.models_path))
    vocab = p.vocabulary
    letters: list[DeadLetter] = []
    feed = VocabularyFeed(model_settings, vocab, dead_letters=letters.append)
    for e in samples.vocab_entries():
        vocab.apply(e)
    before = vocab.snapshot().tags
    dim = p.embedder.meta.hidden_size

    def record(tag: str, proto: bytes) -> bytes:
        return encode(VocabEntry(tag, prototype=proto, prototype_embedder=p.embedder.version))

    def rejected(reason: str) -> float:
        return metrics.VOCAB_REJECTED.labels(reason)._value.get()

    start = {r: rejected(r) for r in ("bad_prototype", "bad_tag", "not_msgpack")}
    # the reported 75-byte poison first
    feed._apply(b"short", record("short", vector_bytes(np.ones(dim - 1))), "tags.vocab", 0, 1)
    feed._apply(b"nan", record("nan", vector_bytes(np.full(dim, np.nan))), "tags.vocab", 0, 2)
    feed._apply(b"zero", record("zero", vector_bytes(np.zeros(dim))), "tags.vocab", 0, 3)
    feed._apply(b"\xff\xfe not utf-8", None, "tags.vocab", 0, 4)  # a tombstone whose key is not a tag
    feed._apply(b"x", b"\xc1 garbage", "tags.vocab", 0, 5)
    assert rejected("bad_prototype") - start["bad_prototype"] == 3
    assert rejected("bad_tag") - start["bad_tag"] == 1 and rejected("not_msgpack") - start["not_msgpack"] == 1
    assert vocab.snapshot().tags == before
    assert [(d.reason, d.source_offset) for d in letters] == [("bad_prototype", 1), ("bad_prototype", 2),
                                                               ("bad_prototype", 3), ("bad_tag", 4),
                                                               ("not_msgpack", 5)]
    feed._apply(b"good", record("good-new-tag", vector_bytes(np.ones(dim))), "tags.vocab", 0, 6)  # it goes on
    assert "good-new-tag" in vocab.snapshot().tags
    out = p.run(events([msgpack.packb(samples.sample_items(1)[0], use_bin_type=True)]))
    assert isinstance(out[0], Enriched)
    p.close()


def test_the_decoder_process_gets_no_secrets_and_no_working_directory(monkeypatch):
    monkeypatch.setenv("ENRICH_SASL_PASSWORD", "hunter2")
    decoder = MediaDecoder(sandbox=SandboxSpec(workers=1))
    try:
        decoder.decode([solid("PNG", 8)], None)
        child = decoder._idle.queue[0]
        environ = open(f"/proc/{child.proc.pid}/environ", "rb").read()
        assert b"hunter2" not in environ and b"ENRICH_" not in environ
        assert os.readlink(f"/proc/{child.proc.pid}/cwd") == "/"
    finally:
        decoder.close()
