"""The recall HTTP API's limits, on a real server over a real socket: the bearer token, body caps,
lying Content-Length headers and clients that send nothing."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import numpy as np
import pytest
from pydantic import SecretStr

from enrich.schemas import vector_bytes
from ops.recall.server import RecallIndexes, request_handler
from ops.settings import ToolSettings


@pytest.fixture
def api() -> Iterator[tuple[int, RecallIndexes]]:
    settings = ToolSettings(recall_token=SecretStr("s3cret"), recall_max_body_bytes=4096, recall_timeout_s=0.5)
    assert settings.recall_bind == "127.0.0.1"  # the default: nothing beyond this host
    indexes = RecallIndexes()
    for k in range(5):
        v = np.zeros(8, np.float32)
        v[k] = 1.0
        indexes.neighbors.apply({"item_id": f"i{k}", "semantic_id": [k, 0], "vector": vector_bytes(v), "dim": 8,
                                 "created_at": 1, "enriched_at": 1})
    server = ThreadingHTTPServer((settings.recall_bind, 0), request_handler(indexes, settings))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], indexes
    server.shutdown()


def raw_request(port: int, data: bytes, read_timeout: float = 5.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks).decode(errors="replace")


def request(port: int, method: str, path: str, body: bytes = b"", token: str | None = "s3cret",
            headers: dict[str, str] | None = None) -> tuple[int, dict | list]:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    for k, v in (headers or {"Content-Length": str(len(body))}).items():
        lines.append(f"{k}: {v}")
    reply = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    status = int(reply.split(" ", 2)[1])
    return status, json.loads(reply.split("\r\n\r\n", 1)[1] or "null")


def test_a_token_is_required_when_configured(api):
    port, _ = api
    assert request(port, "GET", "/healthz", token=None)[0] == 401
    assert request(port, "GET", "/healthz", token="wrong")[0] == 401
    status, body = request(port, "GET", "/healthz")
    assert status == 200 and body["items"] == 5


def test_queries_answer_within_the_limits(api):
    port, _ = api
    vec = [1.0] + [0.0] * 7
    status, hits = request(port, "POST", "/neighbors", json.dumps({"vector": vec, "k": 2}).encode())
    assert status == 200 and hits[0]["item_id"] == "i0"
    assert request(port, "POST", "/neighbors", json.dumps({"vector": [1.0, 2.0], "k": 2}).encode())[0] == 400
    assert request(port, "POST", "/neighbors", json.dumps({"vector": vec, "k": 10**9}).encode())[0] == 400


def test_bodies_beyond_the_cap_and_lying_lengths_are_refused(api):
    port, _ = api
    status, body = request(port, "POST", "/neighbors", b"x" * 5000)
    assert status == 413 and "ENRICH_RECALL_MAX_BODY_BYTES" in body["error"]
    assert request(port, "POST", "/neighbors", headers={"Content-Length": "-1"})[0] == 400
    assert request(port, "POST", "/neighbors", headers={"Content-Length": "lots"})[0] == 400
    assert request(port, "POST", "/neighbors", headers={"X-Length": "none"})[0] == 411


def test_a_client_that_sends_nothing_is_dropped(api):
    port, _ = api
    t0 = time.monotonic()
    # claims 100 bytes of body and sends none: the server gives up after recall_timeout_s
    reply = raw_request(port, b"POST /neighbors HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n"
                              b"Content-Length: 100\r\n\r\n", read_timeout=10)
    assert time.monotonic() - t0 < 5
    assert reply == "" or " 400 " in reply.split("\r\n", 1)[0]


def _raw_get(port: int, path: str, token: str | None = "s3cret") -> tuple[int, dict[str, str], bytes]:
    lines = [f"GET {path} HTTP/1.1", "Host: x", "Connection: close"] + (
        [f"Authorization: Bearer {token}"] if token else [])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def test_the_inspector_views_show_items_tags_neighbours_and_previews_behind_the_token(api):
    from PIL import Image

    from enrich.media.thumbnails import ThumbnailSpec, thumbnail

    port, indexes = api
    preview = thumbnail(Image.new("RGBA", (300, 200), (200, 30, 30, 255)), ThumbnailSpec())
    for k in range(5):
        indexes.items.apply_enriched({"item_id": f"i{k}", "kind": "image_post", "title": f"Item number {k}",
                                      "created_at": 1, "enriched_at": 1, "semantic_id": [k, 0],
                                      "tags": [{"tag": "t-weak", "grade": 1, "prob": 0.9},
                                               {"tag": "t-strong", "grade": 2, "prob": 0.6}],
                                      "caption": "a caption", "caption_features": [1, 2, 3],
                                      "versions": {"embedder": "e1"}})
        indexes.items.apply_neighbor({"item_id": f"i{k}", "thumbnails": [preview] if k % 2 == 0 else []})
        indexes.tags.apply_edge({"item_id": f"i{k}", "tag": "t-strong", "grade": 2, "prob": 0.6, "created_at": 1,
                                 "enriched_at": 1})
    status, headers, page = _raw_get(port, "/", token=None)  # the page holds no data: served to anyone
    assert status == 200 and headers["content-type"].startswith("text/html") and b"enrich inspector" in page
    assert _raw_get(port, "/api/status", token=None)[0] == 401  # its data is behind the API's token
    assert _raw_get(port, "/api/thumb/i0/0", token=None)[0] == 401
    status, item = request(port, "GET", "/api/item/i0?k=3")
    assert status == 200 and item["title"] == "Item number 0" and item["thumbnails"] == 1
    assert [t["tag"] for t in item["tags"]] == ["t-strong", "t-weak"]  # strong first
    assert item["caption_features"] == 3 and item["semantic_id"] == [0, 0] and item["versions"] == {"embedder": "e1"}
    assert len(item["neighbours"]["ann"]) == 3 and item["neighbours"]["cf"] == []
    assert all(set(h) >= {"item_id", "score", "title", "thumbnails"} for h in item["neighbours"]["ann"])
    status, headers, body = _raw_get(port, "/api/thumb/i0/0")
    assert status == 200 and headers["content-type"] == "image/webp" and body == preview
    assert Image.open(__import__("io").BytesIO(body)).size == (96, 64)
    assert _raw_get(port, "/api/thumb/i1/0")[0] == 404 and _raw_get(port, "/api/thumb/i0/x")[0] == 400
    status, hits = request(port, "GET", "/api/tag/t-strong?k=10")
    assert status == 200 and {h["item_id"] for h in hits} == {f"i{k}" for k in range(5)}
    assert all(h["age_s"] >= 0 and h["grade"] == 2 for h in hits)
    status, found = request(port, "GET", "/api/search?q=number%203")
    assert found["items"] == ["i3"] and request(port, "GET", "/api/search?q=strong")[1]["tags"] == ["t-strong"]
    status, st = request(port, "GET", "/api/status")
    assert st["items"] == 5 and st["newest"][0]["item_id"] == "i4" and "lag" in st
    assert request(port, "GET", "/api/item/nope")[0] == 404


def test_the_page_store_keeps_only_the_newest_items():
    from ops.recall.inspector import ItemStore

    store = ItemStore(capacity=3)
    for k in range(5):
        store.apply_neighbor({"item_id": f"i{k}", "thumbnails": [b"x"]})
    assert len(store) == 3 and store.get("i0") is None and store.thumbnail("i4", 0) == b"x"
    store.apply_enriched({"item_id": "i4", "kind": "article", "enriched_at": 5, "tags": [], "title": "new"})
    store.apply_enriched({"item_id": "i4", "kind": "article", "enriched_at": 2, "tags": [], "title": "old"})
    assert store.get("i4")["title"] == "new"  # an older enrichment replayed late does not win


def test_the_feed_applies_records_until_stopped_and_stops_cleanly(monkeypatch):
    """The feed thread stops when asked and its join returns (an attribute of the thread once shadowed
    Thread._stop, so the join raised TypeError and the demo's recall thread died at shutdown)."""
    from ops.recall import server as recall

    applied, closed = [], []

    class FakeReader:
        def __init__(self, _settings, _topics) -> None:
            pass

        def poll(self, timeout: float) -> list:
            time.sleep(min(timeout, 0.01))
            return ["rec"] if not applied else []

        def lag(self) -> dict:
            return {"recall.tags": 0}

        def close(self) -> None:
            closed.append(True)

    class Indexes:
        lag: dict = {}

        def apply(self, rec) -> None:  # noqa: ANN001 - a record
            applied.append(rec)

    monkeypatch.setattr(recall, "TopicReader", FakeReader)
    feed = recall.RecallFeed(ToolSettings(), Indexes(), lag_every_s=0.01)
    feed.start()
    deadline = time.monotonic() + 5
    while not applied and time.monotonic() < deadline:
        time.sleep(0.01)
    feed.stop()
    assert applied == ["rec"] and closed == [True] and not feed.is_alive()


def test_every_malformed_request_gets_a_4xx_with_its_reason(api):
    """These four closed the connection with no answer (an exception in the handler)."""
    port, _ = api
    status, body = request(port, "GET", "/api/thumb/i0/" + "9" * 5000)  # int() refuses 4,300+ digits
    assert status == 400 and "preview number" in body["error"]
    status, body = request(port, "GET", "/api/thumb/i0/%C2%B2")  # '²': isdigit() says yes, int() says no
    assert status == 400 and "preview number" in body["error"]
    vec = [1.0] + [0.0] * 7
    status, body = request(port, "POST", "/neighbors", b'{"vector": %s, "k": 1e999}' % json.dumps(vec).encode())
    assert status == 400 and "k must be a whole number" in body["error"]
    status, body = request(port, "POST", "/neighbors", b"[" * 2000 + b"]" * 2000)  # deeper than json's recursion
    assert status == 400 and "nested too deeply" in body["error"]
    status, body = request(port, "POST", "/neighbors", json.dumps({"vector": vec, "k": True}).encode())
    assert status == 400
    assert request(port, "GET", "/tags/x?k=%C2%B2")[0] == 400
    assert request(port, "POST", "/neighbors", b"[1, 2]")[0] == 400  # JSON, but not an object
    assert request(port, "GET", "/api/thumb/i0/0")[0] == 404  # well formed, no such preview: still answered
