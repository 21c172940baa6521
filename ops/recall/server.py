"""The recall indexes fed from the topics, and a small HTTP query API over them.

``RecallFeed`` tails ``recall.tags`` and ``recall.neighbors`` from the beginning (no consumer
group: every replica builds the whole index) and applies each record as it arrives.
``enrich recall serve`` runs it with the HTTP API; ``enrich recall tags|neighbors`` either ask
a running server (``--server``) or read the topics to their end into fresh indexes and answer.

HTTP (JSON): ``GET /tags/<tag>?k=10``, ``GET /neighbors/<item>?k=10&by=ann|cf|sid``,
``POST /neighbors`` with ``{"vector": [...], "k": 10}``, ``GET /healthz``; the inspector page at ``/``
and its views under ``/api/`` (``ops/recall/inspector.py``), behind the same token.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from enrich.errors import EnrichError
from enrich.schemas import decode
from ops.kafka.clients import TopicReader
from ops.recall.index import NeighborIndex, TagIndex
from ops.recall.inspector import PAGE, ItemStore, item_view, tag_view
from ops.settings import ToolSettings
from streams.kafka_tools import Record, read_to_end
from streams.topology import ITEMS_ENRICHED, RECALL_NEIGHBORS, RECALL_TAGS

log = logging.getLogger(__name__)
FEEDS = (RECALL_TAGS, RECALL_NEIGHBORS)
PAGE_FEEDS = (*FEEDS, ITEMS_ENRICHED)  # the page also shows what the items are


class RecallIndexes:
    def __init__(self, page_items: int = 10_000) -> None:
        self.tags = TagIndex()
        self.neighbors = NeighborIndex()
        self.cf_neighbors = NeighborIndex(vector_field="cf_vector")  # empty unless workers run a CF adapter
        self.items = ItemStore(page_items)  # what the inspector page shows of the newest items
        self.applied = 0
        self.lag: dict[str, int] = {}

    def apply(self, rec: Record) -> None:
        value = decode(rec.value)
        if rec.topic == RECALL_TAGS:
            self.tags.apply_edge(value)
        elif rec.topic == RECALL_NEIGHBORS:
            self.neighbors.apply(value)
            self.cf_neighbors.apply(value)
            self.tags.apply_enrichment(value["item_id"], int(value.get("enriched_at", 0)))
            self.items.apply_neighbor(value)
        elif rec.topic == ITEMS_ENRICHED:
            self.items.apply_enriched(value)
        self.applied += 1

    @classmethod
    def caught_up(cls, settings: ToolSettings, timeout_s: float = 120.0) -> RecallIndexes:
        """Indexes of everything the feeds hold now."""
        idx = cls()
        for rec in read_to_end(settings, FEEDS, timeout_s):
            idx.apply(rec)
        return idx

    def tag_query(self, tag: str, k: int) -> list[dict]:
        return [asdict(h) for h in self.tags.query(tag, k)]

    def neighbor_query(self, item: str, k: int, by: str = "ann") -> list[dict]:
        if by not in ("ann", "sid", "cf"):
            raise EnrichError(f"by={by!r}: expected 'ann' (content vectors), 'cf' (CF-tuned vectors) "
                              "or 'sid' (semantic-ID prefix)")
        try:
            if by == "sid":
                hits = self.neighbors.by_semantic_id(item, k)
            else:
                hits = (self.neighbors if by == "ann" else self.cf_neighbors).by_item(item, k)
        except KeyError as exc:
            raise EnrichError(str(exc.args[0])) from None
        return [asdict(h) for h in hits]


class RecallFeed(threading.Thread):
    """Applies the feeds to ``indexes`` until stopped, and keeps their lag behind the topics' ends."""

    def __init__(self, settings: ToolSettings, indexes: RecallIndexes, topics: tuple[str, ...] = FEEDS,
                 lag_every_s: float = 2.0) -> None:
        super().__init__(name="recall-feed", daemon=True)
        self.indexes = indexes
        self._reader = TopicReader(settings, topics)
        self._stopping = threading.Event()  # not _stop: Thread has a method of that name
        self._lag_every_s = lag_every_s

    def run(self) -> None:
        next_lag = 0.0
        try:
            while not self._stopping.is_set():
                for rec in self._reader.poll(0.2):
                    self.indexes.apply(rec)
                if time.monotonic() >= next_lag:
                    try:
                        self.indexes.lag = self._reader.lag()
                    except Exception as exc:  # noqa: BLE001 - the lag is for display; the feed goes on
                        log.warning("could not read the feed's lag: %s", exc)
                    next_lag = time.monotonic() + self._lag_every_s
        finally:
            self._reader.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(10)


def whole_number(value: object, what: str, low: int, high: int) -> int:
    """``value`` (a JSON number or a query string) as a whole number in [low, high], or ``EnrichError`` saying
    why: only ASCII digits, at most a few of them, never a float, a bool or a digit of another script."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= len(str(high)):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise EnrichError(f"{what} must be a whole number between {low} and {high}, not {str(value)[:40]!r}")
    if not low <= value <= high:
        raise EnrichError(f"{what} must be between {low} and {high}")
    return value


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def request_handler(indexes: RecallIndexes, settings: ToolSettings) -> type[BaseHTTPRequestHandler]:
    token = settings.recall_token.get_secret_value()
    max_body = settings.recall_max_body_bytes
    page = PAGE.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        # A socket timeout on every read: a client that sends nothing (or lies about its body) is dropped.
        timeout = settings.recall_timeout_s

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="recall"')
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if not token:
                return True
            given = self.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return True
            self._send(401, {"error": "a bearer token is required (Authorization: Bearer <ENRICH_RECALL_TOKEN>)"})
            return False

        def _body(self) -> bytes:
            raw = self.headers.get("Content-Length")
            if raw is None:
                raise _Refused(411, "Content-Length is required")
            try:
                n = int(raw)
            except ValueError:
                raise _Refused(400, f"Content-Length {raw[:40]!r} is not a number") from None
            if n < 0:
                raise _Refused(400, "Content-Length is negative")
            if n > max_body:
                raise _Refused(413, f"body of {n} bytes > {max_body} (ENRICH_RECALL_MAX_BODY_BYTES)")
            data = self.rfile.read(n)
            if len(data) < n:
                raise _Refused(400, f"body ended after {len(data)} of {n} bytes")
            return data

        def _k(self, query: dict[str, list[str]]) -> int:
            return whole_number(query.get("k", ["10"])[0], "k", 1, 1000)

        def _send_bytes(self, content_type: str, data: bytes, cache: str = "no-store") -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", cache)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            url = urlparse(self.path)
            if url.path in ("/", "/index.html"):  # the page is static and holds no data: it asks for the token
                self._send_bytes("text/html; charset=utf-8", page)
                return
            if not self._authorised():
                return
            q = parse_qs(url.query)
            parts = [unquote(p) for p in url.path.strip("/").split("/", 1)]
            try:
                self._get(parts, q)
            except EnrichError as exc:
                self._send(400, {"error": str(exc)})
            except OSError:  # the client's socket (a timeout, a reset): nobody to answer
                raise
            except Exception as exc:  # noqa: BLE001 - every request gets an answer, a bug included
                log.exception("recall api: GET %s failed", self.path[:200])
                self._send(500, {"error": f"internal error: {type(exc).__name__}"})

        def _get(self, parts: list[str], q: dict[str, list[str]]) -> None:
            if parts[0] == "api" and len(parts) == 2:
                self._page_api(parts[1], q)
            elif parts == ["healthz"]:
                self._send(200, {"items": len(indexes.neighbors), "tagged_items": len(indexes.tags),
                                 "records": indexes.applied})
            elif parts[0] == "tags" and len(parts) == 2:
                self._send(200, indexes.tag_query(parts[1], self._k(q)))
            elif parts[0] == "neighbors" and len(parts) == 2:
                self._send(200, indexes.neighbor_query(parts[1], self._k(q), q.get("by", ["ann"])[0]))
            else:
                self._send(404, {"error": "unknown path; see GET /tags/<tag>, GET /neighbors/<item>"})

        def _page_api(self, path: str, q: dict[str, list[str]]) -> None:
            """The inspector page's views: JSON, and the previews as images."""
            what, _, arg = path.partition("/")
            if what == "status":
                self._send(200, {"items": len(indexes.neighbors), "tagged_items": len(indexes.tags),
                                 "records": indexes.applied, "lag": indexes.lag,
                                 "newest": indexes.items.newest()})
            elif what == "item" and arg:
                view = item_view(indexes.items, indexes, arg, self._k(q))
                if view is None:
                    self._send(404, {"error": f"item {arg!r} is not in the indexes"})
                else:
                    self._send(200, view)
            elif what == "tag" and arg:
                self._send(200, tag_view(indexes.items, indexes, arg, self._k(q), int(time.time() * 1000)))
            elif what == "search":
                text = q.get("q", [""])[0][:200]
                self._send(200, {"items": indexes.items.search(text) if text else [],
                                 "tags": indexes.tags.matching(text) if text else []})
            elif what == "thumb" and "/" in arg:
                item, _, n = arg.rpartition("/")
                data = indexes.items.thumbnail(item, whole_number(n, "the preview number", 0, 64))
                if data is None:
                    self._send(404, {"error": f"no preview {n} of {item!r}"})
                else:
                    self._send_bytes("image/webp", data, "private, max-age=300")
            else:
                self._send(404, {"error": "unknown page view; see /api/status, /api/item/<id>, /api/tag/<tag>, "
                                          "/api/search?q=, /api/thumb/<id>/<n>"})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            if urlparse(self.path).path.strip("/") != "neighbors":
                self._send(404, {"error": "POST /neighbors with {\"vector\": [...], \"k\": 10}"})
                return
            try:
                body = json.loads(self._body() or b"{}")
                if not isinstance(body, dict):
                    raise TypeError(f"the body is a JSON {type(body).__name__}, not an object")
                vec = np.asarray(body["vector"], np.float32)
                hits = indexes.neighbors.by_vector(vec, whole_number(body.get("k", 10), "k", 1, 1000))
                self._send(200, [asdict(h) for h in hits])
            except _Refused as exc:
                self.close_connection = True
                self._send(exc.code, {"error": str(exc)})
            except RecursionError:
                self._send(400, {"error": "the JSON body is nested too deeply"})
            except (KeyError, TypeError, ValueError, EnrichError) as exc:
                self._send(400, {"error": f"expected {{\"vector\": [floats], \"k\": int}}: {exc}"})
            except OSError:  # the client's socket (a timeout while it sends its body, a reset): nobody to answer
                raise
            except Exception as exc:  # noqa: BLE001 - every request gets an answer, a bug included
                log.exception("recall api: POST failed")
                self._send(500, {"error": f"internal error: {type(exc).__name__}"})

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("recall api: " + fmt, *args)

    return Handler


def serve(settings: ToolSettings, port: int, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> None:
    """Feed the indexes live and answer queries until ``stop`` is set (or forever)."""
    indexes = RecallIndexes(settings.recall_page_items)
    feed = RecallFeed(settings, indexes, PAGE_FEEDS)
    feed.start()
    server = ThreadingHTTPServer((settings.recall_bind, port), request_handler(indexes, settings))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="recall-api", daemon=True).start()
    log.info("recall api on %s:%d (token %s), fed from %s", settings.recall_bind, server.server_address[1],
             "required" if settings.recall_token.get_secret_value() else "off", ", ".join(FEEDS))
    if ready is not None:
        ready.set()
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        feed.stop()
