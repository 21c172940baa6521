"""The dependency rule, checked in fresh interpreters (what a module imports at load time):

- the serving pipeline (every ``enrich`` module but the offline ones) imports no torch, transformers,
  Faust, Kafka client, ``triton_models`` or ``streams``: it is plain code over numpy and the inference
  clients, testable without a broker;
- the worker (``streams.worker`` and what it loads) imports no torch, transformers or ``triton_models``,
  and none of the offline modules (codebook training, dataset builders, evaluation, recall consumers);
- the offline modules, the tools and the CLI may import anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ENRICH = Path(__file__).resolve().parents[2] / "enrich"
OFFLINE = {"enrich.rqvae", "enrich.debtags", "enrich.appstream", "enrich.snapshots", "enrich.semantic_eval",
           "enrich.recall_index", "enrich.tag_prototypes", "enrich.samples"}
SERVING = sorted(f"enrich.{p.stem}" for p in ENRICH.glob("*.py") if p.stem != "__init__"
                 and f"enrich.{p.stem}" not in OFFLINE)
NOT_IN_SERVING = ("torch", "transformers", "faust", "confluent_kafka", "triton_models", "streams")
NOT_IN_WORKER = ("torch", "transformers", "triton_models", *sorted(OFFLINE))


def loaded_by(modules: list[str]) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(out.stdout))


def offenders(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_the_serving_pipeline_imports_no_training_stack_no_broker_client_and_no_worker():
    assert "enrich.pipeline" in SERVING and "enrich.rqvae" not in SERVING
    assert offenders(loaded_by(SERVING), NOT_IN_SERVING) == []


def test_the_worker_imports_no_training_stack_and_no_offline_module():
    loaded = loaded_by(["streams.worker", "streams.app", "streams.services"])
    assert "faust" in loaded and "enrich.pipeline" in loaded  # it is the worker
    assert offenders(loaded, NOT_IN_WORKER) == []


def test_the_check_sees_an_offender():
    """Codebook training is offline: it loads torch, which the serving check would refuse."""
    assert "torch" in offenders(loaded_by(["enrich.rqvae"]), NOT_IN_SERVING)
