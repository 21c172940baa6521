"""The one GPU script, run at tiny size on the CPU: every path at every batch size, the float16 export checked
in ONNX Runtime, the summary table; and `enrich capacity` planning GPUs from what such a run measured."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu-run")
    env = os.environ | {"OUT": str(out), "PRESET": "tiny", "DEVICE": "cpu", "ITEMS": "1,2", "REPEATS": "1",
                        "PYTHON": sys.executable}
    res = subprocess.run([str(ROOT / "benchmarks" / "gpu_run.sh")], env=env, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


@pytest.mark.slow
def test_the_gpu_script_measures_every_path_at_every_batch_size(gpu_run):
    assert sorted(p.name for p in gpu_run.iterdir()) == ["export_check.json", "export_check.log",
                                                         "gpu_speed.json", "gpu_speed.log", "summary.md"]
    speed = json.loads((gpu_run / "gpu_speed.json").read_text())
    rows = {(r["path"], r["items"]): r for r in speed["results"]}
    for n in (1, 2):
        for path in ("hf_embed", "served_embed", "served_tag", "served_embed+tag"):
            assert rows[path, n]["items_per_s"] > 0 and rows[path, n]["tflop_per_item"] > 0
    # per item, the served graphs cost the same at any batch; one pair at a time costs K forwards of the item
    assert rows["served_tag", 1]["tflop_per_item"] == rows["served_tag", 2]["tflop_per_item"]
    assert rows["hf_tag_per_pair", 1]["tflop_per_item"] > 5 * rows["served_tag", 1]["tflop_per_item"]
    (check,) = speed["checks"]
    assert check["relative_to_scale"] < 0.02  # bf16 on both sides
    export = json.loads((gpu_run / "export_check.json").read_text())
    assert export["ok"] and export["dtype"] == "float16"
    assert sorted(export["files"]) == ["meta.json", "text.onnx", "text.onnx.data", "vision.onnx", "vision.onnx.data"]
    summary = (gpu_run / "summary.md").read_text()
    assert "| 2 | " in summary and "ONNX Runtime parity" in summary


@pytest.mark.slow
def test_capacity_plans_gpus_from_a_gpu_run_and_says_so(gpu_run, tmp_path, capsys):
    from ops.cli import main
    from ops.measure.capacity import gpu_figure

    figure = gpu_figure(gpu_run / "gpu_speed.json")
    speed = json.loads((gpu_run / "gpu_speed.json").read_text())
    best = max(r["items_per_s"] for r in speed["results"] if r["path"] == "served_embed+tag")
    assert figure is not None and figure.items_per_s == best
    (tmp_path / "costs.json").write_text(json.dumps({"costs": {"worker_cpu_s": 0.004, "model_s": 0.01,
                                                               "in_bytes": 3000, "out_bytes": 6000}}))
    assert main(["capacity", "--rate", "100", "--costs", str(tmp_path / "costs.json"), "--gpu-result",
                 str(gpu_run / "gpu_speed.json"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["gpus"] == max(1, math.ceil(100 / best / 0.7))  # the GPUs follow the measured rate
    assert f"{best:g} items/s per GPU, served embed + tag" in plan["costs"]["source"]
    assert main(["capacity", "--rate", "100", "--costs", str(tmp_path / "costs.json"), "--gpu-result",
                 str(tmp_path / "none.json")]) == 0
    assert "no GPU measurement" in capsys.readouterr().out
