"""The Chinese debtags items: Debian's zh_CN translations, kept only when they translate the description the
archive has now, carrying the English items' tags, relations and split; and the shipped snapshot."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from corpora import debtags, debtags_zh

FIXTURE = Path(__file__).parents[2] / "fixtures" / "debian"


def built() -> dict[str, debtags.DebtagsItem]:
    english = debtags.build((FIXTURE / "Packages").read_text().splitlines(),
                            (FIXTURE / "Translation-en").read_text().splitlines())
    chinese = debtags_zh.build((FIXTURE / "Packages").read_text().splitlines(),
                               (FIXTURE / "Translation-zh_CN").read_text().splitlines(), english)
    return {it.id: it for it in chinese}, {it.id: it for it in english}


def test_only_current_translations_of_items_become_chinese_items():
    chinese, english = built()
    # libc6 is translated but not an item; abcde's translation is of an older English description
    assert set(chinese) == {"0ad", "0ad-data-common"}
    for name, it in chinese.items():
        assert (it.tags, it.related, it.split) == (english[name].tags, english[name].related, english[name].split)
    assert chinese["0ad"].title == "0ad: 古代战争实时策略游戏"


def test_debians_line_wraps_inside_chinese_text_are_taken_out_and_paragraphs_kept():
    chinese, _ = built()
    text = chinese["0ad-data-common"].text
    assert "跨平台的古代战争" in text and "公元前500年" in text  # wrapped in the index, one line here
    assert text.endswith("游戏引擎。\n\n本包包含 0 A.D. 所需的数据文件（配置与工具）。")


def test_the_shipped_snapshot_matches_its_manifest_and_the_english_one():
    manifest = json.loads((debtags_zh.SNAPSHOT_DIR / "manifest.json").read_text())
    with gzip.open(debtags_zh.SNAPSHOT_DIR / "items.jsonl.gz", "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == manifest["sha256"]
    shipped = debtags_zh.load_snapshot()
    assert len(shipped) == manifest["items"] > 400 and manifest["language"] == "zh_CN"
    english = {it.id: it for it in debtags.load_snapshot()}
    assert all(it.split == english[it.id].split and it.tags == english[it.id].tags for it in shipped)
    held_out = [it for it in shipped if it.split == "test"]
    assert len(held_out) == manifest["splits"]["test"] >= 40
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in it.text) for it in shipped)  # Chinese, every one


def test_enrich_data_builds_the_chinese_snapshot_from_an_apt_lists_dir(tmp_path):
    from ops.cli import main

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_bytes(
        (FIXTURE / "Packages").read_bytes())
    # apt names the file with the language's underscore escaped
    (lists / "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-zh%5fCN").write_bytes(
        (FIXTURE / "Translation-zh_CN").read_bytes())
    english = debtags.build((FIXTURE / "Packages").read_text().splitlines(),
                            (FIXTURE / "Translation-en").read_text().splitlines())
    manifest = debtags_zh.build_from_lists(lists, tmp_path / "snap", english)
    assert manifest["items"] == 2 and manifest["language"] == "zh_CN" and manifest["english_items"] == 8
    assert main(["data", "debtags-zh", "--lists", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 1
