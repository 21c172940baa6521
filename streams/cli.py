"""`enrich`: the command line of the service.

  enrich demo                     the whole path on the embedded local stack
  enrich worker                   run a Faust worker (settings from ENRICH_* variables)
  enrich bench                    measure throughput and latency on a private local stack
  enrich audit                    every input enriched or dead-lettered, no conflicting duplicates (exit 1 if not)
  enrich stack up|down            start/stop the local broker + Triton in the background
  enrich topics create            create the service's topics
  enrich models export            export presets or checkpoints to ONNX (+ parity check)
  enrich models repository        write a Triton model repository (local or production)
  enrich codebook fit|eval        train / evaluate the semantic-ID codebook (RQ-VAE)
  enrich vocab load               publish tags to tags.vocab
  enrich publish                  publish sample items to items.new
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from enrich.errors import EnrichError
from enrich.logs import configure
from enrich.process import LaunchError
from enrich.settings import Settings

log = logging.getLogger("enrich")


def _say(msg: str) -> None:
    print(msg, flush=True)


def cmd_demo(s: Settings, a: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(s, n_items=a.items)


def _numbers(text: str, kind: type, flag: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise EnrichError(f"{flag} expects a comma-separated list of positive numbers, e.g. 4,16,32 (got {text!r})")
    return values


def cmd_bench(s: Settings, a: argparse.Namespace) -> int:
    from streams.bench import BenchConfig, run_bench

    if a.items < 20:
        raise EnrichError("--items must be at least 20 for percentiles to mean anything")
    cfg = BenchConfig(items=a.items, batch_sizes=_numbers(a.batch_sizes, int, "--batch-sizes"),
                      waits_s=_numbers(a.waits, float, "--waits"), inflight=_numbers(a.inflight, int, "--inflight"),
                      steady_s=a.steady_s, out=a.out)
    run_bench(s, cfg, say=_say)
    return 0


def cmd_audit(s: Settings, a: argparse.Namespace) -> int:
    from streams.audit import run_audit

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
    from streams import stack

    if a.action == "up":
        stack.ensure_models(s, progress=_say)
        stack.ensure_codebook(s, progress=_say)
        stack.stack_up(s, _say)
        _say(f"local stack up: broker 127.0.0.1:{s.broker_port}, triton gRPC 127.0.0.1:{s.triton_grpc_port}")
    else:
        stack.stack_down(s, _say)
    return 0


def cmd_topics(s: Settings, a: argparse.Namespace) -> int:
    from streams.kafka_tools import create_topics

    created = create_topics(s)
    _say(f"created: {', '.join(created) or 'nothing (all exist)'}")
    return 0


def cmd_models(s: Settings, a: argparse.Namespace) -> int:
    if a.action == "export":
        from triton_models.export import export_model

        sources = {"embedder": a.embedder_checkpoint, "tagger": a.tagger_checkpoint}
        for role in a.roles or ("embedder", "tagger"):
            r = export_model(role, (a.out or s.models_path) / role, preset=a.preset, checkpoint=sources[role],
                             gate_path=a.fusion_gate if role == "embedder" else None, progress=_say)
            _say(f"{role}: {r.meta.version} -> {r.out_dir} (parity max |diff| {max(r.max_abs_diff.values()):.2e})")
    elif a.action == "bundle":
        from streams.stack import build_bundle

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
    from enrich.rqvae import load_embeddings
    from streams.stack import sample_embeddings

    if path is None:
        return sample_embeddings(s)
    try:
        return load_embeddings(path)
    except (OSError, ValueError, KeyError) as exc:
        raise EnrichError(f"cannot read embeddings from {path}: {exc} "
                          "(expected a .npy [N, D] array or a Parquet file with an `embedding` list column)") from exc


def cmd_codebook(s: Settings, a: argparse.Namespace) -> int:
    from enrich.semantic_ids import SemanticIdCodebook

    vecs = _embeddings(s, a.embeddings)
    if a.action == "eval":
        from enrich.semantic_eval import evaluate, format_report

        report = evaluate(SemanticIdCodebook.load(a.codebook or s.codebook_path), vecs, queries=a.queries)
        _say(format_report(report))
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0

    from tqdm import tqdm

    from enrich.rqvae import TrainConfig, train_rqvae

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
    out = a.out or s.codebook_path
    book.save(out)
    m = book.meta["metrics"]
    _say(f"codebook {book.version} -> {out} ({len(vecs)} vectors; utilisation "
         + "/".join(f"{u:.0%}" for u in m["utilisation"])
         + f"; {m['distinct_ids']} distinct IDs, collision rate {m['collision_rate']:.2%})")
    return 0


def cmd_vocab(s: Settings, a: argparse.Namespace) -> int:
    from enrich import samples
    from enrich.schemas import VocabEntry, encode, now_ms
    from streams.kafka_tools import publish

    if a.file:
        try:
            rows = json.loads(Path(a.file).read_text())
            entries = [VocabEntry(tag=r["tag"], facet=r.get("facet", ""), description=r.get("description", ""),
                                  updated_at=now_ms()) for r in rows]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EnrichError(f"{a.file}: expected a JSON list of {{\"tag\": ..., \"facet\": ...}}: {exc}") from exc
    else:
        entries = samples.vocab_entries()
    n = publish(s, "tags.vocab", [(e.tag.encode(), encode(e)) for e in entries])
    _say(f"published {n} tags to {s.topic('tags.vocab')}")
    return 0


def cmd_publish(s: Settings, a: argparse.Namespace) -> int:
    import msgpack

    from enrich import samples
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enrich", description="Multimodal streaming enrichment.",
                                epilog="Settings come from ENRICH_* environment variables (see README).")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the whole path on the embedded local stack")
    d.add_argument("--items", type=int, default=30)
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
    t = sub.add_parser("topics", help="manage topics")
    t.add_argument("action", choices=["create"])
    t.set_defaults(fn=cmd_topics)
    m = sub.add_parser("models", help="export models / build a Triton repository")
    m.add_argument("action", choices=["export", "repository", "bundle"])
    m.add_argument("--preset", default="tiny",
                   help="random-weight preset: tiny, or qwen2-vl-7b / qwen2.5-vl-3b (real size, benchmarks only)")
    m.add_argument("--role", dest="roles", action="append", choices=["embedder", "tagger"],
                   help="export only this model (repeatable; default: both)")
    m.add_argument("--embedder-checkpoint", type=Path, help="Hugging Face checkpoint dir of the embedder (Qwen2-VL)")
    m.add_argument("--tagger-checkpoint", type=Path, help="Hugging Face checkpoint dir of the tagger (Qwen2.5-VL)")
    m.add_argument("--fusion-gate", type=Path,
                   help="trained late-fusion gate (.pt state dict) for the embedder; default: a fixed visual share")
    m.add_argument("--target", choices=["local", "production"],
                   help="Triton target (default: local for `repository`, production for `bundle`)")
    m.add_argument("--out", type=Path)
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
    c.add_argument("--queries", type=int, default=1000, help="query items for recall@10 (eval)")
    c.add_argument("--json", type=Path, help="also write the evaluation as JSON (eval)")
    c.add_argument("--verbose", action="store_true", help="print every epoch's metrics as JSON (fit)")
    c.set_defaults(fn=cmd_codebook)
    v = sub.add_parser("vocab", help="publish tags to tags.vocab")
    v.add_argument("action", choices=["load"])
    v.add_argument("--file", help="JSON list of {tag, facet, description} (default: the sample vocabulary)")
    v.set_defaults(fn=cmd_vocab)
    pb = sub.add_parser("publish", help="publish sample items to items.new")
    pb.add_argument("--items", type=int, default=30)
    pb.add_argument("--seed", type=int, default=0)
    pb.add_argument("--malformed", action="store_true", help="also publish one malformed event of each kind")
    pb.add_argument("--fuzz", type=int, default=0, metavar="N", help="also publish N randomly malformed events")
    pb.set_defaults(fn=cmd_publish)
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
    except (LaunchError, EnrichError, RuntimeError, TimeoutError) as exc:
        print(f"enrich {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
