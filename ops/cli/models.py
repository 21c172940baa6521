"""`enrich models ...` (export, Triton repositories, bundles, training) and `enrich codebook fit|eval`.

Each `models` action has its own options: ``--out`` is a directory for export, repository and bundle, and
the artifact file for the train-* actions, as each action's help says.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from enrich.errors import EnrichError, ModelConfigError
from ops.cli.console import say
from ops.settings import ToolSettings


def _print_export(role: str, r) -> None:  # noqa: ANN001 - an ExportResult
    say(f"{role}: {r.meta.version} -> {r.out_dir} (parity max |diff| {max(r.max_abs_diff.values()):.2e})")


def cmd_export(s: ToolSettings, a: argparse.Namespace) -> int:
    checkpoints = {"embedder": a.embedder_checkpoint, "tagger": a.tagger_checkpoint}
    out = a.out or s.models_path
    if any(checkpoints.values()):
        from triton_models.export import export_model

        if a.preset is not None:
            raise EnrichError("a checkpoint export takes its architecture from the checkpoint: leave --preset out "
                              "(presets are for exports without a checkpoint)")
        for role in a.roles or [r for r, c in checkpoints.items() if c]:
            _print_export(role, export_model(role, out / role, checkpoint=checkpoints[role],
                                             gate_path=a.fusion_gate if role == "embedder" else None, progress=say,
                                             dtype=a.dtype))
        return 0
    from triton_models.export_small import SMALL_PRESET, SMALL_PRESETS, default_artifact, export_small, ship_tag_prior

    preset = a.preset or (s.model_preset if s.model_preset in SMALL_PRESETS else SMALL_PRESET)
    if preset not in SMALL_PRESETS:
        from triton_models.export import export_model

        for role in a.roles or ("embedder", "tagger"):
            _print_export(role, export_model(role, out / role, preset=a.preset,
                                             gate_path=a.fusion_gate if role == "embedder" else None, progress=say,
                                             dtype=a.dtype))
        return 0
    if a.dtype != "float32":
        raise EnrichError("the small presets are exported in float32 only (they serve on CPUs); --dtype float16 is for "
                          "the Qwen-VL presets and checkpoints")
    artifacts = {"embedder": a.fusion_gate or default_artifact("embedder", s.small_tagger, preset),
                 "tagger": a.tagger_artifact or default_artifact("tagger", s.small_tagger, preset)}
    for role in a.roles or ("embedder", "tagger"):
        _print_export(role, export_small(role, out / role, artifacts[role], progress=say, preset=preset))
    if all((out / role / "meta.json").exists() for role in ("embedder", "tagger")):
        ship_tag_prior(out, say)  # the prior fits one embedder + tagger pair: ship or withdraw it
    return 0


def cmd_repository(s: ToolSettings, a: argparse.Namespace) -> int:
    from triton_models.repository import build_repository

    out = a.out or s.state_dir / f"triton-repo-{a.target}"
    names = build_repository(s.models_path, out, target=a.target)
    say(f"{a.target} repository with {', '.join(names)} -> {out}")
    return 0


def cmd_bundle(s: ToolSettings, a: argparse.Namespace) -> int:
    from ops.local.stack import build_bundle

    build_bundle(s, a.out, target=a.target, progress=say)
    return 0


def cmd_train_tagger(s: ToolSettings, a: argparse.Namespace) -> int:
    from triton_models.export_small import DEFAULT_TAGGER, PAIRWISE_TAGGER, USE_TAGGER

    if a.multilingual:
        from training.packed_tagger import PackedConfig
        from training.use_tagger import train_use_tagger

        if a.pairwise or a.dataset or a.steps or a.tagger_artifact:
            raise EnrichError("--multilingual trains the multilingual preset's tagger from scratch on the shipped "
                              "snapshots: leave out --pairwise, --dataset, --steps and --tagger-artifact")
        info = train_use_tagger(a.out or USE_TAGGER, PackedConfig(lr=2e-3, max_minutes=a.minutes, epochs=a.epochs),
                                emoji_dir=a.emoji)
    elif a.pairwise:
        from corpora.debtags import SNAPSHOT_DIR, load_snapshot
        from training.pairwise_tagger import TrainConfig, train_tagger

        data = a.dataset or SNAPSHOT_DIR
        info = train_tagger(load_snapshot(data), a.out or PAIRWISE_TAGGER,
                            TrainConfig(max_minutes=a.minutes, max_steps=a.steps), dataset_version=data.name)
    else:
        from training.packed_tagger import PackedConfig, train_packed_tagger

        if a.dataset or a.steps:
            raise EnrichError("--dataset and --steps are for --pairwise; the packed tagger reads the shipped debtags "
                              "and AppStream snapshots and stops at --minutes or --epochs")
        info = train_packed_tagger(a.out or DEFAULT_TAGGER, PackedConfig(max_minutes=a.minutes, epochs=a.epochs),
                                   init=a.tagger_artifact or PAIRWISE_TAGGER, emoji_dir=a.emoji)
    say(json.dumps(info, indent=2))
    return 0


def cmd_train_fusion(s: ToolSettings, a: argparse.Namespace) -> int:
    from triton_models.export_small import DEFAULT_FUSION, EMOJI_FUSION, USE_EMOJI_FUSION, USE_FUSION

    emoji_head, apps_head = (USE_EMOJI_FUSION, USE_FUSION) if a.tower == "use" else (EMOJI_FUSION, DEFAULT_FUSION)
    if a.apps == bool(a.emoji):
        raise EnrichError("train-fusion needs one of --emoji DIR (the projection and gate on emoji: the unpacked npm "
                          "package emoji-datasource-google, `npm pack emoji-datasource-google && tar xzf "
                          "emoji-datasource-google-*.tgz`) or --apps (the gate on the AppStream snapshot's kinds)")
    if a.apps:
        from training.fusion_apps import train_fusion_apps

        info = train_fusion_apps(a.out or apps_head, a.fusion_gate or emoji_head, tower=a.tower)
        say(json.dumps({k: info[k] for k in ("version", "validation_before", "validation", "calibration")}, indent=2))
    else:
        from training.fusion_emoji import train_fusion

        say(json.dumps(train_fusion(a.emoji, a.out or emoji_head, tower=a.tower), indent=2))
    return 0


def _chart_config(values_files: list[Path]) -> dict[str, str]:
    """The worker's ``worker.config`` after Helm's merge of ``values_files`` (later files win, key by key)."""
    import yaml

    config: dict[str, str] = {}
    for path in values_files:
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise EnrichError(f"cannot read the values file {path}: {exc}") from exc
        for key, value in ((values.get("worker") or {}).get("config") or {}).items():
            if value is None:  # Helm deletes a key set to null
                config.pop(key, None)
            else:
                config[key] = str(value)
    return config


def cmd_check(s: ToolSettings, a: argparse.Namespace) -> int:
    """The worker's start-up checks of its models and artifacts against its settings, without a broker or Triton:
    what makes a pod crash-loop, found before it is deployed."""
    from enrich.assembly import make_pipeline
    from enrich.models.inference import TritonBackend

    config = _chart_config(a.values)
    unknown = ToolSettings.unknown_variables(config)
    if unknown:
        raise EnrichError("worker.config: " + "; ".join(unknown))
    overrides: dict[str, object] = {k.removeprefix("ENRICH_").lower(): v for k, v in config.items()}
    if a.bundle is not None:
        overrides |= {"model_dir": a.bundle / "models", "codebook": a.bundle / "codebook.npz"}
    try:
        checked = s.updated(**overrides)
    except ValidationError as exc:
        raise EnrichError(f"invalid settings: {exc}") from exc
    backend = TritonBackend(checked.triton_url)  # a client only: nothing is called
    try:
        pipeline = make_pipeline(checked, backend)
    finally:
        backend.close()
    v = pipeline.versions
    say(f"ok: embedder {v.embedder}, tagger {v.tagger}, codebook {v.codebook}, "
        f"{pipeline.config.candidate_tags} candidate tags per item, tag prior {v.tag_prior or 'none'}, "
        f"CF adapter {v.cf_adapter or 'none'}")
    return 0


def cmd_train_cf(s: ToolSettings, a: argparse.Namespace) -> int:
    from ops.builds import build_cf_adapter

    build_cf_adapter(s, a.dataset, a.epochs, a.out, say)
    return 0


def _embeddings(s: ToolSettings, path: Path | None):  # noqa: ANN202 - an [N, D] array
    from ops.local.stack import sample_embeddings
    from training.rqvae import load_embeddings

    if path is None:
        return sample_embeddings(s)
    try:
        return load_embeddings(path)
    except (OSError, ValueError, KeyError) as exc:
        raise EnrichError(f"cannot read embeddings from {path}: {exc} "
                          "(expected a .npy [N, D] array or a Parquet file with an `embedding` list column)") from exc


def _exported_embedder(s: ToolSettings, embeddings: Path | None) -> str:
    from ops.local.stack import exported_embedder

    try:
        return exported_embedder(s)
    except ModelConfigError:
        raise EnrichError("no exported embedder under ENRICH_MODEL_DIR to bind the codebook to: pass --embedder "
                          "with the version of the embedder that made " + (str(embeddings) if embeddings else
                                                                           "the vectors")) from None


def cmd_codebook(s: ToolSettings, a: argparse.Namespace) -> int:
    from enrich.vectors.semantic_ids import SemanticIdCodebook

    vecs = _embeddings(s, a.embeddings)
    if a.action == "eval":
        from ops.measure.semantic_eval import evaluate, format_report

        report = evaluate(SemanticIdCodebook.load(a.codebook or s.codebook_path), vecs, queries=a.queries)
        say(format_report(report))
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    from training.rqvae import TrainConfig, fit_with_progress

    cfg = TrainConfig(levels=a.levels, codes=a.codes, latent_dim=a.latent_dim, epochs=a.epochs, seed=a.seed,
                      normalise=not a.euclidean)
    if len(vecs) < cfg.codes:
        raise EnrichError(f"{len(vecs)} embeddings cannot fill {cfg.codes} codes per level: "
                          "pass more embeddings or a smaller --codes")
    book = fit_with_progress(vecs, cfg, verbose=a.verbose)
    book.meta["embedder"] = a.embedder or _exported_embedder(s, a.embeddings)
    out = a.out or s.codebook_path
    book.save(out)
    m = book.meta["metrics"]
    say(f"codebook {book.version} for embedder {book.embedder} -> {out} ({len(vecs)} vectors; utilisation "
        + "/".join(f"{u:.0%}" for u in m["utilisation"])
        + f"; {m['distinct_ids']} distinct IDs, collision rate {m['collision_rate']:.2%})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="export models, build Triton repositories and bundles, train the small models")
    actions = m.add_subparsers(dest="action", required=True)
    ex = actions.add_parser("export", help="export the small presets, random-weight Qwen-VL presets or checkpoints to "
                                           "ONNX (+ parity check)")
    ex.add_argument("--preset", help="small (real MiniLM + EfficientNet-Lite0 weights, trained tagger and fusion "
                                     "gate; English), multilingual (USE multilingual v3 instead of MiniLM; Chinese, "
                                     "English and 14 more languages), or random-weight Qwen-VL presets: tiny, "
                                     "qwen2-vl-7b / qwen2.5-vl-3b (real size, benchmarks); default: "
                                     "ENRICH_MODEL_PRESET when it is small or multilingual, else small")
    ex.add_argument("--role", dest="roles", action="append", choices=["embedder", "tagger"],
                    help="export only this model (repeatable; default: both, or those with a checkpoint)")
    ex.add_argument("--embedder-checkpoint", type=Path, help="Hugging Face checkpoint dir of the embedder (Qwen2-VL)")
    ex.add_argument("--tagger-checkpoint", type=Path, help="Hugging Face checkpoint dir of the tagger (Qwen2.5-VL)")
    ex.add_argument("--fusion-gate", type=Path,
                    help="trained late-fusion gate (small: a train-fusion artifact, default the shipped one; Qwen: "
                         "a .pt state dict, default a fixed visual share)")
    ex.add_argument("--tagger-artifact", type=Path, help="small preset: a train-tagger artifact (default: shipped)")
    ex.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                    help="Qwen-VL presets and checkpoints: the graphs' float type (float16: half the size, what a GPU "
                         "serves); each graph is written as <graph>.onnx plus one <graph>.onnx.data")
    ex.add_argument("--out", type=Path, help="models directory (default: ENRICH_MODEL_DIR)")
    ex.set_defaults(fn=cmd_export)
    rp = actions.add_parser("repository", help="write a Triton model repository for the exported models")
    rp.add_argument("--target", choices=["local", "production"], default="local")
    rp.add_argument("--out", type=Path, help="repository directory (default: the state dir's triton-repo-TARGET)")
    rp.set_defaults(fn=cmd_repository)
    bu = actions.add_parser("bundle", help="models + codebook + Triton repository, for the Helm chart")
    bu.add_argument("--target", choices=["local", "production"], default="production")
    bu.add_argument("--out", type=Path, required=True, help="a new, empty directory per bundle version")
    bu.set_defaults(fn=cmd_bundle)
    ck = actions.add_parser("check", help="the worker's start-up checks of the models and artifacts against the "
                                          "settings (no broker, no Triton): run it on a bundle with the chart's "
                                          "values before an install")
    ck.add_argument("--bundle", type=Path, help="a bundle from `enrich models bundle` (default: ENRICH_MODEL_DIR and "
                                                "ENRICH_CODEBOOK)")
    ck.add_argument("--values", type=Path, action="append", default=[],
                    help="a Helm values file whose worker.config the workers get, as `helm -f` (repeat it: the "
                         "chart's values.yaml, then yours)")
    ck.set_defaults(fn=cmd_check)
    tt = actions.add_parser("train-tagger", help="train the packed visual tagger (or --pairwise, the text baseline)")
    tt.add_argument("--multilingual", action="store_true",
                    help="the multilingual preset's tagger (USE tower, trained on the English and zh_CN snapshots)")
    tt.add_argument("--pairwise", action="store_true",
                    help="the text cross-encoder (one row per item and tag, the measured baseline) instead of the "
                         "packed visual tagger (which starts from it: --tagger-artifact)")
    tt.add_argument("--tagger-artifact", type=Path,
                    help="packed: the artifact to start from (default: the pairwise one)")
    tt.add_argument("--dataset", type=Path, help="--pairwise: debtags snapshot dir (default: shipped)")
    tt.add_argument("--minutes", type=float, default=10.0, help="time budget")
    tt.add_argument("--steps", type=int, default=0, help="--pairwise: step limit (0: the time budget decides)")
    tt.add_argument("--epochs", type=int, default=5, help="packed: passes over the rows")
    tt.add_argument("--emoji", type=Path, help="packed: also train on the emoji of this unpacked "
                    "emoji-datasource-google package (image-only items; names and subcategories as labels)")
    tt.add_argument("--out", type=Path, help="artifact file to write (default: the shipped one)")
    tt.set_defaults(fn=cmd_train_tagger)
    tf = actions.add_parser("train-fusion", help="train the small embedder's projection + gate (--emoji) or its gate "
                                                 "on the AppStream kinds (--apps)")
    tf.add_argument("--emoji", type=Path, help="the unpacked emoji-datasource-google package dir")
    tf.add_argument("--apps", action="store_true", help="retrain and calibrate the gate of the emoji-trained head "
                                                        "(--fusion-gate) on the AppStream snapshot's three kinds")
    tf.add_argument("--fusion-gate", type=Path, help="--apps: the head to start from (default: the emoji one)")
    tf.add_argument("--tower", choices=["minilm", "use"], default="minilm",
                    help="the text tower: minilm (the small preset) or use (the multilingual preset)")
    tf.add_argument("--out", type=Path, help="artifact file to write (default: the shipped one)")
    tf.set_defaults(fn=cmd_train_fusion)
    tc = actions.add_parser("train-cf", help="train the CF adapter on the debtags co-use pairs")
    tc.add_argument("--dataset", type=Path, help="debtags snapshot dir (default: shipped)")
    tc.add_argument("--epochs", type=int, default=5, help="passes over the pairs (5: best on validation)")
    tc.add_argument("--out", type=Path, help="artifact file to write (default: the shipped one)")
    tc.set_defaults(fn=cmd_train_cf)
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
