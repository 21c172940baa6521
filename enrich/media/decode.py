"""Untrusted images decoded inside a budget.

Every byte of an image comes from a topic anybody may write to, so decoding is bounded before
a pixel is decoded:

- an allow-list of formats (JPEG, PNG, WebP, GIF); Pillow never tries another plugin;
- the header's pixel count, per image and summed per item, and its aspect ratio;
- downscaling while decoding: JPEG is decoded at a reduced DCT scale (draft mode) and every
  image is reduced to ``work_pixels`` at once, so no full-resolution image outlives its decode;
- transparency composited on white, the one way both training and serving see a transparent image.

The wall time and memory of a decode are bounded for real by running it in a child process
(``enrich/media/sandbox.py``); the functions here are what that child runs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from enrich.errors import InvalidItem

ALLOWED_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
_SIGNATURES = (  # the allowed formats' magic bytes: a file that has them but fails is undecodable, not refused
    (0, b"\xff\xd8\xff"), (0, b"\x89PNG\r\n\x1a\n"), (0, b"GIF87a"), (0, b"GIF89a"), (8, b"WEBP"))


@dataclass(frozen=True)
class MediaBudget:
    """What decoding one item may cost. Defaults fit the worker memory in the README."""

    max_image_pixels: int = 4096 * 4096  # per image (and video frame), read from its header
    max_item_pixels: int = 32 * 1024 * 1024  # the headers of an item's images, summed
    work_pixels: int = 1024 * 1024  # decoded images are reduced to at most this many pixels
    max_aspect: float = 200.0  # longest side over shortest side (Qwen2-VL's own bound)

    def __post_init__(self) -> None:
        if min(self.max_image_pixels, self.max_item_pixels, self.work_pixels) < 1 or self.max_aspect < 1:
            raise ValueError(f"media budget must be positive: {self}")


def fit_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size of the same aspect within ``max_pixels`` (never upscaled, at least 1x1)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _has_alpha(img: Image.Image) -> bool:
    return "A" in img.getbands() or "transparency" in img.info


def flatten_alpha(img: Image.Image) -> Image.Image:
    """RGB, transparent pixels composited on white (emoji, icons and logos are drawn for light backgrounds)."""
    if img.mode == "RGB":
        return img
    if _has_alpha(img):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))  # no full-size RGBA copies: RGB out, one alpha plane
        return out
    return img.convert("RGB")


def check_pixels(width: int, height: int, budget: MediaBudget, what: str, empty: str = "image_undecodable",
                 over: str = "image_pixel_budget") -> None:
    """A header's size against the per-image pixel budget, before anything is decoded."""
    if width < 1 or height < 1:
        raise InvalidItem(empty, f"{what} is {width}x{height} px", stage="preprocess")
    if width * height > budget.max_image_pixels:
        raise InvalidItem(over, f"{what} is {width}x{height} px = {width * height:,} px > "
                          f"{budget.max_image_pixels:,}", stage="preprocess")


def check_geometry(width: int, height: int, budget: MediaBudget, what: str) -> None:
    check_pixels(width, height, budget, what)
    if max(width, height) / min(width, height) > budget.max_aspect:
        raise InvalidItem("image_aspect_ratio", f"{what} is {width}x{height} px, beyond "
                          f"{budget.max_aspect:g}:1", stage="preprocess")


def open_image(data: bytes, what: str = "image") -> Image.Image:
    """The image's header, parsed by an allowed format's plugin only; nothing is decoded yet."""
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_IMAGE_FORMATS)
    except UnidentifiedImageError:
        if any(data[at:at + len(sig)] == sig for at, sig in _SIGNATURES):
            raise InvalidItem("image_undecodable", f"{what}: a broken {'/'.join(ALLOWED_IMAGE_FORMATS)} header",
                              stage="preprocess") from None
        raise InvalidItem("image_format_not_allowed", f"{what} is not one of {', '.join(ALLOWED_IMAGE_FORMATS)} "
                          f"(starts with {data[:12].hex()})", stage="preprocess") from None
    except Image.DecompressionBombError as exc:  # Pillow's own check, past twice its MAX_IMAGE_PIXELS
        raise InvalidItem("image_pixel_budget", f"{what}: {exc}", stage="preprocess") from None
    except MemoryError:
        raise  # the decoder's memory limit, its own reason (enrich/media/sandbox.py)
    except Exception as exc:  # noqa: BLE001 - a plugin may raise anything on hostile bytes
        raise InvalidItem("image_undecodable", f"{what}: {type(exc).__name__}: {exc}", stage="preprocess") from None


def decode_image(data: bytes, budget: MediaBudget = MediaBudget(), what: str = "image") -> Image.Image:
    """An RGB image of at most ``budget.work_pixels`` pixels, or ``InvalidItem`` saying why not."""
    img = open_image(data, what)
    check_geometry(img.width, img.height, budget, what)
    return reduce_decoded(img, budget, what)


def reduce_decoded(img: Image.Image, budget: MediaBudget, what: str) -> Image.Image:
    target = fit_pixels(img.width, img.height, budget.work_pixels)
    try:
        if img.format in ("JPEG", "MPO"):
            img.draft("RGB", target)  # decoded at 1/2, 1/4 or 1/8 scale, never below the target
        img.load()
        if img.mode not in ("RGB", "RGBA", "L", "LA"):  # palette, 16-bit, CMYK: to a mode resize can take
            img = img.convert("RGBA" if _has_alpha(img) else "RGB")
        if img.size != target:  # reduced first (Pillow premultiplies alpha), flattened at the small size
            img = img.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
        img = flatten_alpha(img)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise every type on crafted payloads
        raise InvalidItem("image_undecodable", f"{what}: {type(exc).__name__}: {exc}", stage="preprocess") from None
    return img


def decode_images(images: Sequence[bytes], budget: MediaBudget = MediaBudget()) -> list[Image.Image]:
    """An item's images, its summed header pixels within ``budget.max_item_pixels``."""
    out, total = [], 0
    for i, data in enumerate(images):
        what = f"images[{i}]"
        img = open_image(data, what)
        check_geometry(img.width, img.height, budget, what)
        total += img.width * img.height
        if total > budget.max_item_pixels:
            raise InvalidItem("item_pixel_budget", f"the images up to {what} have {total:,} px > "
                              f"{budget.max_item_pixels:,} per item", stage="preprocess")
        out.append(reduce_decoded(img, budget, what))
    return out
