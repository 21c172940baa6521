"""Export one production graph pair in float16 and check it in ONNX Runtime (``benchmarks/gpu_run.sh``).

What a platform team ships: ``<graph>.onnx`` plus one ``<graph>.onnx.data`` per graph, loaded by ONNX
Runtime from the model folder. ``export_model`` checks ONNX Runtime against PyTorch on image sizes and
padding the export never saw and raises when they differ; this writes what it measured as JSON.
Needs torch, transformers, onnx and onnxruntime only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from triton_models.export import ParityError, export_model  # noqa: E402

PRESETS = {"real": {"embedder": "qwen2-vl-7b", "tagger": "qwen2.5-vl-3b"}, "tiny": {"embedder": "tiny",
                                                                                  "tagger": "tiny"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="real")
    ap.add_argument("--role", choices=["embedder", "tagger"], default="tagger")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--report", type=Path, required=True, help="JSON to write")
    ap.add_argument("--keep", type=Path, help="keep the exported folder here (default: a temporary one, removed)")
    a = ap.parse_args()
    out = a.keep or Path(tempfile.mkdtemp(prefix="export-check-"))
    name = PRESETS[a.preset][a.role]
    t0 = time.perf_counter()
    report: dict = {"role": a.role, "preset": name, "dtype": a.dtype}
    try:
        result = export_model(a.role, out, preset=name, dtype=a.dtype,
                              progress=lambda m: print(f"[{time.perf_counter() - t0:6.1f}s] {m}", flush=True))
        report |= {"ok": True, "parity_max_abs_diff": result.max_abs_diff}
    except ParityError as exc:
        report |= {"ok": False, "error": str(exc)}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if out.exists():
        report["files"] = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    a.report.parent.mkdir(parents=True, exist_ok=True)
    a.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if a.keep is None:
        shutil.rmtree(out, ignore_errors=True)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
