"""Caption -> categorical features (seed 001): a short description of the item, tokenised into a
bounded space of feature ids that a ranking model embeds like any other categorical feature.

The description comes from the tagger's path: the graded tags (strong first) read as words,
with the item's kind and modality. The tagger has seen the images and video frames, so the
description carries what they show. A generative caption model would slot in here; none with
open weights installs on the machines this project is built on.

Tokens are lowercased word unigrams and bigrams, hashed into ``buckets`` ids (BLAKE2b, salted with
the hasher's version). Hashing rather than a learned vocabulary: nothing to fit, ship or keep in
step between workers and the ranker, and new words get ids the day they appear; the price is
collisions, which a ranker tolerates at 2^18 buckets. The version names the recipe, so a ranker
retrains when it changes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from enrich.schemas import TagGrade
from enrich.tagging.vocabulary import readable_tag

CAPTION_RECIPE = "tags-v1"
_WORD = re.compile(r"[a-z0-9]+")


def describe(kind: str, tags: Sequence[TagGrade], images: int, has_video: bool) -> str:
    """``image_post with 2 images: strong: use: editing; works with: image. weak: field: arts``."""
    media = "video" if has_video else f"{images} image{'s' if images != 1 else ''}" if images else "text only"
    parts = [f"{kind.replace('_', ' ')}, {media}"]
    for grade, label in ((2, "strong"), (1, "weak")):
        names = [readable_tag(t.tag) for t in tags if t.grade == grade]
        if names:
            parts.append(f"{label}: {'; '.join(names)}")
    return ". ".join(parts)


@dataclass(frozen=True)
class CaptionHasher:
    buckets: int = 1 << 18
    max_features: int = 64

    @property
    def version(self) -> str:
        return f"{CAPTION_RECIPE}-hash{self.buckets}"

    def tokens(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]

    def feature_id(self, token: str) -> int:
        digest = hashlib.blake2b(token.encode(), digest_size=8, key=self.version.encode()).digest()
        return int.from_bytes(digest, "little") % self.buckets

    def features(self, text: str) -> list[int]:
        """Distinct ids in order of first appearance (unigrams before bigrams), at most ``max_features``."""
        out: dict[int, None] = {}
        for tok in self.tokens(text):
            out.setdefault(self.feature_id(tok), None)
            if len(out) >= self.max_features:
                break
        return list(out)
