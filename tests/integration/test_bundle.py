"""The model bundle the Helm chart deploys, built by `enrich models bundle` and used the way pods use it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import msgpack
import pytest

from corpora import samples
from enrich.assembly import make_backend, make_pipeline
from enrich.pipeline import Enriched, RawEvent, SourceRef
from ops.local.harness import settings_env

pytestmark = pytest.mark.integration


def test_bundle_serves_workers_without_the_weights(local_stack, tmp_path):
    bundle = tmp_path / "bundle"
    res = subprocess.run([sys.executable, "-m", "ops.cli", "models", "bundle", "--out", str(bundle)],
                         env=settings_env(local_stack), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for role in ("embedder", "tagger"):
        assert (bundle / "models" / role / "meta.json").exists()
        for graph in ("vision", "text"):
            config = (bundle / "repository" / f"{role}_{graph}" / "config.pbtxt").read_text()
            assert 'backend: "onnxruntime"' in config and (bundle / "repository" / f"{role}_{graph}" / "1").is_dir()
    assert (bundle / "codebook.npz").exists()

    # What the chart's worker init container copies: everything but the ONNX weights.
    worker_view = tmp_path / "worker"
    shutil.copytree(bundle / "models", worker_view / "models", ignore=shutil.ignore_patterns("*.onnx", "*.onnx.data"))
    shutil.copy2(bundle / "codebook.npz", worker_view / "codebook.npz")
    assert not list(worker_view.rglob("*.onnx"))
    s = local_stack.updated(**{"model_dir": worker_view / "models",
                                       "codebook": worker_view / "codebook.npz", "backend": "triton"})
    backend = make_backend(s)
    pipeline = make_pipeline(s, backend)
    for entry in samples.vocab_entries():
        pipeline.vocabulary.apply(entry)
    items = samples.sample_items(4)
    outcomes = pipeline.run([RawEvent(i["id"].encode(), msgpack.packb(i), SourceRef("items.new", 0, n))
                             for n, i in enumerate(items)])
    backend.close()
    assert all(isinstance(o, Enriched) for o in outcomes)
    assert [o.record.item_id for o in outcomes] == [i["id"] for i in items]


def test_bundle_refuses_a_used_directory(local_stack, tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "x").write_text("v1")
    res = subprocess.run([sys.executable, "-m", "ops.cli", "models", "bundle", "--out", str(tmp_path / "old")],
                         env=settings_env(local_stack), capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "is not empty" in res.stderr
