"""The worker and CLI as subprocesses against the real broker and Triton."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import msgpack
import pytest
from cli_runs import cli, http_get, re_enrich_in_shadow, read_until, run_demo, wait_for

from corpora import samples
from ops.kafka.clients import publish
from ops.local.harness import start_worker
from ops.local.process import free_port
from streams.kafka_tools import read_to_end

pytestmark = pytest.mark.e2e


def test_every_output_topic_and_the_dlq(fresh, tmp_path):
    worker = start_worker(fresh, tmp_path / "worker.log")
    try:
        res = cli(fresh, "publish", "--items", "12", "--malformed")
        assert res.returncode == 0, res.stderr
        got = read_until(fresh, {"items.enriched": 12, "recall.neighbors": 12, "items.dlq": 8}, 120)
        lag_series = f'enrich_consumer_lag{{partition="0",topic="{fresh.topic("items.new")}"}}'
        deadline = time.monotonic() + 15  # lag is sampled every lag_interval_s, on a busy machine late
        while lag_series not in http_get(fresh.web_port, "/metrics")[1] and time.monotonic() < deadline:
            time.sleep(0.25)
        probes = {path: http_get(fresh.web_port, path) for path in ("/livez", "/readyz", "/metrics")}
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]
    ids = {i["id"] for i in samples.sample_items(12)}
    enriched = {k.decode(): v for k, v in got["items.enriched"]}
    assert set(enriched) == ids and len(got["items.enriched"]) == 12
    assert {k.decode() for k, _ in got["recall.neighbors"]} == ids and len(got["recall.neighbors"]) == 12
    edges = {(v["tag"], v["item_id"]) for _, v in got["recall.tags"]}
    assert edges == {(t["tag"], i) for i, r in enriched.items() for t in r["tags"]}
    assert len(got["recall.tags"]) == len(edges)
    reasons = sorted(v["reason"] for _, v in got["items.dlq"])
    assert reasons == sorted(r for r, _ in samples.malformed_events())
    res = cli(fresh, "audit")
    assert res.returncode == 0 and "OK: every input has exactly one effect" in res.stdout, res.stdout + res.stderr
    assert "enriched 12, dead-lettered 8" in res.stdout
    assert all(v["source_topic"] == fresh.topic("items.new") and v["original"] for _, v in got["items.dlq"])
    assert all(r["versions"]["codebook"].startswith("rqvae-L3K16-") for r in enriched.values())
    # Full semantic IDs: three codes and the collision digit, unique across items, the same on both feeds.
    assert all(len(r["semantic_id"]) == 4 for r in enriched.values())
    assert len({tuple(r["semantic_id"]) for r in enriched.values()}) == 12
    assert {k.decode(): v["semantic_id"] for k, v in got["recall.neighbors"]} == {
        i: r["semantic_id"] for i, r in enriched.items()}
    # The Helm chart's probes and ServiceMonitor rely on these.
    assert probes["/livez"][0] == 200 and probes["/readyz"][0] == 200
    assert json.loads(probes["/readyz"][1])["vocab_tags"] == 30
    page = probes["/metrics"][1]
    assert "enrich_items_enriched_total 12.0" in page
    assert 'enrich_model_request_seconds_count{backend="triton",model="embedder_text"}' in page
    assert lag_series in page
    assert "enrich_paused_partitions 0.0" in page


def test_no_item_lost_when_the_worker_is_killed_mid_stream(fresh, tmp_path):
    n = 60
    first = start_worker(fresh.updated(batch_size=2), tmp_path / "w1.log")
    res = cli(fresh, "publish", "--items", str(n), "--seed", "3")
    assert res.returncode == 0, res.stderr
    # Kill it hard once it has produced something but (very likely) not everything.
    partial = read_until(fresh, {"items.enriched": 5}, 90, topics=["items.enriched"])
    assert len(partial["items.enriched"]) >= 5, (tmp_path / "w1.log").read_text()[-3000:]
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL  # killed, not exited on its own
    done_at_kill = {r.key for r in read_to_end(fresh, ["items.enriched"], timeout_s=30)}
    assert 5 <= len(done_at_kill) < n, f"the kill landed after {len(done_at_kill)} of {n} items: not mid-stream"
    second = start_worker(fresh, tmp_path / "w2.log")
    try:
        got = read_until(fresh, {"items.enriched": n}, 150, topics=["items.enriched"])
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    seen = {k.decode() for k, _ in got["items.enriched"]}
    assert seen == {i["id"] for i in samples.sample_items(n, seed=3)}, (tmp_path / "w2.log").read_text()[-3000:]
    # Replayed items were rewritten identically (same collision digits), nothing is missing.
    res = cli(fresh, "audit", "--json", str(tmp_path / "audit.json"))
    report = json.loads((tmp_path / "audit.json").read_text())
    assert res.returncode == 0 and report["ok"], res.stdout
    assert report["enriched"] == n and report["conflicts"] == [] and report["missing"] == []


def test_collision_digits_are_stable_across_restarts_and_replays(fresh, tmp_path):
    # Identical content under different ids: identical embeddings, so one code tuple shared by all.
    template = samples.sample_items(1, seed=11)[0]

    def twins(ids):
        return [(i.encode(), msgpack.packb(template | {"id": i}, use_bin_type=True)) for i in ids]

    def semantic_ids(n):
        got = read_until(fresh, {"items.enriched": n}, 120, topics=["items.enriched"], records=True)["items.enriched"]
        return [(k.decode(), v["semantic_id"]) for k, v in got]

    first = start_worker(fresh, tmp_path / "w1.log")
    try:
        publish(fresh, "items.new", twins(["twin-a", "twin-b", "twin-c"]))
        before = dict(semantic_ids(3))
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert len({tuple(sid[:3]) for sid in before.values()}) == 1, before
    assert sorted(sid[3] for sid in before.values()) == [0, 1, 2]

    # A new worker process recovers the digit table from its changelog: replays keep their digits,
    # a newcomer to the same code tuple gets the next one.
    second = start_worker(fresh, tmp_path / "w2.log")
    try:
        publish(fresh, "items.new", twins(["twin-b", "twin-a", "twin-d"]))
        after = semantic_ids(6)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    for item_id, sid in after:
        if item_id in before:
            assert sid == before[item_id], (tmp_path / "w2.log").read_text()[-3000:]
    assert dict(after)["twin-d"] == [*before["twin-a"][:3], 3]


def test_audit_exits_non_zero_when_inputs_have_no_output(fresh):
    assert cli(fresh, "publish", "--items", "3").returncode == 0
    res = cli(fresh, "audit")  # no worker ran: nothing was enriched
    assert res.returncode == 1 and "missing: 3" in res.stdout and "FAILED" in res.stdout, res.stdout + res.stderr


def test_worker_survives_fuzzed_input(fresh, tmp_path):
    worker = start_worker(fresh, tmp_path / "worker.log")
    try:
        res = cli(fresh, "publish", "--items", "10", "--fuzz", "400", "--seed", "8")
        assert res.returncode == 0, res.stderr
        read_until(fresh, {"items.enriched": 10, "items.dlq": 400}, 150, topics=["items.enriched", "items.dlq"])
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        assert http_get(fresh.web_port, "/readyz")[0] == 200
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    res = cli(fresh, "audit", "--json", str(tmp_path / "audit.json"))
    report = json.loads((tmp_path / "audit.json").read_text())
    assert res.returncode == 0 and report["enriched"] == 10 and report["dead_lettered"] == 400, res.stdout
    expected = Counter(reason for reason, _ in samples.fuzz_events(400, 8))
    assert report["dlq_by_reason"] == dict(expected)


def test_demo_command_prints_enriched_output(model_settings, tmp_path):
    out = run_demo(model_settings, tmp_path)
    assert "image_undecodable" in out and "neighbours:" in out and "stack stopped" in out


def test_cli_explains_bad_settings():
    env = dict(os.environ, ENRICH_BATCH_SIZE="zero")
    res = subprocess.run([sys.executable, "-m", "ops.cli", "topics", "create"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "batch_size" in res.stderr and "ENRICH_" in res.stderr


def test_triton_outage_and_rebalances_lose_nothing(fresh, tmp_path):
    """Triton is killed under load and comes back; meanwhile a second worker joins and the first is stopped.
    The worker pauses its input while the backend is down and says so; the audit finds every item once."""
    from ops.local.triton import LocalTriton

    ports = {k: free_port() for k in ("http", "grpc", "metrics")}
    s = fresh.updated(**{"triton_url": f"127.0.0.1:{ports['grpc']}", "retry_max_s": 1.0})
    repo = s.state_dir / "triton-repo"

    def triton() -> LocalTriton:
        return LocalTriton(repo, s.state_dir, ports["http"], ports["grpc"], ports["metrics"]).start_and_wait()

    server = triton()
    w1_log, w2_log = tmp_path / "w1.log", tmp_path / "w2.log"
    w1 = start_worker(s, w1_log)
    w2 = None
    try:
        assert cli(s, "publish", "--items", "30", "--seed", "21").returncode == 0
        wait_for(lambda: read_until(s, {"items.enriched": 5}, 2, topics=["items.enriched"])["items.enriched"],
                 90, "first outputs", w1_log)
        os.killpg(server.pid, signal.SIGKILL)
        server.proc.wait(30)
        assert cli(s, "publish", "--items", "30", "--seed", "22").returncode == 0

        def down() -> dict | None:
            status, body = http_get(s.web_port, "/readyz")
            ready = json.loads(body) if body.startswith("{") else {}
            return ready if status == 503 and ready.get("paused_partitions") else None

        ready = wait_for(down, 60, "/readyz 503 with paused partitions", w1_log)
        assert ready["backend_ok"] is False
        page = http_get(s.web_port, "/metrics")[1]
        assert "enrich_backend_up 0.0" in page and "enrich_paused_partitions 0.0" not in page

        # Scale out while the backend is down, then in: a worker stuck on a dead backend still stops promptly,
        # its unacked batches go to the other worker.
        w2_port = free_port()
        w2 = start_worker(s.updated(web_port=w2_port), w2_log)
        time.sleep(8)
        w1.send_signal(signal.SIGTERM)
        w1.wait(30)
        server = triton()
        wait_for(lambda: http_get(w2_port, "/readyz")[0] == 200, 60, "/readyz 200 again", w2_log)
        assert cli(s, "publish", "--items", "30", "--seed", "23").returncode == 0
        expected = {i["id"] for seed in (21, 22, 23) for i in samples.sample_items(30, seed=seed)}
        got = read_until(s, {"items.enriched": len(expected)}, 150, topics=["items.enriched"])
        assert {k.decode() for k, _ in got["items.enriched"]} == expected, w2_log.read_text()[-3000:]
    finally:
        for w in (w1, w2):
            if w is not None and w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(60)
        server.stop()
    res = cli(s, "audit", "--json", str(tmp_path / "audit.json"))
    report = json.loads((tmp_path / "audit.json").read_text())
    assert res.returncode == 0 and report["missing"] == [] and report["conflicts"] == [], res.stdout
    assert report["enriched"] == 90


def test_chaos_restarts_scale_out_and_in_lose_nothing(fresh, tmp_path, request):
    """Waves of items and malformed events while workers are added, SIGKILLed, restarted and stopped (each
    change a rebalance), with a burst far larger than the stream buffers. `--soak` runs more waves and items."""
    soak = request.config.getoption("--soak")
    waves, per_wave = (12, 150) if soak else (4, 60)
    bad_per_wave = per_wave // 10
    s = fresh.updated(batch_size=4)  # buffers of 64 events: every wave overflows them
    workers: dict[int, subprocess.Popen] = {}
    faults = Counter()
    actions = ["start", "kill", "start", "term", "start", "start", "kill", "term"]

    def start(n: int) -> None:
        workers[n] = start_worker(s.updated(web_port=free_port()), tmp_path / f"w{n}.log")

    start(0)
    try:
        for wave in range(waves):
            assert cli(s, "publish", "--items", str(per_wave), "--fuzz", str(bad_per_wave),
                       "--seed", str(100 + wave)).returncode == 0
            time.sleep(4)
            action = actions[wave % len(actions)]
            alive = sorted(n for n, w in workers.items() if w.poll() is None)
            if action == "start" or len(alive) < 2:
                start(max(workers) + 1)
                faults["scale_out"] += 1
            elif action == "kill":
                os.kill(workers[alive[-1]].pid, signal.SIGKILL)
                workers[alive[-1]].wait(10)
                faults["sigkill"] += 1
            else:
                workers[alive[0]].send_signal(signal.SIGTERM)
                workers[alive[0]].wait(60)
                faults["sigterm"] += 1
        expected = {i["id"] for wave in range(waves) for i in samples.sample_items(per_wave, seed=100 + wave)}
        got = read_until(s, {"items.enriched": len(expected)}, 300, topics=["items.enriched"])
        seen = {k.decode() for k, _ in got["items.enriched"]}
        assert seen == expected, f"{len(expected - seen)} missing; faults {dict(faults)}"
    finally:
        for w in workers.values():
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(60)
    res = cli(s, "audit", "--json", str(tmp_path / "audit.json"))
    report = json.loads((tmp_path / "audit.json").read_text())
    summary = {"items": len(expected), "faults": dict(faults), "rewrites": report["rewrites"],
               "missing": len(report["missing"]), "conflicts": len(report["conflicts"]),
               "dlq_by_reason": report["dlq_by_reason"], "dlq_rewrites": report["dlq_rewrites"]}
    (tmp_path.parent / "chaos-summary.json").write_text(json.dumps(summary))
    print("chaos summary:", json.dumps(summary))
    assert res.returncode == 0 and report["enriched"] == len(expected), res.stdout
    expected_reasons = Counter(reason for wave in range(waves)
                               for reason, _ in samples.fuzz_events(bad_per_wave, 100 + wave))
    assert report["dlq_by_reason"] == dict(expected_reasons), res.stdout


def test_backfill_re_enriches_into_a_shadow_deployment_with_the_new_codebook(fresh, tmp_path):
    res = cli(fresh, "publish", "--items", "10")
    assert res.returncode == 0, res.stderr
    enriched = re_enrich_in_shadow(fresh, tmp_path, 10)
    assert set(enriched) == {i["id"] for i in samples.sample_items(10)}


def test_items_coded_is_a_versioned_contract_between_old_and_new_workers(fresh, tmp_path):
    """A rolling update: the previous release wrote bare lists to items.coded, which this worker still reads;
    a newer release writes a version this worker cannot read, and it stops there without committing past it."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.publish_stage import publish_group

    log = tmp_path / "worker.log"
    worker = start_worker(fresh, log)
    try:
        publish(fresh, "items.new", [(i["id"].encode(), msgpack.packb(i, use_bin_type=True))
                                     for i in samples.sample_items(2, seed=21)])
        coded = read_until(fresh, {"items.coded": 2}, 120, topics=["items.coded"], records=True)["items.coded"]
        key, current = coded[0]
        assert current["schema"] == 1 and {"record", "neighbor", "edges"} <= current.keys()
        # what the previous release wrote for an item: [record, neighbor, edges]
        old = [current["record"] | {"item_id": "from-old-worker"}, current["neighbor"] | {"item_id": "from-old-worker"},
               current["edges"]]
        publish(fresh, "items.coded", [(key, msgpack.packb(old, use_bin_type=True))], partition=0)
        got = read_until(fresh, {"items.enriched": 3}, 120, topics=["items.enriched"])["items.enriched"]
        assert b"from-old-worker" in {k for k, _ in got}, log.read_text()[-3000:]
        # what a newer release might write: this worker must not guess
        publish(fresh, "items.coded", [(key, msgpack.packb({"schema": 2, "future": True}))], partition=0)
        code = worker.wait(90)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    assert code != 0 and "schema 2" in log.read_text() and "rolling update" in log.read_text()
    topic = fresh.topic("items.coded")
    c = Consumer({**fresh.consumer_config(publish_group(fresh))})  # the second stage's group
    try:
        committed = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
    finally:
        c.close()
    assert committed < high  # the newer record is still there for a worker that can read it
