"""The real small presets through the real stream, the recall commands fed from it, the demo and the evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import msgpack
import pytest
from cli_runs import cli, re_enrich_in_shadow, run_demo, wait_for

from corpora import debtags
from ops.kafka.clients import TopicReader, publish
from ops.local.harness import settings_env, start_worker
from ops.local.process import free_port, stop_pid

pytestmark = pytest.mark.e2e


def get_json(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def enriched_ids(settings, want: int, timeout_s: float = 180) -> dict[str, dict]:
    from enrich.schemas import decode

    reader = TopicReader(settings, ["items.enriched"])
    got: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for r in reader.poll(0.5):
            v = decode(r.value)
            got[v["item_id"]] = v
    reader.close()
    return got


def test_recall_commands_answer_from_the_live_feeds_and_follow_re_enrichment(small_stack, tmp_path):
    s = small_stack.updated(**{"topic_prefix": f"r{time.time_ns()}.", "web_port": free_port(),
                                       "group_id": f"g{time.time_ns()}"})
    assert cli(s, "topics", "create").returncode == 0
    items = debtags.load_snapshot()
    res = cli(s, "vocab", "load", "--debtags")
    assert res.returncode == 0 and f"published {len(debtags.tag_vocabulary(items))} tags" in res.stdout, res.stderr
    worker = start_worker(s, tmp_path / "worker.log")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ops.cli", "recall", "serve", "--port", str(port)],
                              env=settings_env(s), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        picked = {it.id: it for it in items if it.id in ("0ad", "freeciv", "abcde", "flac", "lame",
                                                          "vorbis-tools", "cdparanoia", "pingus")}
        events = [debtags.as_event(it) for it in picked.values()]
        publish(s, "items.new", [(e["id"].encode(), msgpack.packb(e, use_bin_type=True)) for e in events])
        records = enriched_ids(s, len(events))
        assert set(records) == set(picked), (tmp_path / "worker.log").read_text()[-3000:]

        # tags: an item is found under each tag it was graded for, best grade first
        some = next(r for r in records.values() if r["tags"])
        tag = some["tags"][0]["tag"]
        res = cli(s, "recall", "tags", tag, "--json")
        assert res.returncode == 0, res.stderr
        hits = json.loads(res.stdout)
        assert some["item_id"] in [h["item_id"] for h in hits]
        assert [h["grade"] for h in hits] == sorted((h["grade"] for h in hits), reverse=True)

        # neighbours: the audio tools find each other before the games do
        res = cli(s, "recall", "neighbors", "flac", "--k", "3", "--json")
        assert res.returncode == 0, res.stderr
        near = [h["item_id"] for h in json.loads(res.stdout)]
        assert len(near) == 3 and "flac" not in near
        assert set(near) <= {"lame", "vorbis-tools", "abcde", "cdparanoia"}
        res = cli(s, "recall", "neighbors", "flac", "--by", "sid", "--json")
        assert res.returncode == 0 and all(h["score"] >= 1 for h in json.loads(res.stdout))
        # the shipped CF adapter is served: CF-tuned vectors have their own index
        assert records["flac"]["versions"]["cf_adapter"].startswith("cf-adapter-debtags-v1-")
        res = cli(s, "recall", "neighbors", "flac", "--by", "cf", "--k", "3", "--json")
        assert res.returncode == 0 and len(json.loads(res.stdout)) == 3, res.stderr
        assert records["flac"]["caption_features"] and records["flac"]["caption"].startswith("article, text only")
        res = cli(s, "recall", "neighbors", "no-such-item")
        assert res.returncode == 1 and "not in the neighbour index" in res.stderr

        # the server was fed live and agrees with the catch-up read
        wait_for(lambda: get_json(port, "/healthz")["items"] == len(picked), 30, "the recall server catching up")
        assert [h["item_id"] for h in get_json(port, f"/tags/{tag}?k=10")] == [h["item_id"] for h in hits]
        res = cli(s, "recall", "tags", tag, "--server", f"http://127.0.0.1:{port}", "--json")
        assert res.returncode == 0 and [h["item_id"] for h in json.loads(res.stdout)] == [h["item_id"] for h in hits]

        # re-enrichment: flac comes back as a strategy game; its audio tags leave the index, the new ones arrive
        before = {t["tag"] for t in records["flac"]["tags"]}
        game = dict(debtags.as_event(picked["0ad"]), id="flac")
        publish(s, "items.new", [(b"flac", msgpack.packb(game, use_bin_type=True))])

        def moved() -> bool:
            near = [h["item_id"] for h in get_json(port, "/neighbors/flac?k=1")]
            return near == ["0ad"]

        wait_for(moved, 60, "flac's new vector in the live index")
        new = wait_for(lambda: _latest(s, "flac", records["flac"]["enriched_at"]), 30, "flac's new record")
        now = {t["tag"] for t in new["tags"]}
        assert now != before
        for t in before | now:  # the live index holds exactly the new enrichment's edges
            listed = "flac" in [h["item_id"] for h in get_json(port, f"/tags/{t}?k=50")]
            assert listed == (t in now), t
    finally:
        stop_pid(server.pid, 10, server)
        stop_pid(worker.pid, 30, worker)


def _latest(settings, item: str, after: int) -> dict | None:
    from enrich.schemas import decode

    reader = TopicReader(settings, ["items.enriched"])
    found = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for r in reader.poll(0.5):
            v = decode(r.value)
            if v["item_id"] == item and v["enriched_at"] > after:
                found = v
    reader.close()
    return found


def test_demo_uses_the_small_presets_and_reads_sensibly(small_model_settings, tmp_path):
    out = run_demo(small_model_settings, tmp_path)
    assert "gold (debtags):" in out and "neighbours:" in out and "CF-tuned neighbours:" in out
    assert "minilm-effnet-fusion-" in out and "minilm-effnet-packed-tagger-" in out and "feature ids" in out
    # application listings with their icons, each beside its twin without the icon, and icons alone
    assert out.count("the icon changed:") >= 4 and "(an image alone)" in out and "an image alone;" in out


def test_eval_command_reports_every_metric_beside_the_baselines(small_model_settings, tmp_path):
    s = small_model_settings.updated(state_dir=tmp_path)
    env = settings_env(s) | {"ENRICH_MODEL_DIR": str(small_model_settings.models_path),
                             "ENRICH_CODEBOOK": str(small_model_settings.codebook_path)}
    out = tmp_path / "eval.json"
    res = subprocess.run([sys.executable, "-m", "ops.cli", "eval", "--limit", "8", "--catalogue-limit", "200",
                          "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["test_items"] == 8 and r["catalogue_items"] == 200
    kinds = r["per_kind"]["kinds"]  # the AppStream test apps through the same stream, per kind
    assert set(kinds) == {"long_text", "long_text_image", "short_text", "short_text_image", "image_only"}
    assert r["per_kind"]["test_apps"] == 8 and all(0 <= k["tags_grade2"]["f1"] <= 1 for k in kinds.values())
    assert 0 < kinds["long_text_image"]["gate_image_share"] < kinds["image_only"]["gate_image_share"] <= 1
    assert set(r["per_kind"]["targets"]) >= {"long_text_image tag_f1", "image_only tag_f1 vs most popular"}
    assert "per kind:" in res.stdout and "image share" in res.stdout
    for name in ("tagger_grade>=1", "tagger_grade=2", "zero_shot_top3", "knn_propagation_top3", "prototype_top3",
                 "neighbour_votes_alone"):
        assert set(r["tagging"][name]) == {"precision", "recall", "f1"}
        assert all(0 <= v <= 1 for v in r["tagging"][name].values())
    assert r["tagger_pairs"]["pairs"] > 16 and 0 <= r["tagger_pairs"]["accuracy"] <= 1
    for index in ("ann_index", "cf_ann_index", "semantic_id_prefix"):
        assert set(r["neighbours"][index]) == {"recall@10", "ndcg@10"}
    assert r["throughput"]["items_per_s"] > 0
    assert r["tag_prior"]["version"] == r["versions"]["tag_prior"]  # the workers ran the shipped prior
    assert "kNN propagation" in res.stdout and "semantic-ID prefix" in res.stdout


def test_backfill_re_enriches_real_packages_in_a_shadow_deployment(small_stack, tmp_path):
    live = small_stack.updated(**{"topic_prefix": f"b{time.time_ns()}.", "group_id": f"g{time.time_ns()}"})
    assert cli(live, "topics", "create").returncode == 0
    picked = [it for it in debtags.load_snapshot() if it.split == "test"][:6]
    publish(live, "items.new", [(it.id.encode(), msgpack.packb(debtags.as_event(it), use_bin_type=True))
                                for it in picked])
    enriched = re_enrich_in_shadow(live, tmp_path, len(picked), vocab_args=("--debtags",))
    assert set(enriched) == {it.id for it in picked}
    assert all(r["versions"]["cf_adapter"] and r["cf_embedding"] for r in enriched.values())
    assert sum(bool(r["tags"]) for r in enriched.values()) >= 4  # real packages get real tags
