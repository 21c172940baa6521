"""Wire schemas v1 (msgpack), validated at the edge.

Every record is a msgpack map with an integer ``schema`` field. Changes are
additive; a new incompatible shape gets a new version number. Embeddings
travel as little-endian float32 bytes, semantic IDs as int lists, times as
epoch milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack
import numpy as np

from enrich.errors import InvalidItem, Stop

SCHEMA_VERSION = 1
TITLE_CHARS = 200  # of an item's title on items.enriched
ITEM_KINDS = frozenset({"article", "answer", "image_post", "video", "short_text"})
MAX_ID_LEN = 256
MAX_MESSAGE_BYTES = 1_000_000  # Kafka's default record limit: what dead letters are cut to unless configured
# created_at / published_at: epoch ms from 2000-01-01 to a day past this worker's clock (skew); beyond
# that a time is an error that would rank first in every recency-decayed index or break latency metrics.
MIN_TIME_MS = 946_684_800_000
MAX_FUTURE_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Limits:
    max_images: int = 8
    max_image_bytes: int = 512 * 1024  # Kafka messages are 1 MB by default
    max_title_chars: int = 1_000
    max_text_chars: int = 100_000
    max_video_bytes: int = 900 * 1024  # a short clip inline; long videos belong in object storage


@dataclass(frozen=True)
class Item:
    """``items.new``: a newly published piece of content (key: item id)."""

    id: str
    kind: str
    title: str
    text: str
    created_at: int
    images: list[bytes] = field(default_factory=list)
    published_at: int | None = None
    schema: int = SCHEMA_VERSION
    video: bytes | None = None  # an encoded clip (MP4, WebM, ...): keyframes join the images


@dataclass(frozen=True)
class TagGrade:
    tag: str
    grade: int  # 2 strong, 1 weak
    prob: float  # probability of that grade


@dataclass(frozen=True)
class ModelVersions:
    embedder: str
    tagger: str
    codebook: str
    cf_adapter: str = ""  # empty when no CF adapter is configured
    captions: str = ""  # the caption features' recipe; empty when they are off
    tag_prior: str = ""  # the neighbour-vote prior's version; empty when none is configured


@dataclass(frozen=True)
class EnrichedItem:
    """``items.enriched``: the full record for one item (key: item id)."""

    item_id: str
    kind: str
    created_at: int
    enriched_at: int
    tags: list[TagGrade]
    embedding: bytes  # float32, L2-normalised
    dim: int
    semantic_id: list[int]
    versions: ModelVersions
    schema: int = SCHEMA_VERSION
    cf_embedding: bytes | None = None  # float32: the content vector through the CF adapter, when configured
    caption: str | None = None  # a short description of the item (enrich/tagging/captions.py)
    caption_features: list[int] | None = None  # the caption's hashed token ids, for ranking models
    title: str = ""  # the item's title, cut to TITLE_CHARS (for people looking at the outputs)


@dataclass(frozen=True)
class TagRecall:
    """``recall.tags``: one (tag, item) edge for the cold-start tag index (key: item id, like every output)."""

    tag: str
    item_id: str
    grade: int
    prob: float
    created_at: int
    versions: ModelVersions
    schema: int = SCHEMA_VERSION
    enriched_at: int = 0  # the enrichment this edge belongs to: a newer one replaces the item's edges


@dataclass(frozen=True)
class NeighborRecord:
    """``recall.neighbors``: the item's vector and semantic ID for the neighbour index (key: item id)."""

    item_id: str
    semantic_id: list[int]
    vector: bytes  # float32
    dim: int
    created_at: int
    versions: ModelVersions
    schema: int = SCHEMA_VERSION
    enriched_at: int = 0  # the enrichment this record belongs to: a newer one replaces the item's entry
    cf_vector: bytes | None = None  # float32, when a CF adapter is configured
    # WebP previews of the first images or video frames (ENRICH_THUMBNAIL_PX on the longer side, each at most
    # ENRICH_THUMBNAIL_BYTES; none when ENRICH_THUMBNAIL_PX=0): what a recall UI shows beside a hit
    thumbnails: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class DeadLetter:
    """``items.dlq``: an input that could not be enriched, with everything needed to replay it."""

    reason: str
    stage: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    original: bytes
    key: bytes | None
    failed_at: int
    item_id: str | None = None
    schema: int = SCHEMA_VERSION
    # A dead letter always fits the broker's message limit: an original that would not is cut short
    # (original_truncated), and its full length and SHA-256 say what it was.
    original_bytes: int = 0
    original_sha256: str = ""
    original_truncated: bool = False
    key_truncated: bool = False  # keys beyond 1 KiB keep their first KiB


@dataclass(frozen=True)
class VocabEntry:
    """``tags.vocab`` (compacted, key: tag): the open tag vocabulary. ``deleted`` retires a tag."""

    tag: str
    facet: str = ""
    description: str = ""
    deleted: bool = False
    updated_at: int = 0
    schema: int = SCHEMA_VERSION
    prototype: bytes | None = None  # float32: the tag's candidate vector learned from labelled items
    prototype_embedder: str = ""  # the embedder version whose space the prototype is in


def encode(record: Any) -> bytes:
    return msgpack.packb(asdict(record), use_bin_type=True)


def encode_item(item: Mapping[str, Any]) -> bytes:
    """An ``items.new`` record's value: the item's map as msgpack, bytes as bin (images, video), the one way the
    tools, the demo, the benchmarks and the worker's warm-up write items (``decode_item`` reads them back)."""
    return msgpack.packb(dict(item), use_bin_type=True)


def vector_bytes(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def vector_from_bytes(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")


# -- items.coded: the hand-off between the two stages ---------------------------

# items.coded is a contract between the workers of a rolling update: versioned like the public topics.
# 0 is the bare list the releases before it wrote (still read); a worker stops on a version it cannot read
# rather than guess, so the partition waits for a worker that can.
CODED_SCHEMA = 1
READABLE_CODED = (0, 1)


class CodedVersionError(Stop):
    """An items.coded record of a version this worker cannot read (written by a newer release)."""


def code_tuple_key(codebook: str, codes: list[int]) -> bytes:
    """The key of a code tuple (items.coded, the collision digits); the codebook version keeps tuples of
    different codebooks apart."""
    return f"{codebook}:{'-'.join(map(str, codes))}".encode()


@dataclass(frozen=True)
class FinishedItem:
    """An item's outputs with its full semantic ID (the code tuple and the collision digit)."""

    item_id: str
    created_at: int
    enriched: bytes  # items.enriched
    neighbor: bytes  # recall.neighbors
    edges: list[bytes]  # recall.tags


@dataclass(frozen=True)
class CodedItem:
    """``items.coded`` (internal, key: the code tuple): an enriched item whose semantic ID is still the bare
    code tuple. Its records travel as the maps their writer made, so a field a newer release adds passes
    through to the outputs unchanged."""

    record: dict[str, Any]  # the items.enriched record
    neighbor: dict[str, Any]  # the recall.neighbors record
    edges: list[bytes]  # the recall.tags records, encoded

    @classmethod
    def of(cls, record: EnrichedItem, neighbor: NeighborRecord, edges: list[TagRecall]) -> CodedItem:
        return cls(asdict(record), asdict(neighbor), [encode(e) for e in edges])

    @property
    def item_id(self) -> str:
        return self.record["item_id"]

    @property
    def key(self) -> bytes:
        return code_tuple_key(self.record["versions"]["codebook"], self.record["semantic_id"])

    def encode(self) -> bytes:
        return msgpack.packb({"schema": CODED_SCHEMA, "record": self.record, "neighbor": self.neighbor,
                              "edges": self.edges}, use_bin_type=True)

    def finish(self, digit: int) -> FinishedItem:
        """The outputs, the collision digit appended to the code tuple on both records."""
        sid = [*self.record["semantic_id"], digit]
        return FinishedItem(self.item_id, self.record["created_at"],
                            msgpack.packb(self.record | {"semantic_id": sid}, use_bin_type=True),
                            msgpack.packb(self.neighbor | {"semantic_id": sid}, use_bin_type=True), self.edges)


def decode_coded(raw: bytes | None, key: bytes | None) -> CodedItem:
    """An ``items.coded`` record (this version or the previous release's) published under ``key``:
    ``InvalidItem`` when it is not one a worker wrote, or not under its own code tuple (the tuple's partition
    owns its digits, and a record under another key, or none, would be numbered where it does not belong);
    ``CodedVersionError`` when a newer release wrote it."""
    def bad(why: str) -> InvalidItem:
        return InvalidItem("bad_coded_record", why, stage="semantic_id")

    try:
        value = msgpack.unpackb(raw or b"", raw=False)
    except (ValueError, TypeError) as exc:
        raise bad(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if isinstance(value, dict) and "schema" in value:
        version = value["schema"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise bad(f"schema {version!r} is not an integer")
        if version not in READABLE_CODED:
            raise CodedVersionError(f"items.coded record of schema {version}; this worker reads "
                                    f"{READABLE_CODED}: a newer release wrote it. Finish the rolling update (the "
                                    "newer workers take this partition); its offset stays uncommitted meanwhile")
        value = [value.get("record"), value.get("neighbor"), value.get("edges")]
    try:
        record, neighbor, edges = value
        if not (isinstance(record, dict) and isinstance(neighbor, dict) and isinstance(edges, list)
                and isinstance(record["item_id"], str) and isinstance(record["created_at"], int)
                and isinstance(record["semantic_id"], list) and all(isinstance(e, bytes) for e in edges)):
            raise TypeError("unexpected shape")
    except (ValueError, TypeError, KeyError) as exc:
        raise bad(f"not an items.coded record: {type(exc).__name__}: {exc}") from None
    versions = record.get("versions")
    if not (isinstance(versions, dict) and isinstance(versions.get("codebook"), str)
            and all(isinstance(c, int) and not isinstance(c, bool) for c in record["semantic_id"])):
        raise bad("no codebook version or a non-integer code")
    coded = CodedItem(record, neighbor, edges)
    if key != coded.key:
        raise bad(f"key {key!r:.80} is not the record's code tuple {coded.key!r}")
    return coded


# -- decoding with validation -------------------------------------------------


def _unpack(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidItem("not_msgpack", "the record has no value (a null value, i.e. a tombstone, or zero bytes): "
                                         "this topic takes no deletions; publish the item as a msgpack map")
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        # msgpack's FormatError has no message: say what the record starts with (escaped, a few bytes)
        raise InvalidItem("not_msgpack", f"{type(exc).__name__}: {str(exc) or 'not a msgpack value'} "
                                         f"({len(raw)} B starting {raw[:12]!r})") from exc
    if not isinstance(obj, dict):
        raise InvalidItem("not_a_map", f"top-level value is {type(obj).__name__}, expected a map")
    version = obj.get("schema")
    if version is None:
        raise InvalidItem("missing_field", "'schema' is required")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidItem("wrong_type", f"'schema' must be an integer, got {type(version).__name__}")
    if version != SCHEMA_VERSION:
        raise InvalidItem("unknown_schema", f"schema {version} is not supported (this worker reads {SCHEMA_VERSION})")
    return obj


def _field(obj: dict[str, Any], name: str, types: type | tuple[type, ...], required: bool = True) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise InvalidItem("missing_field", f"'{name}' is required")
        return None
    value = obj[name]
    allowed = types if isinstance(types, tuple) else (types,)
    # bool is an int subclass; only accept it where bool is asked for
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        expected = "/".join(t.__name__ for t in allowed)
        raise InvalidItem("wrong_type", f"'{name}' must be {expected}, got {type(value).__name__}")
    return value


def _time(value: int, name: str) -> int:
    latest = now_ms() + MAX_FUTURE_MS
    if not MIN_TIME_MS <= value <= latest:
        raise InvalidItem("bad_timestamp", f"'{name}' is {value}: epoch milliseconds between {MIN_TIME_MS} "
                          f"(2000-01-01) and {latest} (a day from now) expected")
    return value


def claimed_id(raw: bytes) -> str | None:
    """The id an ``items.new`` record claims, valid or not (None when it names none): how a dead letter or an
    audit names a record that ``decode_item`` refuses. The one reader of input ids besides ``decode_item``."""
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception:  # noqa: BLE001 - any undecodable record simply claims no id
        return None
    item_id = obj.get("id") if isinstance(obj, dict) else None
    return item_id if isinstance(item_id, str) and item_id.strip() else None


def decode_item(raw: bytes, limits: Limits = Limits()) -> Item:
    """Decode and validate an ``items.new`` record or raise ``InvalidItem`` with a specific reason."""
    obj = _unpack(raw)
    item_id = _field(obj, "id", str)
    if not item_id.strip() or len(item_id) > MAX_ID_LEN or not item_id.isprintable():
        raise InvalidItem("bad_id", f"'id' must be 1..{MAX_ID_LEN} printable characters, not all blank")
    kind = _field(obj, "kind", str)
    if kind not in ITEM_KINDS:
        raise InvalidItem("unknown_kind", f"kind {kind!r} is not one of {sorted(ITEM_KINDS)}")
    title = _field(obj, "title", str, required=False) or ""
    text = _field(obj, "text", str, required=False) or ""
    if len(title) > limits.max_title_chars:
        raise InvalidItem("field_too_large", f"'title' has {len(title)} chars > {limits.max_title_chars}")
    if len(text) > limits.max_text_chars:
        raise InvalidItem("field_too_large", f"'text' has {len(text)} chars > {limits.max_text_chars}")
    created_at = _time(_field(obj, "created_at", int), "created_at")
    published_at = _field(obj, "published_at", int, required=False)
    if published_at is not None:
        _time(published_at, "published_at")
    images = _field(obj, "images", list, required=False) or []
    if len(images) > limits.max_images:
        raise InvalidItem("too_many_images", f"{len(images)} images > limit {limits.max_images}")
    for i, img in enumerate(images):
        if not isinstance(img, bytes):
            raise InvalidItem("wrong_type", f"images[{i}] must be bytes, got {type(img).__name__}")
        if len(img) > limits.max_image_bytes:
            raise InvalidItem("image_too_large", f"images[{i}] has {len(img)} bytes > {limits.max_image_bytes}")
    video = _field(obj, "video", bytes, required=False) or None
    if video is not None and len(video) > limits.max_video_bytes:
        raise InvalidItem("video_too_large", f"'video' has {len(video)} bytes > {limits.max_video_bytes}")
    if not title.strip() and not text.strip() and not images and not video:
        raise InvalidItem("empty_content", "title, text, images and video are all empty")
    return Item(id=item_id, kind=kind, title=title, text=text, created_at=created_at, images=list(images),
                published_at=published_at, video=video)


def decode_vocab(raw: bytes) -> VocabEntry:
    obj = _unpack(raw)
    tag = _field(obj, "tag", str)
    if not tag.strip() or len(tag) > 200:
        raise InvalidItem("bad_tag", "'tag' must be 1..200 characters")
    prototype = _field(obj, "prototype", bytes, required=False) or None
    if prototype is not None and (len(prototype) % 4 or not prototype):
        raise InvalidItem("wrong_type", "'prototype' must be float32 bytes")
    facet = _field(obj, "facet", str, required=False) or ""
    description = _field(obj, "description", str, required=False) or ""
    if len(facet) > 200 or len(description) > 2_000:
        raise InvalidItem("field_too_large", "'facet' must be at most 200 characters, 'description' 2000")
    return VocabEntry(tag=tag.strip(), facet=facet,
                      description=description,
                      deleted=bool(_field(obj, "deleted", bool, required=False)),
                      updated_at=_field(obj, "updated_at", int, required=False) or 0,
                      prototype=prototype,
                      prototype_embedder=_field(obj, "prototype_embedder", str, required=False) or "")


def decode(raw: bytes) -> dict[str, Any]:
    """Decode any record of this package's schemas to a plain dict (for consumers and tools)."""
    return _unpack(raw)
