"""The emoji corpus: a deterministic split by name, image-only events, a clear error for a wrong directory."""

from __future__ import annotations

from collections import Counter

import msgpack
import pytest
from emoji_package import write_emoji_package

from corpora.emoji import load_emoji
from enrich.errors import EnrichError
from enrich.schemas import decode_item


def test_the_split_is_by_name_and_holds_out_a_fifth(tmp_path):
    emoji = load_emoji(write_emoji_package(tmp_path / "pkg", 200))
    again = load_emoji(tmp_path / "pkg")
    assert [e.split for e in emoji] == [e.split for e in again]
    counts = Counter(e.split for e in emoji)
    assert 25 <= counts["test"] <= 55 and 25 <= counts["val"] <= 55 and counts["train"] >= 100
    assert all(e.held_out == (e.split == "test") for e in emoji)


def test_an_emoji_is_published_as_an_image_only_item(tmp_path):
    e = load_emoji(write_emoji_package(tmp_path / "pkg", 4))[0]
    item = decode_item(msgpack.packb(e.event("emoji-0"), use_bin_type=True))
    assert item.id == "emoji-0" and item.title == "" and item.text == "" and item.kind == "image_post"
    assert item.images == [e.image.read_bytes()]


def test_a_directory_without_the_package_says_how_to_get_it(tmp_path):
    with pytest.raises(EnrichError, match="npm pack emoji-datasource-google"):
        load_emoji(tmp_path)
