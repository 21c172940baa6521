"""Previews on recall.neighbors: bounded in pixels and bytes, transparency on white, off at 0."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from enrich.media.thumbnails import ThumbnailSpec, thumbnail, thumbnails


def test_previews_are_small_webp_with_transparency_on_white_and_leave_the_input_alone():
    icon = Image.new("RGBA", (256, 128), (0, 0, 0, 0))
    icon.paste((20, 120, 20, 255), (100, 30, 156, 98))
    data = thumbnail(icon, ThumbnailSpec(px=64))
    out = Image.open(io.BytesIO(data))
    assert out.format == "WEBP" and out.size == (64, 32)
    px = np.asarray(out.convert("RGB")).astype(int)
    assert (px[0, 0] > 240).all() and px[16, 32][1] > px[16, 32][0] + 50  # white corner, green middle
    assert icon.size == (256, 128) and icon.mode == "RGBA"  # the model's input is untouched
    rgb = Image.new("RGB", (50, 40), (1, 2, 3))
    thumbnail(rgb, ThumbnailSpec(px=16))
    assert rgb.size == (50, 40)


def test_the_byte_bound_holds_or_the_preview_is_left_out():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), np.uint8))
    spec = ThumbnailSpec(px=256, max_bytes=4096)
    got = thumbnails([noise, noise], spec)
    assert all(len(t) <= 4096 for t in got)
    assert thumbnails([noise], ThumbnailSpec(px=256, max_bytes=600)) == []  # noise never fits in 600 bytes
    assert thumbnails([noise], ThumbnailSpec(px=0)) == []
    assert len(thumbnails([noise] * 6, ThumbnailSpec(px=32, count=4))) == 4
