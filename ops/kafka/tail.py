"""`enrich tail TOPIC`: the records of any of the service's topics, decoded for people.

A plain Kafka CLI shows msgpack bytes. Here every record is decoded; vectors are summarised (dimension,
norm, first values), images and videos shown as their format, size and bytes, and a dead letter's
original decoded the same way when it is msgpack.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np

from streams.kafka_tools import Record
from streams.topology import TOPIC_NAMES

VECTOR_FIELDS = frozenset({"embedding", "vector", "cf_embedding", "cf_vector", "prototype"})


def media(data: bytes) -> str:
    """``PNG 64x64, 3,210 B`` for an image Pillow recognises by its header, else the size."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        return f"{img.format} {img.width}x{img.height}, {len(data):,} B"
    except Exception:  # noqa: BLE001 - a summary, never a failure: hostile bytes are shown as bytes
        return f"{len(data):,} B"


def summarise(value: Any, field: str = "") -> Any:
    """``value`` with its bytes made readable."""
    if isinstance(value, dict):
        return {k: summarise(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        if field in ("images", "thumbnails"):
            return [media(v) if isinstance(v, bytes) else summarise(v) for v in value]
        return [summarise(v) for v in value]
    if not isinstance(value, bytes):
        return value
    if field in VECTOR_FIELDS and len(value) % 4 == 0:
        v = np.frombuffer(value, dtype="<f4")
        return {"float32": len(v), "norm": round(float(np.linalg.norm(v)), 4),
                "head": [round(float(x), 4) for x in v[:4]]}
    if field == "video":
        return f"video, {len(value):,} B"
    if field == "original":
        try:
            return {"msgpack": summarise(msgpack.unpackb(value, raw=False))}
        except Exception:  # noqa: BLE001
            return f"{len(value):,} B, not msgpack"
    try:
        text = value.decode("utf-8")
        if text.isprintable() and len(text) <= 200:
            return text
    except UnicodeDecodeError:
        pass
    return f"{len(value):,} B"


def decode_record(rec: Record) -> dict[str, Any]:
    try:
        value: Any = summarise(msgpack.unpackb(rec.value, raw=False)) if rec.value is not None else None
    except Exception:  # noqa: BLE001 - shown, not trusted
        value = f"{len(rec.value):,} B, not msgpack"
    return {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
            "key": summarise(rec.key) if rec.key is not None else None, "value": value}


def render(d: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(d, ensure_ascii=False, default=str)
    head = f"{d['topic']}[{d['partition']}]@{d['offset']} key={d['key']}"
    return head + "\n" + json.dumps(d["value"], indent=2, ensure_ascii=False, default=str)


def tail(records: Iterator[Record], key: str | None, limit: int, emit: Callable[[str], None],
         as_json: bool) -> int:
    """Print the records (of ``key`` only, when given) until ``limit`` were printed (0: for ever)."""
    shown = 0
    want = key.encode() if key is not None else None
    for rec in records:
        if want is not None and rec.key != want:
            continue
        emit(render(decode_record(rec), as_json))
        shown += 1
        if limit and shown >= limit:
            break
    return shown


def known_topic(name: str) -> str:
    if name not in TOPIC_NAMES:
        raise ValueError(f"{name!r} is not one of the service's topics: {', '.join(TOPIC_NAMES)}")
    return name
