"""The embedded local stack: models and codebook on disk, Tansu broker, Triton, topics.

Used by `enrich stack up`, `enrich demo` and the integration test fixtures, so
all three start exactly the same things.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enrich.errors import EnrichError, ModelConfigError
from enrich.schemas import VocabEntry, encode_item
from ops.kafka.clients import create_topics
from ops.local.broker import LocalBroker
from ops.local.kafka import KafkaCluster, start_kafka
from ops.local.process import process_identity, stop_pid
from ops.settings import ToolSettings

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def is_small(settings: ToolSettings) -> bool:
    """Whether the preset is one of real small models (``small``, ``multilingual``), not random weights."""
    from triton_models.export_small import SMALL_PRESETS

    return settings.model_preset in SMALL_PRESETS


def expected_model_name(settings: ToolSettings, role: str) -> str:
    from triton_models.export_small import model_name

    preset = settings.model_preset
    return model_name(role, settings.small_tagger, preset) if is_small(settings) else preset


def expected_source(settings: ToolSettings, role: str) -> str:
    """The digest of the shipped artifact a small export is made from ("" for the random-weight presets)."""
    from triton_models.export_small import artifact_digest, default_artifact

    if not is_small(settings):
        return ""
    return artifact_digest(default_artifact(role, settings.small_tagger, settings.model_preset))


def ensure_models(settings: ToolSettings, progress: Progress = log.info) -> None:
    """Export ``settings.model_preset`` unless a current export of it is already there.

    A new export invalidates the codebook, which was fitted to the old embedder's vectors.
    """
    from enrich.errors import ModelConfigError
    from enrich.models.meta import ModelMeta

    preset = settings.model_preset
    for role in ("embedder", "tagger"):
        out = settings.models_path / role
        if (out / "meta.json").exists() and (out / "text.onnx").exists():
            try:
                meta = ModelMeta.read(out / "meta.json")
                if meta.name == expected_model_name(settings, role) and meta.source == expected_source(settings, role):
                    continue
                progress(f"{out} holds another preset than {preset!r}, or was exported from another artifact "
                         "than the shipped one; exporting again")
            except ModelConfigError as exc:
                progress(f"{exc}; exporting again")
        progress(f"exporting the {preset} {role} to {out}")
        if is_small(settings):
            from triton_models.export_small import default_artifact, export_small

            export_small(role, out, default_artifact(role, settings.small_tagger, preset), progress=progress,
                         preset=preset)
        else:
            from triton_models.export import export_model

            export_model(role, out, preset=preset, progress=progress)
        if role == "embedder" and settings.codebook_path.exists():
            settings.codebook_path.unlink()
    if is_small(settings):
        from triton_models.export_small import ship_tag_prior

        ship_tag_prior(settings.models_path, progress)


def debtags_sample_texts() -> list[str]:
    """What the small preset's demo codebook is fitted on: real package descriptions and the tag names."""
    from corpora.debtags import load_snapshot, tag_vocabulary
    from enrich.tagging.vocabulary import readable_tag

    items = load_snapshot()
    train = [it for it in items if it.split == "train"][:CODEBOOK_SAMPLE]
    return [f"{it.title}\n{it.text}" for it in train] + [readable_tag(t) for t in tag_vocabulary(items)]


def debtags_vocabulary(settings: ToolSettings) -> list[VocabEntry]:
    """The debtags as vocabulary entries, with the shipped tag prototypes when they were made by the
    exported embedder (else the workers embed the tag names)."""
    from corpora import debtags
    from enrich.models.meta import ModelMeta
    from enrich.tagging.prototypes import TagPrototypes
    from triton_models.export_small import small_preset

    tags = debtags.tag_vocabulary(debtags.load_snapshot())
    shipped = small_preset(settings.model_preset).prototypes
    prototypes = TagPrototypes.load(shipped) if shipped.exists() else None
    embedder = ModelMeta.read(settings.models_path / "embedder" / "meta.json").version
    if prototypes is not None and prototypes.embedder != embedder:
        log.warning("tag prototypes were made by %s, the embedder is %s: the workers will embed tag names",
                    prototypes.embedder, embedder)
        prototypes = None
    return debtags.vocab_entries(tags, prototypes)


def sample_embeddings(settings: ToolSettings, n_items: int = 240) -> np.ndarray:
    """Embeddings to fit the demo codebook on (in-process ONNX Runtime): real package descriptions for
    the small preset, generated sample items and the sample vocabulary for the tiny one."""
    from corpora import samples
    from enrich.assembly import in_process_models
    from enrich.preprocess import prepare
    from enrich.schemas import decode_item

    with in_process_models(settings) as (embedder, _):
        if is_small(settings):
            vecs = [embedder.embed_texts(debtags_sample_texts())]
        else:
            items = [prepare(decode_item(encode_item(i)), settings.model_text_chars)
                     for i in samples.sample_items(n_items, seed=7)]
            vecs = [embedder.embed(items), embedder.embed_texts([t for t, _ in samples.VOCAB])]
    return np.concatenate(vecs)


CODEBOOK_SAMPLE = 768  # package descriptions: about 20 s of MiniLM on two cores
# The demo's codebook: small enough to train in about a second on the sample embeddings.
DEMO_CODEBOOK = {"levels": 3, "codes": 16, "latent_dim": 16, "hidden": (64,), "epochs": 20, "batch_size": 64}


def ensure_codebook(settings: ToolSettings, progress: Progress = log.info) -> None:
    """A codebook fitted on the exported embedder's vectors (fitted again when it was fitted on another)."""
    from enrich.vectors.semantic_ids import SemanticIdCodebook
    from training.rqvae import TrainConfig, train_rqvae

    embedder = exported_embedder(settings)
    if settings.codebook_path.exists():
        try:
            SemanticIdCodebook.load(settings.codebook_path).check_embedder(embedder)
            return
        except ModelConfigError as exc:
            progress(f"refitting the codebook: {exc}")
    cfg = TrainConfig(**DEMO_CODEBOOK)
    progress(f"training an RQ-VAE codebook (L={cfg.levels}, K={cfg.codes}) on sample embeddings")
    book = train_rqvae(sample_embeddings(settings), cfg)
    book.meta["embedder"] = embedder
    book.save(settings.codebook_path)


def exported_embedder(settings: ToolSettings) -> str:
    """The version of the embedder exported under the settings' model dir."""
    from enrich.models.meta import ModelMeta

    return ModelMeta.read(settings.models_path / "embedder" / "meta.json").version


def build_local_repository(settings: ToolSettings) -> Path:
    from triton_models.repository import build_repository

    repo = settings.state_dir / "triton-repo"
    build_repository(settings.models_path, repo, target="local")
    return repo


BUNDLE_LAYOUT = ("models", "codebook.npz", "repository")


def build_bundle(settings: ToolSettings, out: Path, target: str = "production", progress: Progress = log.info) -> Path:
    """The model bundle the Helm chart deploys: ``models/`` (metadata, tokenizers, graphs), ``codebook.npz``
    and a Triton ``repository/`` for ``target``, all from one export so they cannot disagree."""
    import shutil

    from triton_models.repository import build_repository

    ensure_models(settings, progress=progress)
    ensure_codebook(settings, progress=progress)
    if out.exists() and any(out.iterdir()):
        raise EnrichError(f"{out} is not empty; pick a new directory per bundle version")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(settings.models_path, out / "models")
    shutil.copy2(settings.codebook_path, out / "codebook.npz")
    names = build_repository(settings.models_path, out / "repository", target=target)
    progress(f"bundle -> {out}: models, codebook.npz, {target} repository ({', '.join(names)})")
    return out


@dataclass
class LocalStack:
    broker: LocalBroker | KafkaCluster
    triton: object | None  # LocalTriton

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def stop(self) -> None:
        if self.triton is not None:
            self.triton.stop()  # type: ignore[attr-defined]
        self.broker.stop()


def replication(broker: LocalBroker | KafkaCluster) -> dict[str, int]:
    """The topics' replication on a local broker: as many replicas as there are nodes, up to the production
    defaults (3 replicas, min.insync.replicas 2); one node has nothing to replicate to."""
    nodes = len(broker.nodes) if isinstance(broker, KafkaCluster) else 1
    return {"replication_factor": min(nodes, 3), "min_insync_replicas": min(max(nodes - 1, 1), 2)}


def start_broker(settings: ToolSettings, detach: bool = False,
                 progress: Progress = log.info) -> LocalBroker | KafkaCluster:
    """The broker ``settings.local_broker`` names: the embedded Tansu, or Apache Kafka
    (``local_kafka_nodes`` nodes, the first on ``broker_port``)."""
    if settings.local_broker == "kafka":
        return start_kafka(settings.kafka_cache_dir, settings.state_dir / "kafka", settings.local_kafka_nodes,
                           settings.broker_port, detach=detach, progress=progress)
    return LocalBroker(settings.broker_port, settings.state_dir / "logs" / "broker.log", detach=detach).start_and_wait()


def start_stack(settings: ToolSettings, with_triton: bool = True, detach: bool = False,
                progress: Progress = log.info) -> LocalStack:
    """Start broker (+ Triton), wait for readiness, create topics. Stops what it started on failure."""
    from ops.local.triton import LocalTriton

    with ExitStack() as undo:
        broker = start_broker(settings, detach, progress)
        undo.callback(broker.stop)
        progress(f"broker ({settings.local_broker}) ready on {broker.bootstrap}")
        triton = None
        if with_triton:
            repo = build_local_repository(settings)
            triton = LocalTriton(repo, settings.state_dir, settings.triton_http_port, settings.triton_grpc_port,
                                 settings.triton_metrics_port, detach=detach)
            triton.start_and_wait()
            undo.callback(triton.stop)
            progress(f"triton ready on {triton.grpc_url} (gRPC), models: {', '.join(triton.models)}")
        create_topics(settings.updated(broker=broker.bootstrap, **replication(broker)))
        undo.pop_all()
        return LocalStack(broker, triton)


def _pidfile(settings: ToolSettings) -> Path:
    return settings.state_dir / "stack.json"


def stack_up(settings: ToolSettings, progress: Progress) -> None:
    if _pidfile(settings).exists():
        raise EnrichError(f"a stack is already recorded in {_pidfile(settings)}; run `enrich stack down` first")
    stack = start_stack(settings, detach=True, progress=progress)
    brokers = stack.broker.pids() if isinstance(stack.broker, KafkaCluster) else [stack.broker.pid]
    pids = {f"broker{i or ''}": pid for i, pid in enumerate(brokers)} | {
        "triton": stack.triton.pid if stack.triton else None}  # type: ignore[attr-defined]
    _pidfile(settings).write_text(json.dumps({name: {"pid": pid, "identity": process_identity(pid)}
                                              for name, pid in pids.items() if pid}))


def stack_down(settings: ToolSettings, progress: Progress) -> None:
    path = _pidfile(settings)
    if not path.exists():
        progress("no stack recorded; nothing to stop")
        return
    for name, rec in json.loads(path.read_text()).items():
        pid, identity = (rec, None) if isinstance(rec, int) else (int(rec["pid"]), rec.get("identity"))
        now = process_identity(pid)
        if now is None:
            progress(f"{name} (pid {pid}) is not running")
        elif identity is None or now != identity:
            # the pid was reused by another process since `stack up` (or the state file is from an old version)
            progress(f"{name}: pid {pid} is now another process ({now}); left alone")
        elif stop_pid(pid):
            progress(f"stopped {name} (pid {pid})")
    path.unlink()

