"""The AppStream dataset builder on real DEP-11 components and icons, and the shipped snapshot's integrity."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import msgpack
import pytest
from PIL import Image

from corpora import appstream, debtags
from enrich.media.decode import decode_image
from enrich.schemas import decode_item

FIXTURE = Path(__file__).parents[2] / "fixtures" / "appstream"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, appstream.AppItem], dict[str, bytes], Path]:
    out = tmp_path_factory.mktemp("appstream")
    manifest = appstream.build_from_lists(FIXTURE, out)
    assert manifest["items"] == 3
    items = {it.id: it for it in appstream.load_snapshot(out)}
    return items, appstream.load_icons(out), out


def test_desktop_applications_with_icons_become_items(built) -> None:
    items, icons, _ = built
    # the addon and the application without a 64 px icon are left out
    assert sorted(items) == ["aeskulap", "amsynth", "vkeybd"] == sorted(icons)
    amsynth = items["amsynth"]
    assert amsynth.name == "Analog Modelling SYNTHesizer" and amsynth.summary and amsynth.categories
    assert "<" not in amsynth.text and len(amsynth.text) > 50  # the HTML description as text
    assert amsynth.split == debtags.split_of("amsynth")


def test_items_join_the_debtags_snapshot_for_gold_tags_and_related_items(built) -> None:
    items, _, _ = built
    gold = {it.id: it for it in debtags.load_snapshot()}
    assert items["amsynth"].tags == gold["amsynth"].tags and "works-with::audio" in items["amsynth"].tags
    assert items["amsynth"].related == ["vkeybd"] and items["vkeybd"].related == ["amsynth"]
    assert items["aeskulap"].related == []  # its debtags neighbour gnumed-client is not in this catalogue


def test_icons_are_lossless_and_keep_their_transparency(built, tmp_path: Path) -> None:
    _, icons, _ = built
    import tarfile

    with tarfile.open(FIXTURE / "deb.debian.org_debian_dists_bookworm_main_dep11_icons-64x64.tar.gz") as tar:
        png = tar.extractfile("amsynth_amsynth.png").read()  # type: ignore[union-attr]
    original, stored = Image.open(io.BytesIO(png)).convert("RGBA"), Image.open(io.BytesIO(icons["amsynth"]))
    assert stored.format == "WEBP" and stored.size == (64, 64) and stored.mode == "RGBA"
    assert list(stored.convert("RGBA").getdata()) == list(original.getdata())


def test_every_kind_is_a_valid_event_and_decodes_like_the_stream_does(built) -> None:
    items, icons, _ = built
    it = items["amsynth"]
    events = {kind: it.event(kind, icons[it.id]) for kind in appstream.KINDS}
    decoded = {k: decode_item(msgpack.packb(e, use_bin_type=True)) for k, e in events.items()}
    assert decoded["long_text_image"].text == it.text and decoded["long_text_image"].title.startswith(it.name)
    assert decoded["short_text_image"].text == "" and decoded["short_text_image"].title
    assert decoded["image_only"].title == decoded["image_only"].text == ""
    assert len({d.id for d in decoded.values()}) == 3
    assert decode_image(decoded["image_only"].images[0]).size == (64, 64)


def test_snapshot_is_byte_for_byte_reproducible(built, tmp_path: Path) -> None:
    _, _, out = built
    again = appstream.build_from_lists(FIXTURE, tmp_path / "again")
    assert (tmp_path / "again" / "items.jsonl.gz").read_bytes() == (out / "items.jsonl.gz").read_bytes()
    assert (tmp_path / "again" / "icons.tar").read_bytes() == (out / "icons.tar").read_bytes()
    assert again | {"version": ""} == json.loads((out / "manifest.json").read_text()) | {"version": ""}


def test_builder_cli_reads_an_apt_lists_dir(tmp_path: Path) -> None:
    from ops.cli import main

    assert main(["data", "appstream", "--lists", str(FIXTURE), "--out", str(tmp_path / "snap")]) == 0
    assert json.loads((tmp_path / "snap" / "manifest.json").read_text())["items"] == 3
    assert main(["data", "appstream", "--lists", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 1


def test_the_shipped_snapshot_matches_its_manifest() -> None:
    manifest = json.loads((appstream.SNAPSHOT_DIR / "manifest.json").read_text())
    with gzip.open(appstream.SNAPSHOT_DIR / "items.jsonl.gz", "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == manifest["sha256"]
    shipped = appstream.load_snapshot()
    icons = appstream.load_icons()
    assert len(shipped) == manifest["items"] > 1500 and set(icons) == {it.id for it in shipped}
    assert hashlib.sha256(b"".join(icons[p] for p in sorted(icons))).hexdigest() == manifest["icons_sha256"]
    assert {s: sum(it.split == s for it in shipped) for s in debtags.SPLITS} == manifest["splits"]
    ids = {it.id for it in shipped}
    assert all(set(it.related) <= ids for it in shipped)
    # the test split has gold tags for most of its items, in all three kinds
    test = [it for it in shipped if it.split == "test"]
    assert sum(bool(it.tags) for it in test) == manifest["test_with_debtags"] > 80
