"""Image decoding and Qwen2-VL dynamic-resolution patching, on the host.

The vision graphs take flat patch rows plus host-computed position ids and
attention segments; everything data-dependent (grids, window order) is decided
here in numpy so the exported graphs stay static in structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from enrich.errors import InvalidItem
from enrich.media.decode import flatten_alpha

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


def window_order(grid: tuple[int, int, int], spec: VisionSpec) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-VL window attention: the merge-unit permutation and each unit's window id.

    Returns ``(order, window_of_unit)`` over the image's merged units, where
    ``order`` lists unit indices window by window.
    """
    assert spec.window_size is not None
    t, h, w = grid
    m = spec.merge_size
    lh, lw = h // m, w // m
    win = spec.window_size // m // spec.patch_size
    pad_h, pad_w = (win - lh % win) % win, (win - lw % win) % win
    nwh, nww = (lh + pad_h) // win, (lw + pad_w) // win
    index = np.arange(t * lh * lw).reshape(t, lh, lw)
    padded = np.full((t, lh + pad_h, lw + pad_w), -1, dtype=np.int64)
    padded[:, :lh, :lw] = index
    windows = padded.reshape(t, nwh, win, nww, win).transpose(0, 1, 3, 2, 4).reshape(t * nwh * nww, win * win)
    order, window_ids = [], []
    for wid, row in enumerate(windows):
        units = row[row >= 0]
        order.append(units)
        window_ids.append(np.full(len(units), wid, dtype=np.int64))
    return np.concatenate(order), np.concatenate(window_ids)


@dataclass(frozen=True)
class VisionBatch:
    """Host-side inputs of one vision-graph call covering several images."""

    pixel_values: np.ndarray  # [N, patch_dim] float32
    position_ids: np.ndarray  # [N, 2] int64
    segment_ids: np.ndarray  # [N] int64: one segment per frame (full attention)
    window_ids: np.ndarray | None  # [N] int64: window segments (Qwen2.5-VL), else None
    # Per image: rows of the graph's output (merged tokens) in the image's own token order.
    token_slices: list[np.ndarray]


def build_vision_batch(images: list[PatchedImage], spec: VisionSpec) -> VisionBatch:
    """Concatenate images into one vision call: positions, segments, window order.

    For window attention the patches are permuted on the host (the patch embed is
    per-patch, so this equals HF's in-graph permutation) and ``token_slices``
    undoes the permutation on the output.
    """
    unit = spec.merge_size**2
    pixels, pos, seg, win, slices = [], [], [], [], []
    seg_base = win_base = out_base = 0
    for img in images:
        t, h, w = img.grid
        rows, p = img.patches, rotary_position_ids(img.grid, spec.merge_size)
        frame = np.repeat(np.arange(t, dtype=np.int64), h * w)
        n_units = len(rows) // unit
        if spec.window_size is not None:
            order, wid = window_order(img.grid, spec)
            perm = (order[:, None] * unit + np.arange(unit)[None]).reshape(-1)
            rows, p, frame = rows[perm], p[perm], frame[perm]
            win.append(np.repeat(wid, unit) + win_base)
            win_base += int(wid.max()) + 1
            inverse = np.empty_like(order)
            inverse[order] = np.arange(n_units)
            slices.append(inverse + out_base)
        else:
            slices.append(np.arange(n_units) + out_base)
        pixels.append(rows)
        pos.append(p)
        seg.append(frame + seg_base)
        seg_base += t
        out_base += n_units
    return VisionBatch(
        pixel_values=np.concatenate(pixels).astype(np.float32),
        position_ids=np.concatenate(pos),
        segment_ids=np.concatenate(seg),
        window_ids=np.concatenate(win) if spec.window_size is not None else None,
        token_slices=slices,
    )


def square_pixels(images: list[Image.Image], size: int) -> np.ndarray:
    """[N, 3, size, size] in [-1, 1] for the encoder family's image tower.

    Shorter side to ``size``, centre crop; transparent pixels are composited on white like the
    serving decoder does (``enrich.media.decode.flatten_alpha``), so training sees what serving sees.
    """
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
