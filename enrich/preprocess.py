"""Preprocessing: text normalisation and truncation, media decoding.

Images are decoded once per item (within the media budget, see ``enrich/media/decode.py``); each model
then patches them with its own ``VisionSpec`` (the embedder and tagger may use different resolutions).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from PIL import Image

from enrich.errors import InvalidItem
from enrich.media.images import PatchedImage, VisionSpec, patchify
from enrich.media.sandbox import MediaDecoder, SandboxSpec
from enrich.schemas import Item, decode_item, encode_item

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
    _patched: dict[VisionSpec, list[PatchedImage]] = field(default_factory=dict, init=False, repr=False)

    @property
    def pixels(self) -> int:
        return sum(img.width * img.height for img in self.images)

    def without_images(self) -> PreparedItem:
        """The same item as a model that must not see its images receives it."""
        return PreparedItem(self.item, self.text, [])

    def patched(self, spec: VisionSpec) -> list[PatchedImage]:
        if spec not in self._patched:
            self._patched[spec] = [patchify(img, spec) for img in self.images]
        return self._patched[spec]


# Trusted callers (tools, training, tests on items made here) decode in their own thread.
INLINE_DECODER = MediaDecoder(sandbox=SandboxSpec(isolated=False))


def prepare(item: Item, model_text_chars: int, decoder: MediaDecoder = INLINE_DECODER) -> PreparedItem:
    title, body = normalise_text(item.title), normalise_text(item.text)
    text = f"{title}\n{body}" if title and body else title or body
    images = decoder.decode(item.images, item.video)
    if not text and not images:
        raise InvalidItem("empty_content", "no text left after normalisation and no images", stage="preprocess")
    return PreparedItem(item=item, text=text[:model_text_chars], images=images)


def prepare_event(event: dict, model_text_chars: int, decoder: MediaDecoder = INLINE_DECODER) -> PreparedItem:
    """An ``items.new`` record given as a dict, through the worker's own decoding: what offline tools embed
    and grade, so they see exactly what serving sees."""

    return prepare(decode_item(encode_item(event)), model_text_chars, decoder)
