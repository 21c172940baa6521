"""The AppStream apps in Chinese: the DEP-11 catalogue's zh_CN names, summaries and descriptions, and the
desktop menu's category names in zh_CN.

- **Apps**: the English snapshot's apps (``corpora/appstream.py``) whose component carries a zh_CN summary,
  with the zh_CN name when there is one (many apps keep their name), the zh_CN description when there is one
  (else no long text) and the zh_CN keywords. Icons, debtags, related apps and the split are the English
  snapshot's: the same app is held out in both languages. Only zh_CN is read.
- **Category names**: AppStream categories are freedesktop menu categories (``Graphics``, ``ArcadeGame``);
  their translated names are in the desktop menu (Debian's ``gnome-menus``: ``gnome-applications.menu`` says
  which ``.directory`` file shows which category, and the ``.directory`` file has ``Name[zh_CN]``). They are a
  small real vocabulary of Chinese tag names (``categories.json``), held out from every training.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corpora import appstream
from corpora.appstream import MAX_TEXT_CHARS, AppItem, html_text
from corpora.snapshots import read_items, write_items, write_manifest
from enrich.errors import EnrichError

LANGUAGE = "zh_CN"
SNAPSHOT_VERSION = "appstream-zh-bookworm-v1"
SNAPSHOT_DIR = Path(__file__).parent / "data" / SNAPSHOT_VERSION
CATEGORIES_FILE = "categories.json"
MENU_PACKAGE = "gnome-menus"


def _zh(value: Any) -> Any:
    return value.get(LANGUAGE) if isinstance(value, dict) else None


def build(components: Iterable[dict[str, Any]], english: list[AppItem]) -> list[AppItem]:
    """The English snapshot's apps with a zh_CN summary, in Chinese (first component of each package, as there)."""
    by_package = {it.id: it for it in english}
    seen: set[str] = set()
    items = []
    for c in components:
        package = c.get("Package")
        if c.get("Type") != "desktop-application" or package not in by_package or package in seen:
            continue
        it = by_package[package]
        if str(c.get("ID", "")) != it.component:
            continue
        seen.add(package)
        summary = _zh(c.get("Summary"))
        if not summary or not str(summary).strip():
            continue
        description = _zh(c.get("Description"))
        keywords = _zh(c.get("Keywords")) or []
        items.append(AppItem(
            id=it.id, component=it.component, name=str(_zh(c.get("Name")) or it.name).strip(),
            summary=str(summary).strip(), text=html_text(str(description))[:MAX_TEXT_CHARS] if description else "",
            categories=it.categories, keywords=sorted({str(k).strip().lower() for k in keywords if str(k).strip()}),
            tags=it.tags, related=it.related, split=it.split))
    return sorted(items, key=lambda a: a.id)


def category_names(menu: str, directories: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{category: {"en": name, "zh_CN": name}}`` from a menu file and its ``.directory`` files' texts.

    A menu shows the apps of the categories its ``<Include>`` names (``Education`` and ``Science`` both for
    the science menu: the narrower, the last, is its category)."""
    root = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", menu))
    out: dict[str, dict[str, str]] = {}
    for node in root.iter("Menu"):
        directory = node.findtext("Directory")
        include = node.find("Include")
        if not directory or include is None or directory not in directories:
            continue
        wanted = [c.text for c in include.iter("Category") if c.text and not _negated(include, c)]
        fields = dict(re.findall(r"^(Name(?:\[[\w@]+\])?)=(.*)$", directories[directory], re.M))
        if wanted and fields.get("Name") and fields.get(f"Name[{LANGUAGE}]"):
            out[wanted[-1]] = {"en": fields["Name"].strip(), LANGUAGE: fields[f"Name[{LANGUAGE}]"].strip()}
    return dict(sorted(out.items()))


def _negated(include: ET.Element, category: ET.Element) -> bool:
    return any(category in list(n.iter("Category")) for n in include.iter("Not"))


def menu_from_deb(deb: Path) -> tuple[str, dict[str, str]]:
    """The GNOME applications menu and its ``.directory`` files, read from the ``gnome-menus`` package."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True, capture_output=True)
        except (FileNotFoundError, subprocess.CalledProcessError) as exc:
            raise EnrichError(f"cannot unpack {deb} with dpkg-deb: {exc}") from None
        root = Path(tmp)
        menus = sorted(root.glob("etc/xdg/menus/*applications.menu"))
        if not menus:
            raise EnrichError(f"{deb}: no etc/xdg/menus/*applications.menu inside; is it {MENU_PACKAGE}?")
        directories = {p.name: p.read_text(encoding="utf-8")
                       for p in (root / "usr/share/desktop-directories").glob("*.directory")}
        return menus[0].read_text(encoding="utf-8"), directories


def write_snapshot(items: list[AppItem], categories: dict[str, dict[str, str]], out: Path, source: str,
                   english_items: int) -> dict[str, Any]:
    digest = write_items(items, out)
    (out / CATEGORIES_FILE).write_text(json.dumps(categories, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return write_manifest(out, {
        "version": out.name, "source": source, "language": LANGUAGE, "items": len(items),
        "english_snapshot": appstream.SNAPSHOT_VERSION, "english_items": english_items,
        "splits": dict(Counter(it.split for it in items)),
        "with_description": sum(1 for it in items if it.text),
        "with_own_name": sum(1 for it, en in _pairs(items) if it.name != en.name),
        "with_debtags": sum(1 for it in items if it.tags),
        "categories_named": len(categories), "sha256": digest,
    })


def _pairs(items: list[AppItem]) -> list[tuple[AppItem, AppItem]]:
    english = {it.id: it for it in appstream.load_snapshot()}
    return [(it, english[it.id]) for it in items if it.id in english]


def load_snapshot(path: Path = SNAPSHOT_DIR) -> list[AppItem]:
    return read_items(path, AppItem, "enrich data appstream-zh")


def load_categories(path: Path = SNAPSHOT_DIR) -> dict[str, dict[str, str]]:
    """``{AppStream category: {"en": name, "zh_CN": name}}``: the menu's names of the categories."""
    try:
        return json.loads((path / CATEGORIES_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EnrichError(f"{path / CATEGORIES_FILE} not found: build it with `enrich data appstream-zh`") from None


def fetch_lists(lists_dir: Path) -> None:
    """The DEP-11 metadata (``apt-get update``) and the ``gnome-menus`` package (``apt-get download``) into
    ``lists_dir`` (needs apt and root)."""
    appstream.fetch_lists(lists_dir)
    try:
        subprocess.run(["apt-get", "download", "-o", f"Dir::State::Lists={lists_dir}", MENU_PACKAGE], check=True,
                       capture_output=True, text=True, cwd=lists_dir)
    except FileNotFoundError:
        raise EnrichError("apt-get not found: pass --lists with a dir holding the DEP-11 components and "
                          f"{MENU_PACKAGE}_*.deb") from None
    except subprocess.CalledProcessError as exc:
        raise EnrichError(f"apt-get download {MENU_PACKAGE} failed: {exc.stderr.strip()[-400:]}") from None


def build_from_lists(lists_dir: Path, out: Path) -> dict[str, Any]:
    import yaml

    found = sorted(lists_dir.glob("*_dists_bookworm_main_dep11_Components-*.yml.gz"))
    debs = sorted(lists_dir.glob(f"{MENU_PACKAGE}_*.deb"))
    if not found or not debs:
        raise EnrichError(f"{lists_dir} needs *_dep11_Components-*.yml.gz and {MENU_PACKAGE}_*.deb: fetch them "
                          "first (enrich data appstream-zh --fetch)")
    with gzip.open(found[0], "rt", encoding="utf-8") as fh:
        components = [d for d in yaml.load_all(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
                      if isinstance(d, dict) and "Type" in d]
    english = appstream.load_snapshot()
    items = build(components, english)
    categories = category_names(*menu_from_deb(debs[-1]))
    return write_snapshot(items, categories, out, f"{found[0].name} + {debs[-1].name} + {appstream.SNAPSHOT_VERSION}",
                          len(english))
