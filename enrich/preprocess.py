"""Preprocessing: text normalisation and truncation, image decoding.

Images are decoded once per item; each model then patches them with its own
``VisionSpec`` (the embedder and tagger may use different resolutions).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from PIL import Image

from enrich.errors import InvalidItem
from enrich.images import PatchedImage, VisionSpec, decode_image, patchify
from enrich.schemas import Item
from enrich.video import VideoSpec, keyframes

_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFC, control characters dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return _SPACE.sub(" ", text).strip()


@dataclass
class PreparedItem:
    item: Item
    text: str
    images: list[Image.Image]
    _patched: dict[VisionSpec, list[PatchedImage]] = field(default_factory=dict)

    def patched(self, spec: VisionSpec) -> list[PatchedImage]:
        if spec not in self._patched:
            self._patched[spec] = [patchify(img, spec) for img in self.images]
        return self._patched[spec]


def prepare(item: Item, max_image_bytes: int, max_text_chars: int, video: VideoSpec = VideoSpec()) -> PreparedItem:
    title, body = normalise_text(item.title), normalise_text(item.text)
    text = f"{title}\n{body}" if title and body else title or body
    images = [decode_image(b, max_image_bytes) for b in item.images]
    if item.video:
        images += keyframes(item.video, video)
    if not text and not images:
        raise InvalidItem("empty_content", "no text left after normalisation and no images", stage="preprocess")
    return PreparedItem(item=item, text=text[:max_text_chars], images=images)
