"""Google's emoji (npm ``emoji-datasource-google``): real images with names nobody in this project wrote.

An item is one emoji: its 64 px PNG, its name (``grinning face``), short name, category (``Smileys &
Emotion``) and subcategory (``face-smiling``). The package is not committed: ``npm pack
emoji-datasource-google && tar xzf emoji-datasource-google-*.tgz`` gives the ``package`` directory the
trainers and ``enrich eval --emoji`` read.

The split is by name hash: a fifth is ``test`` (held out from every trainer), a fifth ``val`` (the packed
tagger's validation; the embedder's projection trains on it), the rest ``train``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrich.errors import EnrichError
from enrich.schemas import SCHEMA_VERSION, now_ms


@dataclass(frozen=True)
class Emoji:
    name: str
    short_name: str
    category: str
    subcategory: str
    image: Path

    @property
    def held_out(self) -> bool:
        return self._bucket == 0

    @property
    def split(self) -> str:
        """``test`` (held out everywhere), ``val`` (the packed tagger's validation; the projection trains on
        it) or ``train``."""
        return "test" if self._bucket == 0 else "val" if self._bucket == 1 else "train"

    @property
    def _bucket(self) -> int:
        return int(hashlib.sha1(self.name.encode()).hexdigest()[:8], 16) % 5

    def event(self, item_id: str, created_at: int | None = None) -> dict[str, Any]:
        """The emoji as an image-only ``items.new`` record (no title, no text), as a sticker is published."""
        return {"schema": SCHEMA_VERSION, "id": item_id, "kind": "image_post", "title": "", "text": "",
                "images": [self.image.read_bytes()], "created_at": created_at if created_at is not None else now_ms()}


def load_emoji(package_dir: Path) -> list[Emoji]:
    try:
        rows = json.loads((package_dir / "emoji.json").read_text())
    except FileNotFoundError:
        raise EnrichError(f"{package_dir}/emoji.json not found: pass the unpacked npm package directory "
                          "(npm pack emoji-datasource-google && tar xzf emoji-datasource-google-*.tgz)") from None
    out = []
    for r in rows:
        path = package_dir / "img" / "google" / "64" / r["image"]
        if r.get("has_img_google") and path.exists() and r.get("name"):
            out.append(Emoji(r["name"].lower(), r["short_name"].replace("_", " "), r["category"],
                             r["subcategory"], path))
    return out

