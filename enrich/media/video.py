"""Video items: keyframes sampled with PyAV, then embedded and tagged as a multi-image item.

A clip is untrusted bytes, decoded inside a budget:

- the container is sniffed from its magic bytes and must be MP4/MOV or Matroska/WebM; FFmpeg is
  then told that demuxer, so it never probes the content into concat, SDP, playlists or
  protocols, and never reads a file or a socket;
- FFmpeg's stream probe (inside ``av.open``) decodes a frame of each stream to learn its format; it
  is allowed only the decoders of the codec allow-list (``codec_whitelist``) and only frames within
  the image pixel budget (``max_pixels``), so a PNG or a huge frame in a MOV is never decoded there
  (one 15000x15000 PNG frame cost 900 MB in the probe before it was refused by name);
- the codec must be an ordinary video codec, and the frame size read from the stream header
  within the image pixel budget before a frame is decoded; the decoder itself refuses a frame
  beyond the budget whatever the header declared (``max_pixels`` again: the real size, checked by
  FFmpeg before it allocates the frame);
- frames are scaled down by libswscale as they are decoded, and at most ``max_kept`` of them are
  held (thinned evenly as the clip goes on), so a long clip costs no more memory than a short one;
- at most ``max_decoded_frames`` frames and ``max_seconds`` of wall time: frames found by then are
  kept. The hard bound on a decode that hangs inside FFmpeg is the sandbox's kill
  (``enrich/media/sandbox.py``).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from PIL import Image

from enrich.errors import InvalidItem
from enrich.media.decode import MediaBudget, check_pixels, fit_pixels

STRATEGIES = ("uniform", "keyframes")
ALLOWED_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mpeg1video"})
_EBML = b"\x1a\x45\xdf\xa3"
_OVER_BUDGET = "exceeds specified max pixel count"  # FFmpeg's words when max_pixels refuses a frame


def _quiet_errors_only() -> None:
    """FFmpeg's log at error level: PyAV then puts its last error line into the exception it raises, which is
    how a frame refused by ``max_pixels`` is told from a broken one."""
    import av.logging

    if av.logging.get_level() != av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)


@dataclass(frozen=True)
class VideoSpec:
    frames: int = 4  # frames kept per video
    strategy: str = "uniform"  # "uniform": evenly spaced in time; "keyframes": spread over the I-frames
    max_seconds: float = 2.0  # wall-clock decode budget per video
    max_decoded_frames: int = 3_000  # frames decoded at most (a long video at full rate is cut here)
    max_side: int = 448  # frames are downscaled to this longest side
    max_kept: int = 64  # decoded frames held at once while sampling

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"video strategy {self.strategy!r}: expected one of {STRATEGIES}")
        if self.max_kept < 2 * self.frames:
            raise ValueError(f"max_kept {self.max_kept} must be at least twice frames ({self.frames})")


def container_format(data: bytes) -> str:
    """The demuxer FFmpeg is allowed to use on these bytes, or ``InvalidItem``."""
    if data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == _EBML:
        return "matroska"
    raise InvalidItem("video_container_not_allowed", f"the video is not MP4/MOV or Matroska/WebM "
                      f"(starts with {data[:12].hex()})", stage="preprocess")


def _pick(n_available: int, k: int) -> list[int]:
    if n_available <= k:
        return list(range(n_available))
    return sorted({int((i + 0.5) * n_available / k) for i in range(k)})


class _EvenSample:
    """Frames taken every ``stride``-th of those decoded; when full, every other one is dropped and the
    stride doubles, so what is held always spans the clip evenly."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.stride = 1
        self.seen = 0
        self.frames: list[tuple[float, Image.Image]] = []

    def wants_next(self) -> bool:
        return self.seen % self.stride == 0

    def offer(self, t: float, img: Image.Image | None) -> None:
        if img is not None:
            self.frames.append((t, img))
            if len(self.frames) >= self.capacity:
                self.frames = self.frames[::2]
                self.stride *= 2
        self.seen += 1


def keyframes(data: bytes, spec: VideoSpec = VideoSpec(), budget: MediaBudget = MediaBudget()) -> list[Image.Image]:
    """``spec.frames`` frames of the video as RGB images, or ``InvalidItem`` with the reason."""
    import av
    import av.logging

    fmt = container_format(data)
    deadline = time.monotonic() + spec.max_seconds
    _quiet_errors_only()
    # The probe may open only the allowed decoders, on frames within the budget; drefs off: an MP4 may name
    # other files as its media data.
    options = {"codec_whitelist": ",".join(sorted(ALLOWED_CODECS)), "max_pixels": str(budget.max_image_pixels)}
    if fmt == "mp4":
        options["enable_drefs"] = "0"
    try:
        with av.logging.Capture():  # crafted input makes FFmpeg log; the reason goes to the dead letter instead
            container = av.open(io.BytesIO(data), mode="r", format=fmt, options=options)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the demuxer raises many types on crafted input
        raise InvalidItem("video_undecodable", f"cannot open the video: {type(exc).__name__}: {exc}",
                          stage="preprocess") from None
    try:
        with av.logging.Capture():
            return _sample(container, spec, budget, deadline)
    finally:
        container.close()


def _sample(container: object, spec: VideoSpec, budget: MediaBudget, deadline: float) -> list[Image.Image]:
    import av

    streams = container.streams.video  # type: ignore[attr-defined]
    if not streams:
        raise InvalidItem("video_undecodable", "the file has no video stream", stage="preprocess")
    stream = streams[0]
    ctx = stream.codec_context
    if ctx.name not in ALLOWED_CODECS:
        raise InvalidItem("video_codec_not_allowed", f"codec {ctx.name!r} is not one of {sorted(ALLOWED_CODECS)}",
                          stage="preprocess")
    if ctx.width and ctx.height:  # some streams only know their size once a frame is decoded
        _check_frame(ctx.width, ctx.height, budget, "the stream header")
    ctx.options = {"max_pixels": str(budget.max_image_pixels)}  # the real frame size, before it is allocated
    ctx.thread_type = "AUTO"
    ctx.thread_count = 2  # each decoding thread holds frames of its own
    if spec.strategy == "keyframes":
        ctx.skip_frame = "NONKEY"
    held = _EvenSample(spec.max_kept)
    timed_out = False
    decoded = 0
    try:
        for frame in container.decode(stream):  # type: ignore[attr-defined]
            _check_frame(frame.width, frame.height, budget, f"frame {decoded}")
            img = None
            if held.wants_next():
                w, h = fit_pixels(frame.width, frame.height, min(spec.max_side ** 2, budget.work_pixels))
                if max(w, h) > spec.max_side:
                    s = spec.max_side / max(w, h)
                    w, h = max(1, round(w * s)), max(1, round(h * s))
                img = frame.to_image(width=w, height=h)  # scaled by libswscale, never RGB at full size
            t = float(frame.time) if frame.time is not None else float(decoded)
            held.offer(t, img)
            decoded += 1
            if decoded >= spec.max_decoded_frames:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
    except (InvalidItem, MemoryError):
        raise
    except (av.FFmpegError, ValueError, IndexError, RuntimeError) as exc:
        if _OVER_BUDGET in str(exc):
            raise InvalidItem("video_frame_too_large", f"frame {decoded} is over the pixel budget of "
                              f"{budget.max_image_pixels:,} px: {str(exc).rpartition('] ')[2].strip()}",
                              stage="preprocess") from None
        if not held.frames:
            raise InvalidItem("video_undecodable", f"decoding failed: {type(exc).__name__}: {exc}",
                              stage="preprocess") from None
    frames = held.frames
    if not frames:
        reason = "video_decode_timeout" if timed_out else "video_undecodable"
        raise InvalidItem(reason, "no frame decoded" + (f" within {spec.max_seconds}s" if timed_out else ""),
                          stage="preprocess")
    if spec.strategy == "uniform" and frames[-1][0] > frames[0][0]:
        # evenly spaced in time: the held frame nearest each target timestamp
        t0, t1 = frames[0][0], frames[-1][0]
        targets = [t0 + (i + 0.5) * (t1 - t0) / spec.frames for i in range(spec.frames)]
        idx = sorted({min(range(len(frames)), key=lambda j: abs(frames[j][0] - t)) for t in targets})
    else:
        idx = _pick(len(frames), spec.frames)
    return [frames[i][1].convert("RGB") for i in idx]


def _check_frame(width: int, height: int, budget: MediaBudget, what: str) -> None:
    check_pixels(width, height, budget, what, empty="video_undecodable", over="video_frame_too_large")
