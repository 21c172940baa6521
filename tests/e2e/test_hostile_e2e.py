"""A hostile producer against a live worker on the small presets: the whole hostile corpus, bombs inside
every limit, ordinary photos at the limits, and poisoned vocabulary records. Nothing may stop the
partition, every bad event is dead-lettered with its reason, nothing is lost (``enrich audit``), and the
worker with its decoders stays within the memory budget the README states."""

from __future__ import annotations

import io
import json
import signal
import time
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import pytest
from cli_runs import cli, http_get, wait_for
from hostile_corpus import all_cases, item_event, solid
from PIL import Image

from corpora import debtags
from enrich.models.meta import ModelMeta
from enrich.schemas import VocabEntry, decode, encode, vector_bytes
from ops.kafka.clients import TopicReader, publish
from ops.local.harness import start_worker
from ops.local.process import free_port

pytestmark = pytest.mark.e2e

# The README's worker memory for the small preset at the default batch (16) and media limits: the
# worker process and its two decoder processes, peak resident memory summed.
MEMORY_BUDGET_BYTES = 1536 * 1024 * 1024


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process has had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def photo(seed: int) -> bytes:
    """An ordinary photo-sized JPEG: 2000x1500 of smooth shading, tens of KB."""
    y, x = np.mgrid[0:1500, 0:2000] / 300.0
    arr = np.stack([np.sin(x + seed), np.cos(y * 1.3 - seed), np.sin(x * 0.7 + y * 0.5)], -1)
    arr = ((arr + 1) * 127.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=25)
    return buf.getvalue()


def test_a_hostile_producer_cannot_stop_the_worker_lose_items_or_exhaust_its_memory(small_stack, tmp_path):
    s = small_stack.updated(**{"topic_prefix": f"h{time.time_ns()}.", "web_port": free_port(),
                                       "group_id": f"g{time.time_ns()}", "batch_size": 16})
    assert cli(s, "topics", "create").returncode == 0
    assert cli(s, "vocab", "load", "--debtags").returncode == 0
    embedder = ModelMeta.read(s.models_path / "embedder" / "meta.json")
    poison = [  # the reported one: a 75-byte prototype naming the live embedder version, then others
        (b"poison", encode(VocabEntry("poison", prototype=vector_bytes(np.ones(3)),
                                      prototype_embedder=embedder.version))),
        (b"nan", encode(VocabEntry("nan", prototype=vector_bytes(np.full(embedder.hidden_size, np.nan)),
                                   prototype_embedder=embedder.version))),
        (b"\xff\xfe", None), (b"junk", b"\xc1\xc1"),
    ]
    publish(s, "tags.vocab", poison)

    cases = all_cases()
    photos = [photo(k) for k in range(8)]
    webp_16m = solid("WEBP", 4000, lossless=True)
    heavy = [item_event(f"photos-{k}", images=photos) for k in range(16)]  # 16 items x 8 photos of 3 Mpx
    heavy += [item_event(f"webp-{k}", images=[webp_16m, webp_16m]) for k in range(16)]  # 2 x 16 Mpx each
    good = [debtags.as_event(it) for it in debtags.load_snapshot() if it.split == "test"][:8]
    records = [(c.name.encode(), c.event) for c in cases]
    records += [(f"heavy-{k}".encode(), raw) for k, raw in enumerate(heavy)]
    records += [(e["id"].encode(), msgpack.packb(e, use_bin_type=True)) for e in good]
    want_dlq = Counter(c.reason for c in cases if c.reason)
    want_enriched = len(records) - sum(want_dlq.values())
    want_vocab_dlq = Counter({"bad_prototype": 2, "bad_tag": 1, "not_msgpack": 1})  # the poison, dead-lettered
    want_dlq_total = sum(want_dlq.values()) + sum(want_vocab_dlq.values())

    log = tmp_path / "worker.log"
    worker = start_worker(s, log)
    try:
        publish(s, "items.new", records)
        reader = TopicReader(s, ["items.enriched", "items.dlq"])
        got: dict[str, list] = {"items.enriched": [], "items.dlq": []}
        deadline = time.monotonic() + 400
        while (len(got["items.enriched"]) < want_enriched or len(got["items.dlq"]) < want_dlq_total) \
                and time.monotonic() < deadline:
            for r in reader.poll(0.5):
                got[r.topic].append(decode(r.value))
            assert worker.poll() is None, log.read_text()[-3000:]
        reader.close()
        assert len(got["items.enriched"]) == want_enriched, log.read_text()[-3000:]
        from_input = [d for d in got["items.dlq"] if d["source_topic"] == s.topic("items.new")]
        from_vocab = [d for d in got["items.dlq"] if d["source_topic"] == s.topic("tags.vocab")]
        assert Counter(d["reason"] for d in from_input) == want_dlq
        assert Counter(d["reason"] for d in from_vocab) == want_vocab_dlq
        assert all(len(msgpack.packb(d)) <= 1_000_000 for d in got["items.dlq"])
        truncated = [d for d in got["items.dlq"] if d["original_truncated"]]
        assert [d["key"] for d in truncated] == [b"oversized_invalid_event"]
        assert truncated[0]["original_bytes"] > 999_000

        decoders = children(worker.pid)
        memory = {"worker": peak_rss(worker.pid)} | {f"decoder-{p}": peak_rss(p) for p in decoders}
        (tmp_path / "memory.json").write_text(json.dumps(memory))
        print("peak RSS (MB):", {k: round(v / 2**20) for k, v in memory.items()})
        assert len(decoders) == 2
        assert sum(memory.values()) <= MEMORY_BUDGET_BYTES, memory

        metrics = wait_for(lambda: (lambda b: b if "enrich_vocab_rejected_total" in b else None)(
            http_get(s.web_port, "/metrics")[1]), 20, "vocabulary rejections in /metrics", log)
        assert 'enrich_vocab_rejected_total{reason="bad_prototype"} 2.0' in metrics
        assert 'enrich_vocab_rejected_total{reason="bad_tag"} 1.0' in metrics
        assert http_get(s.web_port, "/readyz")[0] == 200
        assert http_get(s.web_port, "/router/")[0] == 404 and http_get(s.web_port, "/table/")[0] == 404
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    assert code == 0, log.read_text()[-3000:]

    # a restarted worker has nothing to replay and nothing to crash on
    again = start_worker(s, tmp_path / "again.log")
    try:
        wait_for(lambda: http_get(s.web_port, "/readyz")[0] == 200, 60, "the restarted worker ready",
                 tmp_path / "again.log")
        time.sleep(2)
        assert again.poll() is None
    finally:
        again.send_signal(signal.SIGTERM)
        code = again.wait(60)
    assert code == 0, (tmp_path / "again.log").read_text()[-3000:]
    res = cli(s, "audit", "--json", str(tmp_path / "audit.json"))
    report = json.loads((tmp_path / "audit.json").read_text())
    assert res.returncode == 0, res.stdout + res.stderr
    # the restarted worker read tags.vocab again and dead-lettered its poison again: one letter per record counts
    assert report["enriched"] == want_enriched and report["dead_lettered"] == want_dlq_total
    assert report["dlq_by_reason"] == dict(want_dlq + want_vocab_dlq)
