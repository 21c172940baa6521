"""What the inspector page at ``/`` of ``enrich recall serve`` reads: a bounded store of the newest items.

``ItemStore`` keeps, for the most recent ``capacity`` items, what a person checking a model version wants
to see beside the recall indexes: title, kind, tags with grades, semantic ID, caption, versions (from
``items.enriched``) and the previews (from ``recall.neighbors``). Older items fall out, so the recall
server's memory stays bounded whatever the topics hold; the indexes themselves keep everything.

The views here turn index hits into what the page draws; ``ops/recall/server.py`` serves them behind the
same bind address, body cap and token as the query API. The page itself (``inspector.html``) is static:
it holds no data, and fetches everything through the authenticated JSON views.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

PAGE = Path(__file__).with_name("inspector.html")
NEWEST = 12


class ItemStore:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, item: str) -> dict[str, Any]:
        entry = self._items.pop(item, None) or {"item_id": item, "thumbnails": [], "enriched_at": -1}
        self._items[item] = entry  # newest last
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return entry

    def apply_enriched(self, rec: dict[str, Any]) -> None:
        with self._lock:
            e = self._entry(rec["item_id"])
            if int(rec.get("enriched_at", 0)) < e["enriched_at"]:
                return
            e.update({k: rec.get(k) for k in ("kind", "title", "created_at", "enriched_at", "semantic_id",
                                              "caption", "versions")})
            e["tags"] = sorted(rec.get("tags") or [], key=lambda t: (-t["grade"], -t["prob"], t["tag"]))
            e["caption_features"] = len(rec.get("caption_features") or [])
            e["seen_at"] = time.time()

    def apply_neighbor(self, rec: dict[str, Any]) -> None:
        with self._lock:
            e = self._entry(rec["item_id"])
            e["thumbnails"] = [t for t in rec.get("thumbnails") or [] if isinstance(t, bytes)]
            e.setdefault("seen_at", time.time())

    def get(self, item: str) -> dict[str, Any] | None:
        with self._lock:
            e = self._items.get(item)
            return None if e is None else dict(e)

    def thumbnail(self, item: str, n: int) -> bytes | None:
        with self._lock:
            e = self._items.get(item)
            return e["thumbnails"][n] if e is not None and 0 <= n < len(e["thumbnails"]) else None

    def newest(self, n: int = NEWEST) -> list[dict[str, Any]]:
        with self._lock:
            found = []
            for e in reversed(self._items.values()):  # newest first; stop at n, not at the whole store
                if "kind" in e:
                    found.append(self.card(e))
                    if len(found) == n:
                        break
            return found

    def search(self, q: str, n: int = 20) -> list[str]:
        q = q.lower()
        with self._lock:
            found = [i for i, e in reversed(self._items.items())
                     if q in i.lower() or q in (e.get("title") or "").lower()]
        return found[:n]

    @staticmethod
    def card(e: dict[str, Any]) -> dict[str, Any]:
        """What a list entry shows: id, title, kind, age, whether a preview exists."""
        return {"item_id": e["item_id"], "title": e.get("title") or "", "kind": e.get("kind") or "",
                "created_at": e.get("created_at") or 0, "thumbnails": len(e.get("thumbnails") or [])}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def item_view(store: ItemStore, indexes: Any, item: str, k: int) -> dict[str, Any] | None:
    """An item page: the stored item and its neighbours by content vector, CF-tuned vector and semantic ID."""
    e = store.get(item)
    if e is None and item not in indexes.neighbors:
        return None
    out = ItemStore.card(e or {"item_id": item})
    if e is not None:
        out |= {k2: e.get(k2) for k2 in ("tags", "semantic_id", "caption", "caption_features", "versions",
                                         "enriched_at")}
    out["neighbours"] = {}
    for by in ("ann", "cf", "sid"):
        try:
            hits = indexes.neighbor_query(item, k, by)
        except Exception:  # noqa: BLE001 - an index without this item (e.g. no CF adapter): no hits
            hits = []
        out["neighbours"][by] = [_hit(store, h) for h in hits]
    return out


def tag_view(store: ItemStore, indexes: Any, tag: str, k: int, now_ms: int) -> list[dict[str, Any]]:
    return [_hit(store, h) | {"age_s": max(0, (now_ms - h["created_at"]) // 1000)} for h in indexes.tag_query(tag, k)]


def _hit(store: ItemStore, hit: dict[str, Any]) -> dict[str, Any]:
    e = store.get(hit["item_id"])
    return hit | ItemStore.card(e or {"item_id": hit["item_id"]})
