"""The Chinese AppStream snapshot: zh_CN fields joined to the English apps, and the menu's category names."""

from __future__ import annotations

from corpora import appstream_zh
from corpora.appstream import AppItem

MENU = """<!DOCTYPE Menu PUBLIC "-//freedesktop//DTD Menu 1.0//EN" "http://x">
<Menu><Name>Applications</Name>
  <Menu><Name>Graphics</Name><Directory>Graphics.directory</Directory>
    <Include><And><Category>Graphics</Category><Not><Category>Utility</Category></Not></And></Include></Menu>
  <Menu><Name>Science</Name><Directory>GnomeScience.directory</Directory>
    <Include><And><Category>Education</Category><Category>Science</Category></And></Include></Menu>
  <Menu><Name>Other</Name><Directory>Untranslated.directory</Directory>
    <Include><Category>Other</Category></Include></Menu>
</Menu>"""
DIRECTORIES = {"Graphics.directory": "[Desktop Entry]\nName=Graphics\nName[zh_CN]=图形\nName[zh_TW]=圖形\n",
               "GnomeScience.directory": "[Desktop Entry]\nName=Science\nName[zh_CN]=科学类\n",
               "Untranslated.directory": "[Desktop Entry]\nName=Other\n"}


def _app(package: str, split: str = "test") -> AppItem:
    return AppItem(id=package, component=f"{package}.desktop", name=package.title(), summary="An editor",
                   text="Edits things.", categories=["Graphics"], keywords=["draw"], tags=["use::editing"],
                   related=["other"], split=split)


def test_apps_take_the_zh_cn_fields_and_keep_the_english_labels_and_split() -> None:
    english = [_app("gimp"), _app("inkscape", "train"), _app("plain"), _app("dup")]
    components = [
        {"Type": "desktop-application", "Package": "gimp", "ID": "gimp.desktop",
         "Name": {"C": "GIMP"}, "Summary": {"C": "An editor", "zh_CN": "图像编辑器", "zh_TW": "影像編輯器"},
         "Description": {"C": "<p>x</p>", "zh_CN": "<p>编辑图像。</p><ul><li>图层</li></ul>"},
         "Keywords": {"zh_CN": ["图像", " 绘画 "]}},
        {"Type": "desktop-application", "Package": "inkscape", "ID": "inkscape.desktop",
         "Name": {"C": "Inkscape", "zh_CN": "矢量绘图"}, "Summary": {"zh_CN": "矢量图形编辑器"}},
        {"Type": "desktop-application", "Package": "plain", "ID": "plain.desktop", "Summary": {"C": "English only"}},
        {"Type": "desktop-application", "Package": "dup", "ID": "other-id.desktop", "Summary": {"zh_CN": "另一个"}},
    ]
    items = {it.id: it for it in appstream_zh.build(components, english)}
    assert set(items) == {"gimp", "inkscape"}  # no zh_CN summary, or another component than the snapshot's
    gimp = items["gimp"]
    assert (gimp.name, gimp.summary, gimp.text) == ("Gimp", "图像编辑器", "编辑图像。\n- 图层")
    assert gimp.keywords == ["图像", "绘画"]
    assert (gimp.tags, gimp.related, gimp.split, gimp.categories) == (["use::editing"], ["other"], "test",
                                                                      ["Graphics"])
    assert (items["inkscape"].name, items["inkscape"].text, items["inkscape"].split) == ("矢量绘图", "", "train")


def test_category_names_come_from_the_menu_and_its_directory_files() -> None:
    names = appstream_zh.category_names(MENU, DIRECTORIES)
    assert names == {"Graphics": {"en": "Graphics", "zh_CN": "图形"}, "Science": {"en": "Science", "zh_CN": "科学类"}}


def test_the_shipped_snapshot_is_chinese_and_shares_the_english_splits() -> None:
    from corpora import appstream

    english = {it.id: it for it in appstream.load_snapshot()}
    items = appstream_zh.load_snapshot()
    assert len(items) >= 150
    assert all(it.split == english[it.id].split and it.tags == english[it.id].tags for it in items)
    cjk = sum(any("\u4e00" <= ch <= "\u9fff" for ch in it.summary) for it in items)
    assert cjk >= 0.95 * len(items)
    categories = appstream_zh.load_categories()
    assert categories["Graphics"]["zh_CN"] == "图形" and len(categories) >= 20
