"""Video keyframes: real videos encoded here with PyAV, sampled, bounded, and bad ones dead-lettered."""

from __future__ import annotations

import io

import msgpack
import numpy as np
import pytest

from enrich.errors import InvalidItem
from enrich.media.video import VideoSpec, keyframes
from enrich.pipeline import Enriched, RawEvent, SourceRef
from enrich.schemas import SCHEMA_VERSION, DeadLetter, Limits, decode_item, now_ms

COLOURS = [(230, 20, 20), (20, 200, 20), (20, 20, 230), (240, 240, 20)]


def make_video(seconds_per_colour: float = 1.0, fps: int = 10, codec: str = "mpeg4", gop: int = 5) -> bytes:
    """An MP4 of solid colour segments: red, green, blue, yellow."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        for colour in COLOURS:
            for _ in range(int(seconds_per_colour * fps)):
                arr = np.zeros((48, 64, 3), np.uint8)
                arr[:] = colour
                frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def dominant(img) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.asarray(img).reshape(-1, 3).mean(axis=0))


def closest_colour(img) -> int:
    d = [sum((a - b) ** 2 for a, b in zip(dominant(img), c, strict=True)) for c in COLOURS]
    return int(np.argmin(d))


def test_uniform_sampling_spreads_frames_over_the_whole_video() -> None:
    frames = keyframes(make_video(), VideoSpec(frames=4, strategy="uniform"))
    assert len(frames) == 4
    assert [closest_colour(f) for f in frames] == [0, 1, 2, 3]  # one frame from each second


def test_keyframe_strategy_decodes_only_i_frames() -> None:
    frames = keyframes(make_video(gop=10), VideoSpec(frames=8, strategy="keyframes"))
    assert len(frames) == 4  # 40 frames, an I-frame every 10: only 4 exist
    assert [closest_colour(f) for f in frames] == [0, 1, 2, 3]


def test_frames_are_bounded_in_size_and_count() -> None:
    frames = keyframes(make_video(), VideoSpec(frames=2, max_side=32, max_decoded_frames=12))
    assert all(max(f.size) <= 32 for f in frames)
    # only the first 12 frames (red, then green) were decoded
    assert {closest_colour(f) for f in frames} <= {0, 1}


def test_undecodable_and_streamless_videos_have_reasons() -> None:
    with pytest.raises(InvalidItem) as e:
        keyframes(b"\x00\x00\x00\x18ftypmp42 this is not a video at all")
    assert e.value.reason == "video_undecodable"
    truncated = make_video()[:300]
    with pytest.raises(InvalidItem) as e:
        keyframes(truncated)
    assert e.value.reason == "video_undecodable"


def test_decode_budget_keeps_what_it_has() -> None:
    frames = keyframes(make_video(seconds_per_colour=5), VideoSpec(frames=4, max_seconds=0.0))
    assert len(frames) == 1  # the budget ran out after the first frame


def video_event(item_id: str, video: bytes) -> bytes:
    return msgpack.packb({"schema": SCHEMA_VERSION, "id": item_id, "kind": "video", "title": "a clip",
                          "text": "colours", "video": video, "created_at": now_ms()}, use_bin_type=True)


def test_video_field_is_validated_at_decode() -> None:
    item = decode_item(video_event("v1", b"abc"))
    assert item.video == b"abc"
    with pytest.raises(InvalidItem) as e:
        decode_item(video_event("v2", b"x" * 100), Limits(max_video_bytes=10))
    assert e.value.reason == "video_too_large"


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_video_items_are_enriched_as_multi_image_items_and_bad_ones_dead_lettered(preset, request) -> None:
    from enrich.assembly import make_pipeline
    from enrich.models.inference import OnnxRuntimeBackend

    settings = request.getfixturevalue("model_settings" if preset == "tiny" else "small_model_settings")
    pipeline = make_pipeline(settings, OnnxRuntimeBackend(settings.models_path))
    events = [RawEvent(b"v", video_event("good", make_video()), SourceRef("items.new", 0, 0)),
              RawEvent(b"b", video_event("bad", b"not a video"), SourceRef("items.new", 0, 1))]
    good, bad = pipeline.run(events)
    assert isinstance(good, Enriched) and good.record.item_id == "good"
    assert isinstance(bad, DeadLetter) and bad.reason == "video_container_not_allowed" and bad.stage == "preprocess"
    # the frames reached the model: the vector differs from the same text without the video
    text_only = pipeline.run([RawEvent(b"t", msgpack.packb(
        {"schema": SCHEMA_VERSION, "id": "t", "kind": "article", "title": "a clip", "text": "colours",
         "created_at": now_ms()}, use_bin_type=True), SourceRef("items.new", 0, 2))])[0]
    assert good.record.embedding != text_only.record.embedding
    assert good.record.caption.startswith("video, video")
