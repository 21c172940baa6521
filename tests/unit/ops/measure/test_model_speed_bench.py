"""The model benchmark runs end to end on the tiny presets and measures every path it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]


@pytest.mark.slow
def test_model_speed_benchmark_reports_every_path(tmp_path):
    out = tmp_path / "speed.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model_speed.py"), "--preset", "tiny",
                          "--device", "cpu", "--served", "torch", "--items", "2", "--tags", "4", "--repeats", "1",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(r["path"], r["model"]): r for r in report["results"] if "path" in r}
    assert set(rows) == {("hf_embed", "embedder"), ("hf_per_pair", "tagger"), ("hf_packed", "tagger"),
                         ("served_torch", "embedder"), ("served_torch", "tagger"), ("served_torch", "embed+tag")}
    assert all(r["items_per_s"] > 0 for r in rows.values())
    # Per pair costs K forwards of the whole item; packed shares the item once.
    assert rows["hf_per_pair", "tagger"]["tflop_per_item"] > 2 * rows["hf_packed", "tagger"]["tflop_per_item"]
    (check,) = [r for r in report["results"] if "check" in r]
    assert check["max_abs_diff"] < 1e-4
