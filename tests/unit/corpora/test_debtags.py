"""The debtags dataset builder on real archive stanzas, and the shipped snapshot's integrity."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from corpora import debtags
from corpora.debtags import build, grade_of, is_semantic, load_snapshot, write_snapshot
from enrich.tagging.vocabulary import readable_tag

FIXTURE = Path(__file__).parents[2] / "fixtures" / "debian"


@pytest.fixture(scope="module")
def items() -> dict[str, debtags.DebtagsItem]:
    packages, translations = (FIXTURE / "Packages").read_text(), (FIXTURE / "Translation-en").read_text()
    built = build(packages.splitlines(), translations.splitlines())
    return {it.id: it for it in built}


def test_only_tagged_programs_with_english_descriptions_become_items(items: dict) -> None:
    # libc6 is a library (role::shared-lib), not a program
    assert set(items) == {"0ad", "0ad-data-common", "abcde", "cd-discid", "cdparanoia", "flac", "lame",
                          "vorbis-tools"}


def test_items_carry_semantic_tags_only(items: dict) -> None:
    assert items["abcde"].tags == ["hardware::storage", "hardware::storage:cd", "use::converting", "use::storing",
                                   "works-with-format::mp3", "works-with-format::oggvorbis", "works-with-format::wav",
                                   "works-with::audio"]
    # placeholders and technical facets are gone
    assert "works-with-format::TODO" not in items["vorbis-tools"].tags
    for it in items.values():
        assert all(is_semantic(t) for t in it.tags)
        assert not any(t.split("::")[0] in ("implemented-in", "interface", "role", "uitoolkit", "scope")
                       for t in it.tags)


def test_title_and_long_description_come_from_the_translation_index(items: dict) -> None:
    it = items["0ad"]
    assert it.title == "0ad: Real-time strategy game of ancient warfare"
    assert it.text.startswith("0 A.D. (pronounced \"zero ey-dee\") is a free, open-source, cross-platform")
    data_common = items["0ad-data-common"].text
    assert "\n\nThis package contains the data files" in data_common  # " ." paragraph breaks kept


def test_related_items_are_dependency_links_both_ways_and_same_source(items: dict) -> None:
    # abcde depends on / recommends the encoders and rippers; each sees abcde back
    assert items["abcde"].related == ["cd-discid", "cdparanoia", "flac", "lame", "vorbis-tools"]
    assert items["lame"].related == ["abcde"]
    # 0ad depends on 0ad-data-common, which suggests 0ad back
    assert items["0ad"].related == ["0ad-data-common"]


def test_split_is_deterministic_by_package_name(items: dict) -> None:
    for name, it in items.items():
        assert it.split == debtags.split_of(name)
    assert items["lame"].split == "val"
    names = [f"pkg-{i}" for i in range(5000)]
    shares = {s: sum(debtags.split_of(n) == s for n in names) / len(names) for s in debtags.SPLITS}
    assert 0.07 < shares["test"] < 0.13 and 0.07 < shares["val"] < 0.13


def test_snapshot_is_byte_for_byte_reproducible_and_round_trips(items: dict, tmp_path: Path) -> None:
    built = list(items.values())
    m1 = write_snapshot(built, tmp_path / "a", source="fixture")
    m2 = write_snapshot(built, tmp_path / "b", source="fixture")
    assert (tmp_path / "a" / "items.jsonl.gz").read_bytes() == (tmp_path / "b" / "items.jsonl.gz").read_bytes()
    assert m1 == {**m2, "version": "a"}
    assert load_snapshot(tmp_path / "a") == built
    assert m1["items"] == 8 and m1["splits"] == {"train": 7, "val": 1}


def test_builder_cli_reads_an_apt_lists_dir(tmp_path: Path) -> None:
    from ops.cli import main

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_bytes(
        (FIXTURE / "Packages").read_bytes())
    (lists / "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en").write_bytes(
        (FIXTURE / "Translation-en").read_bytes())
    assert main(["data", "debtags", "--lists", str(lists), "--out", str(tmp_path / "snap")]) == 0
    assert json.loads((tmp_path / "snap" / "manifest.json").read_text())["items"] == 8
    assert main(["data", "debtags", "--lists", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 1


def test_the_shipped_snapshot_matches_its_manifest() -> None:
    manifest = json.loads((debtags.SNAPSHOT_DIR / "manifest.json").read_text())
    with gzip.open(debtags.SNAPSHOT_DIR / "items.jsonl.gz", "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == manifest["sha256"]
    shipped = load_snapshot()
    assert len(shipped) == manifest["items"] > 7000
    assert {s: sum(it.split == s for it in shipped) for s in debtags.SPLITS} == manifest["splits"]
    ids = {it.id for it in shipped}
    assert all(set(it.related) <= ids for it in shipped)


def test_grades_follow_the_issue_definition() -> None:
    gold = ["use::gameplaying", "game::strategy"]
    assert grade_of("game::strategy", gold) == 2
    assert grade_of("use::editing", gold) == 1  # same facet as a gold tag
    assert grade_of("works-with::audio", gold) == 0
    assert readable_tag("works-with-format::oggvorbis") == "works with format: oggvorbis"
    assert readable_tag("cooking") == "cooking"
