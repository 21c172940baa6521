"""The hostile corpus as events: the committed crafted files, bombs generated here, hostile event fields.

Each ``Case`` is one ``items.new`` event and the dead-letter reason it must get (``None``: it must be
enriched, within the media budget). Shared by the pipeline tests and the live-worker test.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import msgpack
import numpy as np
from PIL import Image

from enrich.schemas import SCHEMA_VERSION, now_ms

CORPUS = Path(__file__).parent / "fixtures" / "hostile"


@dataclass(frozen=True)
class Case:
    name: str
    event: bytes
    reason: str | None  # None: enriched


def item_event(item_id: str, **fields: object) -> bytes:
    rec = {"schema": SCHEMA_VERSION, "id": item_id, "kind": "image_post", "title": "a post", "text": "hello",
           "created_at": now_ms()} | fields
    return msgpack.packb(rec, use_bin_type=True)


@cache
def solid(fmt: str, side: int, **save: object) -> bytes:
    """A ``side`` x ``side`` image of one colour: a few KB encoded, ``side``^2 pixels decoded."""
    buf = io.BytesIO()
    mode = "RGBA" if fmt == "WEBP" else "RGB"
    Image.new(mode, (side, side), (90, 160, 220, 255) if mode == "RGBA" else (90, 160, 220)).save(buf, fmt, **save)
    return buf.getvalue()


@cache
def long_clip(frames: int = 3000, size: tuple[int, int] = (448, 252)) -> bytes:
    """An MP4 of ``frames`` frames at 448 px: small on the wire, every frame decodable."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = 300
        arr = np.zeros((size[1], size[0], 3), np.uint8)
        for k in range(frames):
            arr[:] = (k // 300 * 25 % 255, 80, 160)  # a new colour every 10 s; P-frames stay tiny
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


@cache
def png_in_mov(side: int = 15000) -> bytes:
    """A MOV whose one stream is ``png``, its sample description saying 64x48, holding one ``side`` x ``side``
    RGBA PNG frame: under 1 MB on the wire, ``4 * side**2`` bytes decoded (900 MB at 15000). Written packet by
    packet, so no frame of that size is ever made here."""
    import struct
    import zlib

    import av

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate = zlib.compressobj(9)
    row = bytes(1 + 4 * side)  # filter byte 0, then transparent black
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mov") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgba"
        packet = av.Packet(png)
        packet.stream, packet.pts, packet.dts, packet.is_keyframe = stream, 0, 0, True
        out.mux(packet)
    return buf.getvalue()


def file_cases() -> list[Case]:
    out = []
    for entry in json.loads((CORPUS / "manifest.json").read_text()):
        data = (CORPUS / entry["file"]).read_bytes()
        value: object = [data] if entry["field"] == "images" else data
        kind = "video" if entry["field"] == "video" else "image_post"
        out.append(Case(entry["file"], item_event(f"hostile-{entry['file']}", kind=kind, **{entry["field"]: value}),
                        entry["reason"]))
    return out


def bomb_cases() -> list[Case]:
    """Inputs inside every byte limit that decode to far more than they weigh."""
    webp_16m = solid("WEBP", 4000, lossless=True)  # 16 Mpx: under the per-image budget
    return [
        Case("webp_lossless_5000", item_event("bomb-webp-5000", images=[solid("WEBP", 5000, lossless=True)]),
             "image_pixel_budget"),
        Case("png_6000", item_event("bomb-png-6000", images=[solid("PNG", 6000)]), "image_pixel_budget"),
        Case("jpeg_4600", item_event("bomb-jpeg-4600", images=[solid("JPEG", 4600, quality=5)]), "image_pixel_budget"),
        Case("8x_webp_16mpx", item_event("bomb-8-webp", images=[webp_16m] * 8), "item_pixel_budget"),
        Case("2x_webp_16mpx", item_event("bomb-2-webp", images=[webp_16m] * 2), None),
        Case("jpeg_4000_draft", item_event("bomb-jpeg-4000", images=[solid("JPEG", 4000, quality=20)]), None),
        Case("mp4_3000_frames", item_event("bomb-long-clip", kind="video", video=long_clip()), None),
        # refused by its codec's name; FFmpeg's stream probe decoded it first (900 MB) before that was checked
        Case("mov_png_15000", item_event("bomb-mov-png", kind="video", video=png_in_mov()),
             "video_codec_not_allowed"),
    ]


def field_cases() -> list[Case]:
    return [
        Case("created_at_max_uint64", item_event("ts-huge", kind="article", created_at=2**64 - 1), "bad_timestamp"),
        Case("created_at_negative", item_event("ts-negative", kind="article", created_at=-5), "bad_timestamp"),
        Case("published_at_far_future", item_event("ts-future", kind="article", published_at=now_ms() + 10**12),
             "bad_timestamp"),
        Case("blank_id", item_event("   ", kind="article"), "bad_id"),
        # 999 KB: under the broker's 1 MB, so it arrives; its dead letter must still fit
        Case("oversized_invalid_event", item_event("too-long", kind="article", title="x" * 999_000),
             "field_too_large"),
    ]


def all_cases() -> list[Case]:
    return file_cases() + bomb_cases() + field_cases()
