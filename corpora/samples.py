"""Sample content for the demo and tests: items, a tag vocabulary, malformed events.

Images are drawn with Pillow (no files to ship, no downloads).
"""

from __future__ import annotations

import io
import random
import struct

import msgpack
from PIL import Image, ImageDraw

from enrich.schemas import SCHEMA_VERSION, Limits, VocabEntry, now_ms

VOCAB: list[tuple[str, str]] = [
    ("cooking", "food"), ("baking", "food"), ("street food", "food"), ("coffee", "food"), ("vegan", "food"),
    ("hiking", "outdoors"), ("camping", "outdoors"), ("cycling", "outdoors"), ("climbing", "outdoors"),
    ("python", "tech"), ("kubernetes", "tech"), ("machine learning", "tech"), ("databases", "tech"),
    ("kafka", "tech"), ("gpu", "tech"), ("photography", "arts"), ("painting", "arts"), ("jazz", "arts"),
    ("film", "arts"), ("football", "sports"), ("tennis", "sports"), ("running", "sports"),
    ("travel", "lifestyle"), ("parenting", "lifestyle"), ("personal finance", "lifestyle"),
    ("cats", "animals"), ("dogs", "animals"), ("birds", "animals"), ("astronomy", "science"),
    ("climate", "science"),
]

_TOPICS = [
    ("How I bake sourdough at home", "Flour, water, salt and a lot of patience: my weekly sourdough routine.", "food"),
    ("Ten street food stalls worth the queue", "From dumplings to tacos, the stalls we keep going back to.", "food"),
    ("Pour-over coffee for beginners", "Grind size, water temperature and the bloom explained.", "food"),
    ("A three-day hike across the ridge", "Maps, water points and where to camp on the ridge trail.", "outdoors"),
    ("Bikepacking on a budget", "Cheap bags, a used frame and two weeks on gravel roads.", "outdoors"),
    ("Scaling Kafka consumers on Kubernetes", "Partitions, consumer groups and autoscaling on lag.", "tech"),
    ("Serving models with Triton", "Dynamic batching and instance groups for GPU inference.", "tech"),
    ("Python typing in practice", "Protocols, dataclasses and mypy on a real codebase.", "tech"),
    ("Residual quantisation explained", "Codebooks, residuals and why semantic IDs help recommenders.", "tech"),
    ("Night photography of the Milky Way", "Long exposures, dark skies and stacking frames.", "arts"),
    ("Learning jazz piano as an adult", "Voicings, standards and practising twenty minutes a day.", "arts"),
    ("The best films of the decade", "A list you will argue with, and why.", "arts"),
    ("Marathon training: weeks 1 to 8", "Easy miles, long runs and not getting injured.", "sports"),
    ("Tennis footwork drills", "Split steps and recovery drills you can do alone.", "sports"),
    ("Budget travel in Portugal", "Trains, hostels and the best pastéis de nata.", "lifestyle"),
    ("Saving for a house on one income", "A spreadsheet, a plan and a few hard choices.", "lifestyle"),
    ("Our cat learned to open doors", "A short story with a long-haired escape artist.", "animals"),
    ("Birdwatching from a city balcony", "Sparrows, swifts and one very confused heron.", "animals"),
    ("Observing Jupiter's moons", "What a small telescope shows on a clear night.", "science"),
    ("What a warmer ocean means for storms", "The physics of heat, moisture and hurricanes.", "science"),
]

_KINDS = ["article", "answer", "short_text"]


def vocab_entries() -> list[VocabEntry]:
    return [VocabEntry(tag=t, facet=f, updated_at=now_ms()) for t, f in VOCAB]


def draw_image(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A deterministic picture (sky, ground, a few shapes) as PNG bytes."""
    rnd = random.Random(seed)
    img = Image.new("RGB", size, (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    d = ImageDraw.Draw(img)
    w, h = size
    d.rectangle([0, h * 2 // 3, w, h], fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    for _ in range(4):
        x, y, r = rnd.randrange(w), rnd.randrange(h), rnd.randrange(8, 30)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def sample_items(n: int = 30, seed: int = 0) -> list[dict]:
    """``n`` valid ``items.new`` records as dicts (text items, image posts, multi-image posts)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        title, text, _facet = _TOPICS[i % len(_TOPICS)]
        images: list[bytes] = []
        kind = _KINDS[i % len(_KINDS)]
        if i % 3 == 1:
            kind, images = "image_post", [draw_image(seed * 1000 + i)]
        elif i % 6 == 5:
            kind, images = "image_post", [draw_image(seed * 1000 + i), draw_image(seed * 1000 + i + 500, (96, 200))]
        if i >= len(_TOPICS):
            title = f"{title} (part {i // len(_TOPICS) + 1})"
        out.append({"schema": SCHEMA_VERSION, "id": f"item-{seed}-{i:04d}", "kind": kind, "title": title,
                    "text": text + (" " + rnd.choice(["Thoughts welcome.", "More soon.", ""])),
                    "images": images, "created_at": now_ms()})
    return out


def malformed_events() -> list[tuple[str, bytes]]:
    """(expected DLQ reason, raw bytes) for each kind of bad input the worker must survive."""
    ok = {"schema": SCHEMA_VERSION, "id": "bad-x", "kind": "article", "title": "t", "text": "x",
          "created_at": now_ms()}

    def pack(**changes: object) -> bytes:
        rec = {**ok, **changes}
        return msgpack.packb({k: v for k, v in rec.items() if v is not ...}, use_bin_type=True)

    return [
        ("not_msgpack", b"\xc1 definitely not msgpack"),
        ("not_a_map", msgpack.packb([1, 2, 3])),
        ("unknown_schema", pack(id="bad-schema", schema=99)),
        ("missing_field", pack(id="bad-missing", created_at=...)),
        ("wrong_type", pack(id="bad-type", title=42)),
        ("empty_content", pack(id="bad-empty", title="  ", text="")),
        ("image_undecodable", pack(id="bad-image", kind="image_post", images=[b"\x89PNG\r\n\x1a\n truncated"])),
        ("image_too_large", pack(id="bad-huge-image", kind="image_post", images=[b"\0" * (600 * 1024)])),
    ]


_NOT_GIF_BLOCKS = bytes(b for b in range(256) if b not in (0x2C, 0x21, 0x3B))  # image, extension, trailer


def fuzz_events(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` randomly malformed events, (expected DLQ reason, raw bytes), drawn from every way an input
    can be bad: random bytes, truncated msgpack, wrong shapes and types, huge fields, bad images, unknown
    schema versions. Each is invalid by construction, so each must end in the DLQ with that reason."""
    rnd = random.Random(seed)
    good = sample_items(12, seed=seed)
    limits = Limits()

    def item(**changes: object) -> bytes:
        rec = {**rnd.choice(good), "id": f"fuzz-{seed}-{rnd.randrange(1 << 30)}", **changes}
        return msgpack.packb({k: v for k, v in rec.items() if v is not ...}, use_bin_type=True)

    def random_bytes() -> tuple[str, bytes]:
        # 0xc1 is never valid msgpack; a random tail after it cannot rescue the record.
        return "not_msgpack", b"\xc1" + rnd.randbytes(rnd.randrange(0, 200))

    def truncated() -> tuple[str, bytes]:
        raw = item()
        return "not_msgpack", raw[: rnd.randrange(1, len(raw) - 1)]

    def not_a_map() -> tuple[str, bytes]:
        value = rnd.choice([[1, 2], "text", 42, 1.5, None, True, b"bytes"])
        return "not_a_map", msgpack.packb(value, use_bin_type=True)

    def missing() -> tuple[str, bytes]:
        return "missing_field", item(**{rnd.choice(["id", "kind", "created_at", "schema"]): ...})

    def wrong_type() -> tuple[str, bytes]:
        field, value = rnd.choice([("title", 42), ("text", [1]), ("created_at", "yesterday"), ("images", "x"),
                                   ("created_at", 1.5), ("images", [7]), ("id", 12)])
        return "wrong_type", item(**{field: value})

    def huge() -> tuple[str, bytes]:
        field = rnd.choice(["title", "text"])
        size = (limits.max_title_chars if field == "title" else limits.max_text_chars) + rnd.randrange(1, 5000)
        return "field_too_large", item(**{field: "x" * size})

    def bad_image() -> tuple[str, bytes]:
        png = draw_image(rnd.randrange(1000))
        if rnd.random() < 0.25:  # no allowed format's signature: refused before any decoder sees it
            return "image_format_not_allowed", item(kind="image_post", images=[b"\x00" + rnd.randbytes(300)])
        # a GIF header of a small screen and no image in it (random sizes would be refused for their pixels)
        gif = b"GIF89a" + struct.pack("<HH", rnd.randrange(1, 64), rnd.randrange(1, 64)) + bytes(
            rnd.choice(_NOT_GIF_BLOCKS) for _ in range(46))
        data = rnd.choice([png[: rnd.randrange(8, len(png) // 2)], gif])
        return "image_undecodable", item(kind="image_post", images=[data])

    def schema() -> tuple[str, bytes]:
        return "unknown_schema", item(schema=rnd.choice([0, 2, 3, 99, -1, 1 << 40]))

    def bad_id() -> tuple[str, bytes]:
        return "bad_id", item(id=rnd.choice(["", "x" * 1000, "tab\tid", "nl\nid"]))

    def kind() -> tuple[str, bytes]:
        return "unknown_kind", item(kind=rnd.choice(["", "podcast", "VIDEO", "article "]))

    makers = [random_bytes, truncated, not_a_map, missing, wrong_type, huge, bad_image, schema, bad_id, kind]
    return [rnd.choice(makers)() for _ in range(n)]
