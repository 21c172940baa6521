"""Image decoding and Qwen2-VL dynamic-resolution patching, on the host.

The vision graphs take one row of patch slots per frame, with host-computed
position ids and a mask of the real slots; everything data-dependent (grids,
window order, padding) is decided here in numpy so the exported graphs stay
static in structure, and each frame attends only within its own row (and, in
Qwen2.5-VL's windowed blocks, within its windows): the cost of a call is
linear in its frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from enrich.errors import InvalidItem

if TYPE_CHECKING:  # Pillow is imported where images are opened: the layout below needs numpy alone, so the
    from PIL import Image  # GPU benchmark (torch, transformers, onnx, nothing else) can run the graphs

# OpenAI CLIP normalisation, used by the Qwen2-VL family.
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@dataclass(frozen=True)
class VisionSpec:
    """The part of a model's contract that preprocessing must honour."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    in_channels: int = 3
    # Qwen2.5-VL window attention; None for Qwen2-VL (full attention per image).
    window_size: int | None = None

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclass(frozen=True)
class PatchedImage:
    """One image as patch rows in Qwen2-VL merge order, with its (t, h, w) grid."""

    patches: np.ndarray  # [t*h*w, patch_dim] float32
    grid: tuple[int, int, int]

    @property
    def num_tokens(self) -> int:
        """Tokens the image occupies in the text sequence after spatial merging."""
        t, h, w = self.grid
        return t * h * w // 4


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule: multiples of ``factor``, pixel count within bounds, aspect kept."""
    if max(height, width) / min(height, width) > 200:
        raise InvalidItem("image_aspect_ratio", f"{width}x{height} exceeds 200:1", stage="preprocess")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def patchify(img: Image.Image, spec: VisionSpec) -> PatchedImage:
    """Resize, normalise and cut an image into patch rows (the HF processor's layout)."""
    from PIL import Image

    h, w = smart_resize(img.height, img.width, spec.factor, spec.min_pixels, spec.max_pixels)
    if (img.height, img.width) != (h, w):
        img = img.resize((w, h), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = ((arr - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)  # C, H, W
    return patchify_frames(arr[None], spec)


def patchify_frames(frames: np.ndarray, spec: VisionSpec) -> PatchedImage:
    """Cut normalised frames ``[T, C, H, W]`` into patch rows; T is padded to the temporal patch."""
    p, m, tp = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    if frames.shape[0] % tp:
        pad = np.repeat(frames[-1:], tp - frames.shape[0] % tp, axis=0)
        frames = np.concatenate([frames, pad], axis=0)
    t_total, c, h, w = frames.shape
    gt, gh, gw = t_total // tp, h // p, w // p
    x = frames.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    rows = np.ascontiguousarray(x.reshape(gt * gh * gw, c * tp * p * p), dtype=np.float32)
    return PatchedImage(rows, (gt, gh, gw))


def rotary_position_ids(grid: tuple[int, int, int], merge: int) -> np.ndarray:
    """(h, w) patch coordinates in merge-block order, as the vision rotary embedding wants them."""
    t, h, w = grid
    hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // merge, merge, w // merge, merge)
    hpos = hpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    wpos = wpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    return np.tile(np.stack([hpos, wpos], axis=-1), (t, 1)).astype(np.int64)


@dataclass(frozen=True)
class VisionBatch:
    """Host-side inputs of one vision-graph call covering several images: one row per frame.

    A row's slots hold the frame's patches in merge-unit order; with window attention the units are
    grouped window by window and every window padded to the same ``window_units`` slots, so the graph
    turns rows into windows with a reshape. Rows are padded to the longest (whole windows), and
    ``patch_mask`` says which slots are real.
    """

    pixel_values: np.ndarray  # [F, P, patch_dim] float32
    position_ids: np.ndarray  # [F, P, 2] int64
    patch_mask: np.ndarray  # [F, P] int64: 1 a real patch, 0 padding
    # Per image: rows of the graph's output flattened to [F * P / unit, H], in the image's own token order.
    token_slices: list[np.ndarray]


def window_units(spec: VisionSpec) -> int | None:
    """Merge units per attention window (Qwen2.5-VL), None without window attention."""
    if spec.window_size is None:
        return None
    return (spec.window_size // spec.merge_size // spec.patch_size) ** 2


def _frame_units(grid: tuple[int, int, int], spec: VisionSpec) -> np.ndarray:
    """One frame's slots as merge-unit indices within the frame, -1 for a padding slot: in merge order, or
    window by window with each window padded to ``window_units``."""
    _, h, w = grid
    m = spec.merge_size
    lh, lw = h // m, w // m
    if spec.window_size is None:
        return np.arange(lh * lw, dtype=np.int64)
    win = spec.window_size // m // spec.patch_size
    pad_h, pad_w = (win - lh % win) % win, (win - lw % win) % win
    nwh, nww = (lh + pad_h) // win, (lw + pad_w) // win
    padded = np.full((lh + pad_h, lw + pad_w), -1, dtype=np.int64)
    padded[:lh, :lw] = np.arange(lh * lw).reshape(lh, lw)
    return padded.reshape(nwh, win, nww, win).transpose(0, 2, 1, 3).reshape(-1)


def build_vision_batch(images: list[PatchedImage], spec: VisionSpec) -> VisionBatch:
    """Lay images out for one vision call: a row per frame, slots in (window) merge order, padding masked."""
    unit = spec.merge_size**2
    per_window = window_units(spec) or 1
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (patches, positions, unit of each slot)
    owner: list[int] = []
    for k, img in enumerate(images):
        t, h, w = img.grid
        positions = rotary_position_ids((1, h, w), spec.merge_size)
        units = _frame_units(img.grid, spec)
        for f in range(t):
            frames.append((img.patches[f * h * w:(f + 1) * h * w], positions, units))
            owner.append(k)
    slots_u = -(-max(len(u) for _, _, u in frames) // per_window) * per_window
    n, p = len(frames), slots_u * unit
    pixels = np.zeros((n, p, spec.patch_dim), np.float32)
    pos = np.zeros((n, p, 2), np.int64)
    mask = np.zeros((n, p), np.int64)
    slices: list[list[np.ndarray]] = [[] for _ in images]
    for row, (patches, positions, units) in enumerate(frames):
        real = np.flatnonzero(units >= 0)  # slot (in units) of each real unit, window by window
        src = (units[real][:, None] * unit + np.arange(unit)).reshape(-1)
        dst = (real[:, None] * unit + np.arange(unit)).reshape(-1)
        pixels[row, dst], pos[row, dst], mask[row, dst] = patches[src], positions[src], 1
        out = np.empty(len(real), np.int64)
        out[units[real]] = row * slots_u + real  # the frame's units back in their own order
        slices[owner[row]].append(out)
    return VisionBatch(pixels, pos, mask, [np.concatenate(s) for s in slices])


def square_pixels(images: list[Image.Image], size: int) -> np.ndarray:
    """[N, 3, size, size] in [-1, 1] for the encoder family's image tower.

    Shorter side to ``size``, centre crop; transparent pixels are composited on white like the
    serving decoder does (``enrich.media.decode.flatten_alpha``), so training sees what serving sees.
    """
    from PIL import Image

    from enrich.media.decode import flatten_alpha

    out = np.zeros((len(images), 3, size, size), np.float32)
    for i, img in enumerate(images):
        img = flatten_alpha(img)
        w, h = img.size
        if max(w, h) > 2 * min(w, h):
            # only the centre square survives the crop: cut a long strip before scaling, not after
            keep = 2 * min(w, h)
            img = img.crop(((w - keep) // 2, 0, (w - keep) // 2 + keep, h) if w > h else
                           (0, (h - keep) // 2, w, (h - keep) // 2 + keep))
            w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        arr = np.asarray(img.crop((left, top, left + size, top + size)), np.float32)
        out[i] = (arr.transpose(2, 0, 1) - 127.5) / 127.5
    return out
