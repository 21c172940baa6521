"""Committed dataset snapshots: records as sorted JSON lines in a gzip that is byte-for-byte reproducible."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from enrich.errors import EnrichError

T = TypeVar("T")
ITEMS_FILE = "items.jsonl.gz"


def write_items(items: Iterable[Any], out: Path) -> str:
    """``out/items.jsonl.gz`` of the dataclass records (the gzip has no timestamp); returns the SHA-256 of
    the uncompressed lines, for the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(asdict(it), sort_keys=True, ensure_ascii=False) + "\n" for it in items).encode()
    with open(out / ITEMS_FILE, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(payload)
    return hashlib.sha256(payload).hexdigest()


def write_manifest(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_items(path: Path, record: Callable[..., T], build_command: str) -> list[T]:
    try:
        with gzip.open(path / ITEMS_FILE, "rt", encoding="utf-8") as fh:
            return [record(**json.loads(line)) for line in fh]
    except FileNotFoundError:
        raise EnrichError(f"{path}/{ITEMS_FILE} not found: build it with `{build_command}`") from None


def apt_update(lists_dir: Path, options: list[str], needs: str) -> None:
    """``apt-get update`` into a private lists directory with extra ``-o`` options (needs apt and root);
    ``needs`` says which index files ``--lists`` must hold instead."""
    import subprocess

    (lists_dir / "partial").mkdir(parents=True, exist_ok=True)
    cmd = ["apt-get", "update", "-o", f"Dir::State::Lists={lists_dir}"]
    for opt in options:
        cmd += ["-o", opt]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise EnrichError(f"apt-get not found: run this on a Debian machine, or pass --lists with a directory that "
                          f"holds {needs}") from None
    except subprocess.CalledProcessError as exc:
        raise EnrichError(f"apt-get update failed (root needed?): {exc.stderr.strip()[-400:]}") from None
