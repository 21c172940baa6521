"""The Debian debtags dataset: real items, real tags and real relations nobody in this project wrote.

Items are end-user programs of the Debian archive (``role::program``) that carry at
least one *semantic* debtag. Title = package name + short description, text = the
long description from ``Translation-en`` (joined on ``Description-md5``), gold tags =
the package's semantic debtags, gold related items = other items it is installed
with: linked by ``Depends``/``Recommends``/``Suggests`` in either direction, or built
from the same source package. Co-installation is the closest thing to co-use the
archive records; shared tags are not used because a tag like ``use::editing`` links
thousands of packages.

The split is by package and deterministic: a hash of the name picks test (10%),
validation (10%) or train (80%), so an item never moves between splits when the
archive grows.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from corpora.snapshots import apt_update, read_items, write_items, write_manifest
from enrich.errors import EnrichError
from enrich.schemas import SCHEMA_VERSION, VocabEntry, now_ms
from enrich.tagging.prototypes import TagPrototypes

SNAPSHOT_VERSION = "debtags-bookworm-v1"
SNAPSHOT_DIR = Path(__file__).parent / "data" / SNAPSHOT_VERSION
# Facets that say what a package is for or works with. Dropped: how it is built or presented
# (implemented-in, interface, uitoolkit, x11, made-of, role, scope, suite, system, special)
# and locale facets (culture, iso15924).
SEMANTIC_FACETS = frozenset({
    "use", "works-with", "works-with-format", "field", "admin", "game", "hardware", "network", "protocol",
    "security", "sound", "mail", "web", "science", "biology", "junior", "office", "accessibility", "devel",
    "privacy",
})
# Inside devel::, these say what language a library binds or that it is a library: technical.
_TECHNICAL_TAG = re.compile(r"^devel::(lang:.*|library|packaging)$")
MAX_TEXT_CHARS = 1_200
SPLITS = ("train", "val", "test")
MAX_FAN_IN = 40


@dataclass(frozen=True)
class DebtagsItem:
    id: str
    title: str
    text: str
    tags: list[str]
    related: list[str] = field(default_factory=list)
    split: str = "train"


def is_semantic(tag: str) -> bool:
    # "facet::TODO" marks a package still to be tagged in that facet: a placeholder, not a tag.
    return ("::" in tag and facet(tag) in SEMANTIC_FACETS and not tag.endswith("::TODO")
            and not _TECHNICAL_TAG.match(tag))


def facet(tag: str) -> str:
    return tag.split("::", 1)[0]


def grade_of(tag: str, gold: Iterable[str]) -> int:
    """The tagger's target: 2 = a gold tag, 1 = same facet as a gold tag, 0 = unrelated."""
    gold = set(gold)
    return 2 if tag in gold else 1 if facet(tag) in {facet(g) for g in gold} else 0


def split_of(name: str) -> str:
    bucket = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def stanzas(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """deb822 paragraphs; continuation lines keep their newline, the leading space dropped."""
    cur: dict[str, str] = {}
    key = None
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            if cur:
                yield cur
            cur, key = {}, None
        elif line[0] in " \t" and key is not None:
            cur[key] += "\n" + line[1:]
        elif ":" in line:
            key, _, value = line.partition(":")
            cur[key] = value.strip()
    if cur:
        yield cur


def long_description(body: str) -> str:
    """Debian's description markup: " ." is a blank line, the rest is text."""
    out = []
    for line in body.split("\n"):
        s = line.strip()
        out.append("" if s == "." else s)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _names(relation: str) -> set[str]:
    """Package names of a relation field (alternatives and version constraints dropped)."""
    names = set()
    for part in re.split(r"[,|]", relation):
        name = part.strip().split(" ", 1)[0].split(":", 1)[0].split("(", 1)[0].strip()
        if name:
            names.add(name)
    return names


def build(packages: Iterable[str], translations: Iterable[str]) -> list[DebtagsItem]:
    """The items of a Packages index and its Translation-en index."""
    texts: dict[str, str] = {}
    for st in stanzas(translations):
        md5, desc = st.get("Description-md5"), st.get("Description-en")
        if md5 and desc:
            texts[md5] = desc
    chosen: dict[str, tuple[dict[str, str], list[str]]] = {}
    for st in stanzas(packages):
        name = st.get("Package")
        tags = [t.strip() for t in st.get("Tag", "").replace("\n", " ").split(",") if t.strip()]
        if not name or "role::program" not in tags or name in chosen:
            continue
        semantic = sorted(t for t in tags if is_semantic(t))
        desc = texts.get(st.get("Description-md5", ""))
        if semantic and desc and "\n" in desc:
            chosen[name] = (st, semantic)
    links = {name: {o for fld in ("Depends", "Recommends", "Suggests", "Pre-Depends")
                     for o in _names(st.get(fld, "")) if o in chosen and o != name}
             for name, (st, _) in chosen.items()}
    # Infrastructure (perl, python3, lsb-base, ...) is pulled in by hundreds of programs; a link to it
    # says nothing about what the two are used for.
    fan_in = Counter(o for targets in links.values() for o in targets)
    by_source: dict[str, set[str]] = defaultdict(set)
    related: dict[str, set[str]] = defaultdict(set)
    for name, (st, _) in chosen.items():
        by_source[st.get("Source", name).split(" ", 1)[0]].add(name)
        for other in links[name]:
            if fan_in[other] <= MAX_FAN_IN and fan_in[name] <= MAX_FAN_IN:
                related[name].add(other)
                related[other].add(name)
    for group in by_source.values():
        for name in group:
            related[name] |= group - {name}
    items = []
    for name in sorted(chosen):
        st, semantic = chosen[name]
        short, _, body = texts[st["Description-md5"]].partition("\n")
        items.append(DebtagsItem(id=name, title=f"{name}: {short.strip()}",
                                 text=long_description(body)[:MAX_TEXT_CHARS], tags=semantic,
                                 related=sorted(related[name]), split=split_of(name)))
    return items


def write_snapshot(items: list[DebtagsItem], out: Path, source: str) -> dict:
    """``items.jsonl.gz`` (sorted, byte-for-byte reproducible) and ``manifest.json``."""
    digest = write_items(items, out)
    tag_counts = Counter(t for it in items for t in it.tags)
    return write_manifest(out, {
        "version": out.name, "source": source, "items": len(items),
        "splits": dict(Counter(it.split for it in items)),
        "tags": len(tag_counts), "facets": sorted({t.split("::")[0] for t in tag_counts}),
        "mean_tags_per_item": round(sum(len(it.tags) for it in items) / max(1, len(items)), 3),
        "items_with_related": sum(1 for it in items if it.related),
        "sha256": digest,
    })


def load_snapshot(path: Path = SNAPSHOT_DIR) -> list[DebtagsItem]:
    return read_items(path, DebtagsItem, "enrich data debtags")


def tag_vocabulary(items: Iterable[DebtagsItem]) -> list[str]:
    return sorted({t for it in items for t in it.tags})


def vocab_entries(tags: Iterable[str], prototypes: TagPrototypes | None = None) -> list[VocabEntry]:
    """The tags as ``tags.vocab`` entries, with their prototypes where ``prototypes`` has one."""
    learned = prototypes.vector_bytes() if prototypes is not None else {}
    embedder = prototypes.embedder if prototypes is not None else ""
    return [VocabEntry(tag=t, facet=facet(t), updated_at=now_ms(), prototype=learned.get(t),
                       prototype_embedder=embedder if t in learned else "") for t in tags]


def as_event(it: DebtagsItem, created_at: int | None = None) -> dict:
    """The item as an ``items.new`` record (text only: the archive has no pictures)."""
    return {"schema": SCHEMA_VERSION, "id": it.id, "kind": "article", "title": it.title,
            "text": it.text, "images": [], "created_at": created_at if created_at is not None else now_ms()}


def read_index(path: Path) -> Iterator[str]:
    if path.suffix == ".lz4":
        proc = subprocess.run(["lz4cat", str(path)], check=True, capture_output=True, text=True)
        yield from proc.stdout.splitlines()
    elif path.suffix in (".gz", ".xz"):
        import lzma

        opener = gzip.open if path.suffix == ".gz" else lzma.open
        with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
            yield from fh
    else:
        with open(path, encoding="utf-8") as fh:
            yield from fh


def fetch_lists(lists_dir: Path) -> None:
    """``apt-get update`` with English translations into a private lists directory (needs apt and root)."""
    apt_update(lists_dir, ["Acquire::Languages=en"], "*_Packages and *_Translation-en indexes")


def find_index(lists_dir: Path, pattern: str, command: str = "enrich data debtags") -> Path:
    found = sorted(lists_dir.glob(pattern))
    if not found:
        raise EnrichError(f"no {pattern} in {lists_dir}: fetch the lists first ({command} --fetch)")
    return found[0]


def find_indexes(lists_dir: Path, suite: str = "bookworm_main") -> tuple[Path, Path]:
    return (find_index(lists_dir, f"*_dists_{suite}_binary-*_Packages*"),
            find_index(lists_dir, f"*_dists_{suite}_i18n_Translation-en*"))


def build_from_lists(lists_dir: Path, out: Path) -> dict:
    packages, translations = find_indexes(lists_dir)
    items = build(read_index(packages), read_index(translations))
    return write_snapshot(items, out, source=f"{packages.name} + {translations.name}")
