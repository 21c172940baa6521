"""Debian's AppStream (DEP-11) catalogue: real multimodal items nobody in this project wrote.

An item is one desktop application of the archive: its name, summary and long description
(AppStream's HTML turned into text), its categories and keywords, and its upstream icon at
64 px. Joined on package with the debtags snapshot, an item also carries the package's
semantic debtags (gold tags) and its related packages (gold neighbours, kept to items of this
catalogue). The split is the debtags one (a hash of the package name), so a package is in the
same split in both datasets and nothing trained on one is evaluated on the other.

Evaluation items come in three kinds (``KINDS``): the whole listing with its icon, the name and
summary with the icon (short text), and the icon alone.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import re
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from corpora import debtags
from corpora.snapshots import apt_update, read_items, write_items, write_manifest
from enrich.errors import EnrichError
from enrich.schemas import SCHEMA_VERSION, now_ms

SNAPSHOT_VERSION = "appstream-bookworm-v1"
SNAPSHOT_DIR = Path(__file__).parent / "data" / SNAPSHOT_VERSION
KINDS = ("long_text_image", "short_text_image", "image_only")
# what enrich eval sends of each test app: the kinds with an image and the same without it
EVAL_KINDS = ("long_text", "long_text_image", "short_text", "short_text_image", "image_only")
MAX_TEXT_CHARS = 1_200
ICON_SIZE = 64


@dataclass(frozen=True)
class AppItem:
    id: str  # the Debian package
    component: str  # the AppStream component id (e.g. org.gnome.Maps.desktop)
    name: str
    summary: str
    text: str
    categories: list[str]
    keywords: list[str]
    tags: list[str] = field(default_factory=list)  # semantic debtags, when the package has them
    related: list[str] = field(default_factory=list)
    split: str = "train"

    def event(self, kind: str, icon: bytes, created_at: int | None = None) -> dict[str, Any]:
        """The item as an ``items.new`` record of one of the three ``KINDS``."""
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
        title = "" if kind == "image_only" else f"{self.name}: {self.summary}"
        text = self.text if kind == "long_text_image" else ""
        return {"schema": SCHEMA_VERSION, "id": f"{self.id}#{kind}", "kind": "image_post", "title": title,
                "text": text, "images": [icon], "created_at": created_at if created_at is not None else now_ms()}


def app_event(it: AppItem, kind: str, icon: bytes, created_at: int | None = None) -> dict[str, Any]:
    """One of ``EVAL_KINDS`` as an ``items.new`` record (the text kinds are the image kinds unillustrated)."""
    if kind in KINDS:
        return it.event(kind, icon, created_at)
    e = it.event(f"{kind}_image", icon, created_at)
    return e | {"id": f"{it.id}#{kind}", "kind": "article", "images": []}


def keyword_labels(app: AppItem) -> list[str]:
    """An app's AppStream keywords as free-text labels (the open vocabulary the packed tagger learns to grade,
    and the one the tag prior's open-vocabulary head is fitted on)."""
    return sorted({k.strip().lower() for k in app.keywords if 2 <= len(k.strip()) <= 40})


def html_text(markup: str) -> str:
    """AppStream's description markup (p, ul/ol/li, em, code) as plain text, one paragraph a line."""
    markup = re.sub(r"<li>\s*", "\n- ", markup)
    markup = re.sub(r"</?(p|ul|ol)>", "\n", markup)
    markup = re.sub(r"<[^>]+>", "", markup)
    lines = [" ".join(line.split()) for line in html.unescape(markup).split("\n")]
    return "\n".join(line for line in lines if line)


def _localised(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("C", value.get("en"))
    return value


def _icon_name(component: dict[str, Any]) -> str | None:
    for cached in (component.get("Icon") or {}).get("cached", []):
        if cached.get("width") == ICON_SIZE:
            return str(cached["name"])
    return None


def build(components: Iterable[dict[str, Any]], icons: dict[str, bytes],
          tagged: dict[str, debtags.DebtagsItem]) -> tuple[list[AppItem], dict[str, bytes]]:
    """Desktop applications with a 64 px icon, one per package (the first component), and their icons
    re-encoded as lossless WebP; ``tagged`` is the debtags snapshot by package."""
    chosen: dict[str, tuple[dict[str, Any], str]] = {}
    for c in components:
        name = _icon_name(c)
        if c.get("Type") != "desktop-application" or not name or name not in icons:
            continue
        package = c.get("Package")
        if package and package not in chosen and _localised(c.get("Name")) and _localised(c.get("Summary")):
            chosen[package] = (c, name)
    items, out_icons = [], {}
    for package in sorted(chosen):
        c, icon = chosen[package]
        gold = tagged.get(package)
        items.append(AppItem(
            id=package, component=str(c.get("ID", "")), name=str(_localised(c["Name"])).strip(),
            summary=str(_localised(c["Summary"])).strip(),
            text=html_text(str(_localised(c.get("Description")) or ""))[:MAX_TEXT_CHARS],
            categories=sorted(set(c.get("Categories") or [])),
            keywords=sorted({str(k).strip().lower() for k in (_localised(c.get("Keywords")) or []) if str(k).strip()}),
            tags=list(gold.tags) if gold else [],
            related=sorted(r for r in (gold.related if gold else []) if r in chosen),
            split=debtags.split_of(package)))
        out_icons[package] = _webp(icons[icon])
    return items, out_icons


def _webp(png: bytes) -> bytes:
    img = Image.open(io.BytesIO(png))
    img = img.convert("RGBA") if "A" in img.getbands() or "transparency" in img.info else img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "WEBP", lossless=True, quality=100, method=6, exact=True)  # exact: transparent pixels too
    return buf.getvalue()


def write_snapshot(items: list[AppItem], icons: dict[str, bytes], out: Path, source: str) -> dict[str, Any]:
    """``items.jsonl.gz`` and ``icons.tar`` (``<package>.webp``), both byte-for-byte reproducible,
    and ``manifest.json``."""
    digest = write_items(items, out)
    with tarfile.open(out / "icons.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for package in sorted(icons):
            info = tarfile.TarInfo(f"{package}.webp")
            info.size, info.mtime, info.mode = len(icons[package]), 0, 0o644
            tar.addfile(info, io.BytesIO(icons[package]))
    return write_manifest(out, {
        "version": out.name, "source": source, "items": len(items),
        "splits": dict(Counter(it.split for it in items)),
        "with_debtags": sum(1 for it in items if it.tags),
        "test_with_debtags": sum(1 for it in items if it.tags and it.split == "test"),
        "items_with_related": sum(1 for it in items if it.related),
        "categories": len({c for it in items for c in it.categories}),
        "kinds": list(KINDS), "icon_size": ICON_SIZE,
        "sha256": digest,
        "icons_sha256": hashlib.sha256(b"".join(icons[p] for p in sorted(icons))).hexdigest(),
    })


def load_snapshot(path: Path = SNAPSHOT_DIR) -> list[AppItem]:
    return read_items(path, AppItem, "enrich data appstream")


def load_icons(path: Path = SNAPSHOT_DIR) -> dict[str, bytes]:
    with tarfile.open(path / "icons.tar") as tar:
        return {m.name.removesuffix(".webp"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def fetch_lists(lists_dir: Path) -> None:
    """``apt-get update`` with the DEP-11 metadata and icon targets on, into a private lists directory."""
    on = "::DefaultEnabled=true"
    apt_update(lists_dir, [f"Acquire::IndexTargets::deb::DEP-11{on}", f"Acquire::IndexTargets::deb::DEP-11-icons{on}",
                           f"Acquire::IndexTargets::deb::DEP-11-icons-large{on}"],
               "the *_dep11_Components-*.yml.gz and *_dep11_icons-64x64.tar.gz files")


def build_from_lists(lists_dir: Path, out: Path, tagged_snapshot: Path = debtags.SNAPSHOT_DIR) -> dict[str, Any]:
    import yaml

    def one(pattern: str) -> Path:
        found = sorted(lists_dir.glob(pattern))
        if not found:
            raise EnrichError(f"no {pattern} in {lists_dir}: fetch the lists first (enrich data appstream --fetch)")
        return found[0]

    components_file = one("*_dists_bookworm_main_dep11_Components-*.yml.gz")
    icons_file = one(f"*_dists_bookworm_main_dep11_icons-{ICON_SIZE}x{ICON_SIZE}.tar.gz")
    with gzip.open(components_file, "rt", encoding="utf-8") as fh:
        components = [d for d in yaml.load_all(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
                      if isinstance(d, dict) and "Type" in d]
    with tarfile.open(icons_file) as tar:
        icons = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    tagged = {it.id: it for it in debtags.load_snapshot(tagged_snapshot)}
    items, webp = build(components, icons, tagged)
    return write_snapshot(items, webp, out, source=f"{components_file.name} + {icons_file.name} + "
                                                    f"{debtags.SNAPSHOT_VERSION}")
