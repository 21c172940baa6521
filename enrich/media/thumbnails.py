"""Small previews of an item's images for the outputs: what a recall UI shows, never the original.

Made in the worker from the images the sandboxed decoder already returned (decoded, bounded pixels),
so no untrusted bytes are parsed here. Each preview is WebP, its longer side at most ``px`` and its size
at most ``max_bytes``: the quality steps down until it fits, and an image that never fits gets none.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from enrich.media.decode import flatten_alpha

QUALITIES = (75, 55, 35, 20)


@dataclass(frozen=True)
class ThumbnailSpec:
    px: int = 96  # 0: no thumbnails
    max_bytes: int = 8 * 1024
    count: int = 4  # images (or video frames) previewed per item


def thumbnail(img: Image.Image, spec: ThumbnailSpec) -> bytes | None:
    small = flatten_alpha(img)
    small = small.copy() if small is img else small  # thumbnail() works in place: never on the model's input
    small.thumbnail((spec.px, spec.px), Image.Resampling.LANCZOS)
    for quality in QUALITIES:
        buf = io.BytesIO()
        small.save(buf, format="WEBP", quality=quality, method=4)
        if buf.tell() <= spec.max_bytes:
            return buf.getvalue()
    return None


def thumbnails(images: list[Image.Image], spec: ThumbnailSpec) -> list[bytes]:
    if spec.px <= 0 or spec.count <= 0:
        return []
    out = [thumbnail(img, spec) for img in images[: spec.count]]
    return [t for t in out if t is not None]
