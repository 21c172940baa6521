"""Fair sharing of a worker: a backlog on one items.new partition does not starve a trickle on another, nor
the vocabulary feed, nor the second stage."""

from __future__ import annotations

import json
import signal
import threading
import time

import msgpack
import numpy as np
import pytest
from cli_runs import http_get, wait_for

from corpora import samples
from enrich.schemas import VocabEntry, encode, now_ms
from ops.kafka.clients import TopicReader, publish
from ops.local.harness import start_worker

pytestmark = pytest.mark.e2e


def test_a_backlog_on_one_partition_does_not_starve_a_trickle_on_another(fresh, tmp_path):
    s = fresh.updated(batch_size=8, inflight_batches=2)
    log = tmp_path / "worker.log"
    worker = start_worker(s, log)
    reader = TopicReader(s, ["items.enriched"])
    outputs: dict[str, int] = {}
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            for r in reader.poll(0.2):
                outputs.setdefault(r.key.decode(), r.timestamp_ms)

    collector = threading.Thread(target=collect, daemon=True)
    try:
        wait_for(lambda: http_get(s.web_port, "/readyz")[0] == 200, 120, "the worker ready", log)
        collector.start()
        pool = samples.sample_items(60, seed=71)
        backlog = [pool[k % len(pool)] | {"id": f"backlog-{k:05d}", "created_at": now_ms()} for k in range(1500)]
        publish(s, "items.new", [(i["id"].encode(), msgpack.packb(i, use_bin_type=True)) for i in backlog],
                partition=0)
        wait_for(lambda: len(outputs) >= 50, 120, "the backlog flowing", log)
        started = time.monotonic()
        trickle: dict[str, int] = {}
        for k in range(12):
            item = pool[k] | {"id": f"trickle-{k:02d}", "created_at": now_ms()}
            trickle[item["id"]] = item["created_at"]
            publish(s, "items.new", [(item["id"].encode(), msgpack.packb(item, use_bin_type=True))], partition=1)
            if k == 6:  # a new tag while the backlog flows: the vocabulary feed is not starved either
                tag = VocabEntry("fairness-new-tag", description="a tag published during a backlog")
                published_tag = time.monotonic()
                publish(s, "tags.vocab", [(tag.tag.encode(), encode(tag))])
            time.sleep(0.5)
        wait_for(lambda: trickle.keys() <= outputs.keys(), 120, "the trickle out", log)
        trickle_done = max(outputs[i] for i in trickle)
        vocab_seen = wait_for(lambda: json.loads(http_get(s.web_port, "/readyz")[1]).get("vocab_tags") == 31 and
                              time.monotonic(), 60, "the new tag in the vocabulary", log)
        wait_for(lambda: len([k for k in outputs if k.startswith("backlog-")]) == len(backlog), 600,
                 "the whole backlog out", log)
    finally:
        stop.set()
        worker.send_signal(signal.SIGTERM)
        worker.wait(90)
    latencies_s = np.array([(outputs[i] - c) / 1000 for i, c in trickle.items()])
    backlog_out = sorted(outputs[i["id"]] for i in backlog)
    drain_s = (backlog_out[-1] - backlog_out[0]) / 1000
    batch_s = s.batch_size / (len(backlog) / drain_s)  # one batch's share of the backlog's drain
    summary = {"trickle_p50_s": round(float(np.median(latencies_s)), 3),
               "trickle_max_s": round(float(latencies_s.max()), 3),
               "batch_s": round(batch_s, 3), "backlog_drain_s": round(drain_s, 1),
               "trickle_done_before_backlog": trickle_done < backlog_out[-1],
               "new_tag_in_vocabulary_after_s": round(vocab_seen - published_tag, 2), "since_trickle_s":
               round(time.monotonic() - started, 1)}
    print("fairness:", json.dumps(summary))
    assert summary["trickle_done_before_backlog"], summary  # the trickle did not queue behind the backlog
    assert latencies_s.max() <= max(10 * batch_s, 2.0), summary  # a few batches' time, not the backlog's
    assert summary["new_tag_in_vocabulary_after_s"] < 15, summary
