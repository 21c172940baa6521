"""`enrich`: the command line of the service.

  enrich demo                     the whole path on the embedded local stack
  enrich worker                   run a Faust worker (settings from ENRICH_* variables)
  enrich bench                    measure throughput and latency on a private local stack
  enrich audit                    every input enriched or dead-lettered, no conflicting duplicates (exit 1 if not)
  enrich stack up|down            start/stop the local broker + Triton in the background
  enrich topics create|spec|check  create the topics as specified, print the spec, or report drift (exit 1)
  enrich models export            export presets or checkpoints to ONNX (+ parity check)
  enrich models repository        write a Triton model repository (local or production)
  enrich codebook fit|eval        train / evaluate the semantic-ID codebook (RQ-VAE)
  enrich vocab load               publish tags to tags.vocab
  enrich recall serve|tags|neighbors  reference recall indexes fed from recall.tags / recall.neighbors
  enrich data debtags             build the Debian debtags dataset snapshot (real items, tags, relations)
  enrich data appstream           build the AppStream snapshot (desktop apps: listings and icons, joined with debtags)
  enrich backfill                 replay items into a shadow deployment after a model change
  enrich tail TOPIC               decoded records of a topic (--from-beginning, --key ID, --json)
  enrich capacity --rate R        partitions, workers, GPUs, broker throughput for R new items/s (measured costs)
  enrich eval                     quality of the small presets on the debtags test split, with baselines
  enrich publish                  publish sample items to items.new
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from enrich.errors import EnrichError, ModelConfigError
from enrich.logs import configure
from enrich.settings import Settings

log = logging.getLogger("enrich")


def _say(msg: str) -> None:
    print(msg, flush=True)


def cmd_demo(s: Settings, a: argparse.Namespace) -> int:
    from ops.demo import run_demo

    return run_demo(s, n_items=a.items, wait=not a.no_wait and sys.stdin.isatty())


def _numbers(text: str, kind: type, flag: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise EnrichError(f"{flag} expects a comma-separated list of positive numbers, e.g. 4,16,32 (got {text!r})")
    return values


def cmd_bench(s: Settings, a: argparse.Namespace) -> int:
    from ops.bench import BenchConfig, run_bench

    if a.items < 20:
        raise EnrichError("--items must be at least 20 for percentiles to mean anything")
    cfg = BenchConfig(items=a.items, batch_sizes=_numbers(a.batch_sizes, int, "--batch-sizes"),
                      waits_s=_numbers(a.waits, float, "--waits"), inflight=_numbers(a.inflight, int, "--inflight"),
                      steady_s=a.steady_s, out=a.out)
    run_bench(s, cfg, say=_say)
    return 0


def cmd_audit(s: Settings, a: argparse.Namespace) -> int:
    from ops.audit import run_audit

    report = run_audit(s, timeout_s=a.timeout)
    _say(report.summary())
    if a.json:
        a.json.write_text(report.to_json() + "\n")
    return 0 if report.ok else 1


def cmd_worker(s: Settings, a: argparse.Namespace) -> int:
    from streams.worker import run_worker

    run_worker(s)
    return 0


def cmd_stack(s: Settings, a: argparse.Namespace) -> int:
    from ops import stack

    if a.action == "up":
        stack.ensure_models(s, progress=_say)
        stack.ensure_codebook(s, progress=_say)
        stack.stack_up(s, _say)
        _say(f"local stack up: broker 127.0.0.1:{s.broker_port}, triton gRPC 127.0.0.1:{s.triton_grpc_port}")
    else:
        stack.stack_down(s, _say)
    return 0


def cmd_topics(s: Settings, a: argparse.Namespace) -> int:
    from enrich.topics import topic_specs
    from streams.kafka_tools import create_topics, topic_drift

    if a.action == "create":
        created = create_topics(s)
        _say(f"created: {', '.join(created) or 'nothing (all exist)'}")
        return 0
    if a.action == "spec":
        for t in topic_specs(s):
            configs = ", ".join(f"{k}={v}" for k, v in t.configs().items())
            _say(f"{s.topic(t.name)}: {t.partitions} partitions, replication {t.replication_factor}, {configs}  "
                 f"# {t.what}")
        return 0
    drift = topic_drift(s)
    for line in drift:
        _say(f"drift: {line}")
    _say(f"{len(drift)} differences from the topic specification" if drift else
         "every topic matches the specification")
    return 1 if drift else 0


def cmd_models(s: Settings, a: argparse.Namespace) -> int:
    if a.action == "export" and a.preset == "small" and not (a.embedder_checkpoint or a.tagger_checkpoint):
        from triton_models.export_small import default_artifact, export_small, ship_tag_prior

        tagger = a.tagger_artifact or default_artifact("tagger", s.small_tagger)
        artifacts = {"embedder": a.fusion_gate, "tagger": tagger}
        for role in a.roles or ("embedder", "tagger"):
            r = export_small(role, (a.out or s.models_path) / role, artifacts[role], progress=_say)
            _say(f"{role}: {r.meta.version} -> {r.out_dir} (parity max |diff| {max(r.max_abs_diff.values()):.2e})")
        out = a.out or s.models_path
        if all((out / role / "meta.json").exists() for role in ("embedder", "tagger")):
            ship_tag_prior(out, _say)  # the prior fits one embedder + tagger pair: ship or withdraw it
    elif a.action == "train-tagger" and a.pairwise:
        from corpora.debtags import SNAPSHOT_DIR, load_snapshot
        from training.pairwise_tagger import TrainConfig, train_tagger
        from triton_models.export_small import PAIRWISE_TAGGER

        data = a.dataset or SNAPSHOT_DIR
        info = train_tagger(load_snapshot(data), a.out or PAIRWISE_TAGGER,
                            TrainConfig(max_minutes=a.minutes, max_steps=a.steps), dataset_version=data.name)
        _say(json.dumps(info, indent=2))
    elif a.action == "train-tagger":
        from training.packed_tagger import PackedConfig, train_packed_tagger
        from triton_models.export_small import DEFAULT_TAGGER, PAIRWISE_TAGGER

        if a.dataset:
            raise EnrichError("train-tagger --dataset is for --pairwise; the packed tagger reads the shipped "
                              "debtags and AppStream snapshots")
        info = train_packed_tagger(a.out or DEFAULT_TAGGER, PackedConfig(max_minutes=a.minutes, epochs=a.epochs),
                                   init=a.tagger_artifact or PAIRWISE_TAGGER)
        _say(json.dumps(info, indent=2))
    elif a.action == "train-cf":
        from corpora.debtags import SNAPSHOT_DIR, load_snapshot
        from ops.evaluate import embed_debtags
        from ops.stack import ensure_models
        from training.cf_adapter import DEFAULT_CF, train_cf

        s = s.model_copy(update={"model_preset": "small"})
        s.state_dir.mkdir(parents=True, exist_ok=True)
        ensure_models(s, progress=_say)
        items = load_snapshot(a.dataset or SNAPSHOT_DIR)
        vectors, embedder = embed_debtags(s, items, _say)
        adapter = train_cf(items, vectors, embedder, epochs=a.epochs)
        out = a.out or DEFAULT_CF
        adapter.save(out)
        out.with_suffix(".json").write_text(json.dumps(adapter.info | {"version": adapter.version}, indent=2,
                                                       sort_keys=True) + "\n")
        _say(json.dumps(adapter.info, indent=2))
        _say(f"{adapter.version} -> {out}")
        if out == DEFAULT_CF:  # the state dir's export gets it now, not at its next export
            from enrich.model_meta import ModelMeta
            from triton_models.export_small import ship_cf_adapter

            embedder_dir = s.models_path / "embedder"
            ship_cf_adapter(ModelMeta.read(embedder_dir / "meta.json").version, embedder_dir, _say)
    elif a.action == "train-fusion" and a.apps:
        from training.fusion_apps import train_fusion_apps
        from triton_models.export_small import DEFAULT_FUSION, EMOJI_FUSION

        info = train_fusion_apps(a.out or DEFAULT_FUSION, a.fusion_gate or EMOJI_FUSION)
        _say(json.dumps({k: info[k] for k in ("version", "validation_before", "validation")}, indent=2))
    elif a.action == "train-fusion":
        from training.fusion_emoji import train_fusion
        from triton_models.export_small import EMOJI_FUSION

        if a.emoji is None:
            raise EnrichError("train-fusion needs --emoji DIR: the unpacked npm package emoji-datasource-google "
                              "(npm pack emoji-datasource-google && tar xzf emoji-datasource-google-*.tgz)")
        _say(json.dumps(train_fusion(a.emoji, a.out or EMOJI_FUSION), indent=2))
    elif a.action == "export":
        from triton_models.export import export_model

        sources = {"embedder": a.embedder_checkpoint, "tagger": a.tagger_checkpoint}
        preset = "tiny" if a.preset == "small" else a.preset  # only reached with a checkpoint for "small"
        for role in a.roles or ("embedder", "tagger"):
            r = export_model(role, (a.out or s.models_path) / role, preset=preset, checkpoint=sources[role],
                             gate_path=a.fusion_gate if role == "embedder" else None, progress=_say)
            _say(f"{role}: {r.meta.version} -> {r.out_dir} (parity max |diff| {max(r.max_abs_diff.values()):.2e})")
    elif a.action == "bundle":
        from ops.stack import build_bundle

        if a.out is None:
            raise EnrichError("`enrich models bundle` needs --out DIR (a new, empty directory per bundle version)")
        build_bundle(s, a.out, target=a.target or "production", progress=_say)
    else:
        from triton_models.repository import build_repository

        target = a.target or "local"
        out = a.out or s.state_dir / f"triton-repo-{target}"
        names = build_repository(s.models_path, out, target=target)
        _say(f"{target} repository with {', '.join(names)} -> {out}")
    return 0


def _embeddings(s: Settings, path: Path | None):
    from ops.stack import sample_embeddings
    from training.rqvae import load_embeddings

    if path is None:
        return sample_embeddings(s)
    try:
        return load_embeddings(path)
    except (OSError, ValueError, KeyError) as exc:
        raise EnrichError(f"cannot read embeddings from {path}: {exc} "
                          "(expected a .npy [N, D] array or a Parquet file with an `embedding` list column)") from exc


def _exported_embedder(s: Settings, embeddings: Path | None) -> str:
    from ops.stack import exported_embedder

    try:
        return exported_embedder(s)
    except ModelConfigError:
        raise EnrichError("no exported embedder under ENRICH_MODEL_DIR to bind the codebook to: pass --embedder "
                          "with the version of the embedder that made " + (str(embeddings) if embeddings else
                                                                           "the vectors")) from None


def cmd_codebook(s: Settings, a: argparse.Namespace) -> int:
    from enrich.vectors.semantic_ids import SemanticIdCodebook

    vecs = _embeddings(s, a.embeddings)
    if a.action == "eval":
        from ops.semantic_eval import evaluate, format_report

        report = evaluate(SemanticIdCodebook.load(a.codebook or s.codebook_path), vecs, queries=a.queries)
        _say(format_report(report))
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0

    from tqdm import tqdm

    from training.rqvae import TrainConfig, train_rqvae

    cfg = TrainConfig(levels=a.levels, codes=a.codes, latent_dim=a.latent_dim, epochs=a.epochs, seed=a.seed,
                      normalise=not a.euclidean)
    if len(vecs) < cfg.codes:
        raise EnrichError(f"{len(vecs)} embeddings cannot fill {cfg.codes} codes per level: "
                          "pass more embeddings or a smaller --codes")
    with tqdm(total=cfg.warmup_epochs + cfg.epochs, unit="epoch", desc="rq-vae") as bar:
        def on_epoch(r: dict) -> None:
            util = "/".join(f"{u:.0%}" for u in r.get("utilisation", []))
            bar.set_postfix_str(f"{r['phase']} loss {r['loss']:.4f} recon {r['recon']:.4f}"
                                + (f" util {util} reset {r['dead_codes_reset']}" if util else ""))
            bar.update()
            if a.verbose:
                bar.write(json.dumps(r))
        book = train_rqvae(vecs, cfg, on_epoch)
    book.meta["embedder"] = a.embedder or _exported_embedder(s, a.embeddings)
    out = a.out or s.codebook_path
    book.save(out)
    m = book.meta["metrics"]
    _say(f"codebook {book.version} for embedder {book.embedder} -> {out} ({len(vecs)} vectors; utilisation "
         + "/".join(f"{u:.0%}" for u in m["utilisation"])
         + f"; {m['distinct_ids']} distinct IDs, collision rate {m['collision_rate']:.2%})")
    return 0


def _build_prototypes(s: Settings, out: Path | None) -> int:
    """Tag prototypes from the debtags train split, in the exported small embedder's space."""
    from corpora import debtags
    from enrich.tagging.prototypes import TagPrototypes
    from ops.evaluate import embed_debtags
    from ops.stack import ensure_models
    from triton_models.export_small import DEFAULT_PROTOTYPES

    s = s.model_copy(update={"model_preset": "small"})
    s.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_models(s, progress=_say)
    train = [it for it in debtags.load_snapshot() if it.split == "train"]  # never the evaluated items
    vectors, embedder = embed_debtags(s, train, _say)
    protos = TagPrototypes.compute([it.tags for it in train], vectors, embedder)
    protos.save(out or DEFAULT_PROTOTYPES)
    _say(f"{protos.version}: {protos.info} in the space of {embedder} -> {out or DEFAULT_PROTOTYPES}")
    return 0


def _build_tag_prior(s: Settings, out: Path | None) -> int:
    from ops.tag_prior import build_tag_prior

    build_tag_prior(s, out, _say)
    return 0


def cmd_vocab(s: Settings, a: argparse.Namespace) -> int:
    from corpora import samples
    from enrich.errors import InvalidItem
    from enrich.schemas import VocabEntry, decode_vocab, encode, now_ms
    from streams.kafka_tools import publish

    if a.action == "prototypes":
        return _build_prototypes(s, a.out)
    if a.action == "prior":
        return _build_tag_prior(s, a.out)
    if a.file and a.debtags:
        raise EnrichError("--file and --debtags name two vocabularies: pick one")
    if a.debtags:
        from ops.stack import debtags_vocabulary

        entries = debtags_vocabulary(s)
    elif a.file:
        try:
            rows = json.loads(Path(a.file).read_text())
            entries = [VocabEntry(tag=r["tag"], facet=r.get("facet", ""), description=r.get("description", ""),
                                  updated_at=now_ms()) for r in rows]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EnrichError(f"{a.file}: expected a JSON list of {{\"tag\": ..., \"facet\": ...}}: {exc}") from exc
    else:
        entries = samples.vocab_entries()
    for e in entries:  # what the workers would skip is refused here, with the reason
        try:
            decode_vocab(encode(e))
        except InvalidItem as err:
            raise EnrichError(f"tag {e.tag[:80]!r}: {err}; workers would skip it") from None
    n = publish(s, "tags.vocab", [(e.tag.encode(), encode(e)) for e in entries])
    _say(f"published {n} tags to {s.topic('tags.vocab')}")
    return 0


def cmd_publish(s: Settings, a: argparse.Namespace) -> int:
    import msgpack

    from corpora import samples
    from streams.kafka_tools import publish

    items = samples.sample_items(a.items, seed=a.seed)
    records = [(i["id"].encode(), msgpack.packb(i, use_bin_type=True)) for i in items]
    if a.malformed:
        records += [(f"bad-{n}".encode(), raw) for n, (_, raw) in enumerate(samples.malformed_events())]
    if a.fuzz:
        records += [(f"fuzz-{n}".encode(), raw) for n, (_, raw) in enumerate(samples.fuzz_events(a.fuzz, a.seed))]
    n = publish(s, "items.new", records)
    _say(f"published {n} events to {s.topic('items.new')}")
    return 0


def _ask_server(url: str, path: str) -> list[dict]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise EnrichError(f"{url}: {json.loads(exc.read()).get('error', exc.reason)}") from None
    except OSError as exc:
        raise EnrichError(f"cannot reach the recall server at {url} ({exc}); start it with `enrich recall serve`, "
                          "or leave --server out to read the topics directly") from None


def cmd_recall(s: Settings, a: argparse.Namespace) -> int:
    from urllib.parse import quote

    from ops.recall import RecallIndexes, serve

    if a.action == "serve":
        import signal
        import threading

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        _say(f"recall api on http://{s.recall_bind}:{a.port} (GET /tags/<tag>, GET /neighbors/<item>, POST /neighbors)")
        serve(s, a.port, stop=stop)
        return 0
    if a.target is None:
        raise EnrichError(f"`enrich recall {a.action}` needs a {'tag' if a.action == 'tags' else 'item id'}")
    if a.action == "tags":
        path = f"/tags/{quote(a.target, safe='')}?k={a.k}"
    else:
        path = f"/neighbors/{quote(a.target, safe='')}?k={a.k}&by={a.by}"
    if a.server:
        hits = _ask_server(a.server, path)
    else:
        idx = RecallIndexes.caught_up(s)
        hits = idx.tag_query(a.target, a.k) if a.action == "tags" else idx.neighbor_query(a.target, a.k, a.by)
    if a.json:
        _say(json.dumps(hits, indent=2))
    elif not hits:
        _say(f"no {'items tagged' if a.action == 'tags' else 'neighbours of'} {a.target!r}")
    for h in hits if not a.json else []:
        if a.action == "tags":
            _say(f"{h['item_id']:<32} grade {h['grade']}  prob {h['prob']:.3f}  score {h['score']:.3f}")
        else:
            _say(f"{h['item_id']:<32} {'cosine' if a.by == 'ann' else 'shared prefix'} {h['score']:.3f}")
    return 0


def cmd_data(s: Settings, a: argparse.Namespace) -> int:
    from corpora import appstream, debtags

    dataset = {"debtags": debtags, "appstream": appstream}[a.action]
    lists = a.lists
    if a.fetch:
        lists = lists or s.state_dir / f"apt-lists-{a.action}"
        _say(f"apt-get update ({'English descriptions' if a.action == 'debtags' else 'AppStream metadata and icons'})"
             f" into {lists}")
        dataset.fetch_lists(lists)
    if lists is None:
        needs = "*_Packages and *_Translation-en indexes" if a.action == "debtags" else \
            "*_dep11_Components-*.yml.gz and *_dep11_icons-64x64.tar.gz"
        raise EnrichError(f"pass --fetch (runs apt-get update into a private lists dir) or --lists DIR (a dir "
                          f"with {needs})")
    manifest = dataset.build_from_lists(lists, a.out or dataset.SNAPSHOT_DIR)
    _say(json.dumps(manifest, indent=2))
    return 0


def cmd_backfill(s: Settings, a: argparse.Namespace) -> int:
    from ops.backfill import backfill

    r = backfill(s, a.to_prefix, source=a.source, rate=a.rate, batch=a.batch, max_items=a.max_items,
                 progress=not a.quiet)
    done = "up to the end the topic had when this run began" if not a.max_items or r.copied < a.max_items else \
        "stopped at --max-items; rerun to resume"
    _say(f"copied {r.copied} records in {r.seconds:.1f}s ({r.already_done} copied by earlier runs; {done})")
    return 0


def cmd_tail(s: Settings, a: argparse.Namespace) -> int:
    import time

    from ops.tail import known_topic, tail
    from streams.kafka_tools import TopicReader

    try:
        topic = known_topic(a.topic)
    except ValueError as exc:
        raise EnrichError(str(exc)) from None
    reader = TopicReader(s, [topic], from_beginning=a.from_beginning)
    deadline = time.monotonic() + a.idle_s if a.idle_s else None

    def records():  # noqa: ANN202 - a generator of Records
        nonlocal deadline
        while deadline is None or time.monotonic() < deadline:
            got = reader.poll(0.5)
            if got and a.idle_s:
                deadline = time.monotonic() + a.idle_s
            yield from got

    try:
        shown = tail(records(), a.key, a.max, _say, a.json)
    finally:
        reader.close()
    if not a.json:
        _say(f"-- {shown} records of {s.topic(topic)}")
    return 0


def cmd_capacity(s: Settings, a: argparse.Namespace) -> int:
    import dataclasses
    import urllib.request

    from ops import capacity

    if a.validate:
        out = a.out or Path("benchmarks/results/capacity.json")
        result = capacity.validate(s, items=a.items, out=out, say=_say)
        _say(f"costs per item: {json.dumps(result['costs'])}; written to {out}")
        return 0
    if a.rate is None:
        raise EnrichError("pass --rate R (new items per second), or --validate to measure the costs here")
    if a.metrics:
        try:
            with urllib.request.urlopen(a.metrics, timeout=10) as resp:
                costs = capacity.costs_from_metrics(resp.read().decode(), a.metrics)
        except OSError as exc:
            raise EnrichError(f"cannot read {a.metrics}: {exc}; point --metrics at a running worker's /metrics") \
                from None
    elif a.costs:
        costs = capacity.load_costs(a.costs)
    else:
        raise EnrichError("pass --costs FILE (from `enrich capacity --validate`) or --metrics URL of a live worker")
    if a.model_items_per_s:
        costs = dataclasses.replace(costs, model_s=1.0 / a.model_items_per_s,
                                    source=f"{costs.source}; model: {a.model_items_per_s:g} items/s per GPU")
    p = capacity.plan(a.rate, costs, cores_per_worker=a.cores_per_worker, utilisation=a.utilisation,
                      replication=s.replication_factor)
    _say(json.dumps(capacity.as_json(p), indent=2) if a.json else capacity.format_plan(p))
    return 0


def cmd_eval(s: Settings, a: argparse.Namespace) -> int:
    from ops.evaluate import run_eval

    run_eval(s, limit=a.limit, top_n=a.top, out_json=a.out, say=_say, catalogue_limit=a.catalogue_limit,
             kinds=not a.no_kinds)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enrich", description="Multimodal streaming enrichment.",
                                epilog="Settings come from ENRICH_* environment variables (see README).")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the whole path on the embedded local stack")
    d.add_argument("--items", type=int, default=30,
                   help="items to take (small preset: held-out apps; two thirds also go without their icon)")
    d.add_argument("--no-wait", action="store_true",
                   help="stop at once instead of keeping the stack and the inspector page up until Enter "
                        "(the default in a terminal)")
    d.set_defaults(fn=cmd_demo)
    sub.add_parser("worker", help="run a Faust worker").set_defaults(fn=cmd_worker)
    au = sub.add_parser("audit", help="check every input has exactly one effect (enriched or dead-lettered)")
    au.add_argument("--json", type=Path, help="also write the report as JSON")
    au.add_argument("--timeout", type=float, default=120.0, help="seconds to read the topics to their end")
    au.set_defaults(fn=cmd_audit)
    b = sub.add_parser("bench", help="measure items/s and latency: pipeline in-process, via Triton, full stream")
    b.add_argument("--items", type=int, default=400, help="items per measured run")
    b.add_argument("--batch-sizes", default="4,16,32", help="micro-batch sizes to sweep")
    b.add_argument("--waits", default="0.005,0.05", help="micro-batch waits (s) to sweep in the stream")
    b.add_argument("--inflight", default="1,2,3,4", help="in-flight batches to sweep at the best batch size/wait")
    b.add_argument("--steady-s", type=float, default=20.0, help="length of the steady half-load run (s)")
    b.add_argument("--out", type=Path, default=Path("benchmarks/results/stream.json"), help="results JSON")
    b.set_defaults(fn=cmd_bench)
    st = sub.add_parser("stack", help="start/stop the local broker + Triton in the background")
    st.add_argument("action", choices=["up", "down"])
    st.set_defaults(fn=cmd_stack)
    t = sub.add_parser("topics", help="create the topics, print their specification, or check the cluster "
                                      "against it (exit 1 on drift)")
    t.add_argument("action", choices=["create", "spec", "check"])
    t.set_defaults(fn=cmd_topics)
    m = sub.add_parser("models", help="export models / build a Triton repository")
    m.add_argument("action", choices=["export", "repository", "bundle", "train-tagger", "train-fusion", "train-cf"])
    m.add_argument("--preset", default="small",
                   help="small (real MiniLM + EfficientNet-Lite0 weights, trained tagger and fusion gate), or "
                        "random-weight Qwen-VL presets: tiny, qwen2-vl-7b / qwen2.5-vl-3b (real size, benchmarks)")
    m.add_argument("--role", dest="roles", action="append", choices=["embedder", "tagger"],
                   help="export only this model (repeatable; default: both)")
    m.add_argument("--embedder-checkpoint", type=Path, help="Hugging Face checkpoint dir of the embedder (Qwen2-VL)")
    m.add_argument("--tagger-checkpoint", type=Path, help="Hugging Face checkpoint dir of the tagger (Qwen2.5-VL)")
    m.add_argument("--fusion-gate", type=Path,
                   help="trained late-fusion gate for the embedder (small: the train-fusion artifact; Qwen presets: "
                        "a .pt state dict; default: the shipped artifact / a fixed visual share)")
    m.add_argument("--tagger-artifact", type=Path, help="small preset: the train-tagger artifact (default: shipped)")
    m.add_argument("--pairwise", action="store_true",
                   help="train-tagger: the text cross-encoder (one row per item and tag, the measured baseline) "
                        "instead of the packed visual tagger (which starts from it: --tagger-artifact)")
    m.add_argument("--dataset", type=Path, help="train-tagger --pairwise: debtags snapshot dir (default: shipped)")
    m.add_argument("--minutes", type=float, default=10.0, help="train-tagger: time budget")
    m.add_argument("--steps", type=int, default=0, help="train-tagger: step limit (0: the time budget decides)")
    m.add_argument("--epochs", type=int, default=5,
                   help="train-cf: passes over the pairs (5: best on validation); train-tagger: passes over the rows")
    m.add_argument("--emoji", type=Path, help="train-fusion: the unpacked emoji-datasource-google package dir")
    m.add_argument("--apps", action="store_true", help="train-fusion: retrain the gate of the emoji-trained head "
                                                       "(--fusion-gate, default the shipped one) on the AppStream "
                                                       "snapshot's three kinds")
    m.add_argument("--target", choices=["local", "production"],
                   help="Triton target (default: local for `repository`, production for `bundle`)")
    m.add_argument("--out", type=Path, help="export/repository: directory; train-*: artifact path")
    m.set_defaults(fn=cmd_models)
    c = sub.add_parser("codebook", help="train (fit) or evaluate the semantic-ID codebook (RQ-VAE)")
    c.add_argument("action", choices=["fit", "eval"])
    c.add_argument("--embeddings", type=Path,
                   help=".npy [N, D] or .parquet (list column `embedding`) (default: embeddings of sample items)")
    c.add_argument("--levels", type=int, default=3)
    c.add_argument("--codes", type=int, default=256, help="codes per level")
    c.add_argument("--latent-dim", type=int, default=32)
    c.add_argument("--epochs", type=int, default=40)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--euclidean", action="store_true",
                   help="raw vectors and MSE instead of the cosine variant (for embeddings that are not normalised)")
    c.add_argument("--out", type=Path, help="artifact to write (fit; default: ENRICH_CODEBOOK)")
    c.add_argument("--codebook", type=Path, help="artifact to evaluate (eval; default: ENRICH_CODEBOOK)")
    c.add_argument("--embedder", help="version of the embedder that made the vectors (fit; default: the "
                                      "exported one under ENRICH_MODEL_DIR); workers of another refuse it")
    c.add_argument("--queries", type=int, default=1000, help="query items for recall@10 (eval)")
    c.add_argument("--json", type=Path, help="also write the evaluation as JSON (eval)")
    c.add_argument("--verbose", action="store_true", help="print every epoch's metrics as JSON (fit)")
    c.set_defaults(fn=cmd_codebook)
    v = sub.add_parser("vocab", help="publish tags to tags.vocab, or build tag prototypes or the tag prior")
    v.add_argument("action", choices=["load", "prototypes", "prior"])
    v.add_argument("--file", help="load: JSON list of {tag, facet, description} (default: the sample vocabulary)")
    v.add_argument("--debtags", action="store_true",
                   help="load: the debtags vocabulary with the shipped prototypes (for the exported embedder)")
    v.add_argument("--out", type=Path, help="prototypes, prior: artifact to write (default: the shipped one)")
    v.set_defaults(fn=cmd_vocab)
    pb = sub.add_parser("publish", help="publish sample items to items.new")
    pb.add_argument("--items", type=int, default=30)
    pb.add_argument("--seed", type=int, default=0)
    pb.add_argument("--malformed", action="store_true", help="also publish one malformed event of each kind")
    pb.add_argument("--fuzz", type=int, default=0, metavar="N", help="also publish N randomly malformed events")
    pb.set_defaults(fn=cmd_publish)
    da = sub.add_parser("data", help="build a dataset snapshot: debtags (text, tags, relations) or appstream "
                                     "(desktop applications with icons, joined with debtags)")
    da.add_argument("action", choices=["debtags", "appstream"])
    da.add_argument("--fetch", action="store_true", help="apt-get update into a private lists dir first")
    da.add_argument("--lists", type=Path, help="apt lists dir holding the indexes (debtags: *_Packages and "
                                               "*_Translation-en; appstream: the DEP-11 components and icons)")
    da.add_argument("--out", type=Path, help="snapshot dir (default: the one shipped in corpora/data/)")
    da.set_defaults(fn=cmd_data)
    tl = sub.add_parser("tail", help="print the decoded records of one of the service's topics (msgpack decoded, "
                                     "vectors summarised, images as format and size)")
    tl.add_argument("topic", help="items.new, items.enriched, recall.tags, recall.neighbors, items.dlq, tags.vocab, "
                                  "items.coded or sid.digits (under ENRICH_TOPIC_PREFIX)")
    tl.add_argument("--from-beginning", action="store_true", help="from the oldest record (default: new ones only)")
    tl.add_argument("--key", help="only the records of this key (an item id; a tag on tags.vocab)")
    tl.add_argument("--json", action="store_true", help="one JSON object per line")
    tl.add_argument("--max", type=int, default=0, help="stop after this many records (default: follow for ever)")
    tl.add_argument("--idle-s", type=float, default=0.0, help="stop after this many seconds without a record")
    tl.set_defaults(fn=cmd_tail)
    cp = sub.add_parser("capacity", help="partitions, workers, GPUs and broker throughput for a rate of new items, "
                                         "from measured per-item costs")
    cp.add_argument("--rate", type=float, help="new items per second to plan for")
    cp.add_argument("--costs", type=Path, help="per-item costs measured by `enrich capacity --validate`")
    cp.add_argument("--metrics", help="a live worker's /metrics URL to read the per-item costs from")
    cp.add_argument("--model-items-per-s", type=float, default=0.0,
                    help="items/s one GPU serves (both models), instead of the measured model cost")
    cp.add_argument("--cores-per-worker", type=float, default=1.0, help="CPU cores per worker pod (default 1)")
    cp.add_argument("--utilisation", type=float, default=0.7, help="target busy share of each resource")
    cp.add_argument("--json", action="store_true", help="print the plan as JSON")
    cp.add_argument("--validate", action="store_true", help="measure one worker on a private local stack, "
                                                            "predict one and two workers, measure two")
    cp.add_argument("--items", type=int, default=400, help="items per measured run (--validate)")
    cp.add_argument("--out", type=Path, help="where --validate writes its JSON (default "
                                             "benchmarks/results/capacity.json)")
    cp.set_defaults(fn=cmd_capacity)
    ev = sub.add_parser("eval", help="tagging and neighbour quality of the small presets on the debtags test split")
    ev.add_argument("--limit", type=int, default=0, help="only the first N test items (0: all), and apps")
    ev.add_argument("--no-kinds", action="store_true",
                    help="skip the per-kind run (AppStream test apps as listing, name + summary and icon alone, "
                         "each with and without the icon)")
    ev.add_argument("--catalogue-limit", type=int, default=0,
                    help="only the first N catalogue items (0: all; smaller numbers are for smoke runs)")
    ev.add_argument("--top", type=int, default=3, help="tags the baselines predict per item")
    ev.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_small.json"), help="results JSON")
    ev.set_defaults(fn=cmd_eval)
    bf = sub.add_parser("backfill", help="replay an input topic into a shadow deployment (rate-limited, resumable)")
    bf.add_argument("--to-prefix", required=True, help="topic prefix of the shadow deployment, e.g. 'shadow-v2.'")
    bf.add_argument("--source", default="items.new", help="topic to replay (under ENRICH_TOPIC_PREFIX)")
    bf.add_argument("--rate", type=float, default=0.0, help="items per second at most (0: unlimited)")
    bf.add_argument("--batch", type=int, default=500, help="records per acknowledged, committed step")
    bf.add_argument("--max-items", type=int, default=0, help="stop after this many (0: to the end); rerun resumes")
    bf.add_argument("--quiet", action="store_true", help="no progress bar")
    bf.set_defaults(fn=cmd_backfill)
    r = sub.add_parser("recall", help="reference recall indexes: serve them, or query tags / neighbours")
    r.add_argument("action", choices=["serve", "tags", "neighbors"])
    r.add_argument("target", nargs="?", help="the tag (tags) or the item id (neighbors)")
    r.add_argument("--k", type=int, default=10, help="results to return")
    r.add_argument("--by", choices=["ann", "cf", "sid"], default="ann",
                   help="neighbors: the content-vector index (ann), the CF-tuned vector index (cf, when workers "
                        "run a CF adapter) or semantic-ID prefix matching (sid)")
    r.add_argument("--server", help="ask a running `enrich recall serve` (e.g. http://127.0.0.1:8080) instead of "
                                    "reading the topics")
    r.add_argument("--port", type=int, default=8080, help="serve: HTTP port")
    r.add_argument("--json", action="store_true", help="print the hits as JSON")
    r.set_defaults(fn=cmd_recall)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"enrich: invalid settings:\n{exc}\nFix the ENRICH_* environment variables named above.",
              file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_json)
    try:
        return int(args.fn(settings, args) or 0)
    except EnrichError as exc:  # expected: bad input, configuration or deployment; the message says the fix
        print(f"enrich {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
