"""The debtags items in Chinese: Debian's zh_CN translations of their package descriptions.

Debian ships Simplified Chinese translations of about 1,234 package descriptions
(``Translation-zh_CN``). Each is a translation of one English description, named by
that description's ``Description-md5``; an item is kept only when its translation is
of the description the archive has now (the md5 in the Packages index matches), so
the Chinese text says what the English one says. Tags, related items and the split
are the English snapshot's (``corpora/debtags.py``): the same package is held out in
both languages, and the held-out packages with both texts are what per-language
quality is measured on. Only zh_CN is read; the other languages' translations are
kept back to check the product.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from corpora import debtags
from corpora.debtags import MAX_TEXT_CHARS, DebtagsItem, long_description, stanzas
from corpora.snapshots import apt_update, read_items, write_manifest

LANGUAGE = "zh_CN"
SNAPSHOT_VERSION = "debtags-zh-bookworm-v1"
SNAPSHOT_DIR = Path(__file__).parent / "data" / SNAPSHOT_VERSION
# Debian wraps descriptions at about 80 columns; a wrap beside a CJK character is not a space (a blank
# line, a paragraph break, has no text on one side and stays)
_CJK = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f"
_CJK_WRAP = re.compile(f"(?<=[{_CJK}])\n(?=\\S)|(?<=\\S)\n(?=[{_CJK}])")


def unwrap(text: str) -> str:
    """Debian's line wraps taken out where they split Chinese text (paragraph breaks stay)."""
    return _CJK_WRAP.sub("", text)


def build(packages: Iterable[str], translations: Iterable[str], english: list[DebtagsItem]) -> list[DebtagsItem]:
    """The English snapshot's items whose current description Debian translated into Chinese, in Chinese."""
    current = {st["Package"]: st.get("Description-md5", "") for st in stanzas(packages) if "Package" in st}
    texts: dict[str, str] = {}
    for st in stanzas(translations):
        md5, desc = st.get("Description-md5"), st.get(f"Description-{LANGUAGE}")
        if md5 and desc:
            texts[md5] = desc
    items = []
    for it in english:
        desc = texts.get(current.get(it.id, ""))
        if not desc or "\n" not in desc:
            continue  # not translated, translated from an older description, or a summary alone
        short, _, body = desc.partition("\n")
        text = unwrap(long_description(body))[:MAX_TEXT_CHARS]
        if text:
            items.append(DebtagsItem(id=it.id, title=f"{it.id}: {short.strip()}", text=text, tags=it.tags,
                                     related=it.related, split=it.split))
    return items


def write_snapshot(items: list[DebtagsItem], out: Path, source: str, english_items: int) -> dict:
    manifest = debtags.write_snapshot(items, out, source)
    return write_manifest(out, manifest | {"language": LANGUAGE, "english_items": english_items,
                                           "english_snapshot": debtags.SNAPSHOT_VERSION})


def load_snapshot(path: Path = SNAPSHOT_DIR) -> list[DebtagsItem]:
    return read_items(path, DebtagsItem, "enrich data debtags-zh")


def fetch_lists(lists_dir: Path) -> None:
    """``apt-get update`` with the zh_CN translations into a private lists directory (needs apt and root)."""
    apt_update(lists_dir, [f"Acquire::Languages={LANGUAGE}"], f"*_Packages and *_Translation-{LANGUAGE} indexes")


def find_indexes(lists_dir: Path, suite: str = "bookworm_main") -> tuple[Path, Path]:
    """The Packages index and the zh_CN translations (apt escapes the underscore in the file name)."""
    command = "enrich data debtags-zh"
    return (debtags.find_index(lists_dir, f"*_dists_{suite}_binary-*_Packages*", command),
            debtags.find_index(lists_dir, f"*_dists_{suite}_i18n_Translation-zh*CN*", command))


def build_from_lists(lists_dir: Path, out: Path, english: list[DebtagsItem] | None = None) -> dict:
    english = debtags.load_snapshot() if english is None else english
    packages, translation = find_indexes(lists_dir)
    items = build(debtags.read_index(packages), debtags.read_index(translation), english)
    return write_snapshot(items, out, f"{packages.name} + {translation.name} + {debtags.SNAPSHOT_VERSION}",
                          len(english))
