"""Video items: keyframes sampled with PyAV, then embedded and tagged as a multi-image item.

Decoding is bounded three ways: the payload size (checked at decode time of the event),
a wall-clock budget per video, and a cap on decoded frames. A video that cannot be
opened, has no video stream, or yields no frame within the budget is dead-lettered with
a reason; one that runs out of budget after some frames keeps the frames it has.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from PIL import Image

from enrich.errors import InvalidItem

STRATEGIES = ("uniform", "keyframes")


@dataclass(frozen=True)
class VideoSpec:
    frames: int = 4  # frames kept per video
    strategy: str = "uniform"  # "uniform": evenly spaced in time; "keyframes": spread over the I-frames
    max_seconds: float = 2.0  # wall-clock decode budget per video
    max_decoded_frames: int = 3_000  # frames decoded at most (a long video at full rate is cut here)
    max_side: int = 448  # frames are downscaled to this longest side

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"video strategy {self.strategy!r}: expected one of {STRATEGIES}")


def _pick(n_available: int, k: int) -> list[int]:
    if n_available <= k:
        return list(range(n_available))
    return sorted({int((i + 0.5) * n_available / k) for i in range(k)})


def _small(frame: Image.Image, max_side: int) -> Image.Image:
    img = frame.convert("RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.BILINEAR)
    return img


def keyframes(data: bytes, spec: VideoSpec = VideoSpec()) -> list[Image.Image]:
    """``spec.frames`` frames of the video as RGB images, or ``InvalidItem`` with the reason."""
    import av

    deadline = time.monotonic() + spec.max_seconds
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidItem("video_undecodable", f"cannot open the video: {exc}", stage="preprocess") from None
    try:
        if not container.streams.video:
            raise InvalidItem("video_undecodable", "the file has no video stream", stage="preprocess")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if spec.strategy == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        frames: list[tuple[float, Image.Image]] = []
        timed_out = False
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else float(len(frames))
                frames.append((t, _small(frame.to_image(), spec.max_side)))
                if len(frames) >= spec.max_decoded_frames:
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    break
        except (av.FFmpegError, ValueError) as exc:
            if not frames:
                raise InvalidItem("video_undecodable", f"decoding failed: {exc}", stage="preprocess") from None
        if not frames:
            reason = "video_decode_timeout" if timed_out else "video_undecodable"
            raise InvalidItem(reason, "no frame decoded" + (f" within {spec.max_seconds}s" if timed_out else ""),
                              stage="preprocess")
        if spec.strategy == "uniform" and frames[-1][0] > frames[0][0]:
            # evenly spaced in time: the decoded frame nearest each target timestamp
            t0, t1 = frames[0][0], frames[-1][0]
            targets = [t0 + (i + 0.5) * (t1 - t0) / spec.frames for i in range(spec.frames)]
            idx = sorted({min(range(len(frames)), key=lambda j: abs(frames[j][0] - t)) for t in targets})
        else:
            idx = _pick(len(frames), spec.frames)
        return [frames[i][1] for i in idx]
    finally:
        container.close()
