"""The packed visual tagger against the pairwise text tagger it replaced, side by side in one run.

Both go through ``enrich eval`` on the debtags test split (the real stream: broker, Triton, a worker),
one after the other on the same machine, each with its own export and its shipped tag prior; the
numbers are the stream's items/s from the first publish to the last output read back, and grade-2
quality. The ratio is the claim (these machines are noisy; absolute items/s are not comparable
across runs).

Run: ``python benchmarks/tagger_packed_vs_pairwise.py [--limit N] [--out benchmarks/results/...json]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ops.measure.evaluate import run_eval
from ops.settings import ToolSettings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="first N test items (0: all 730)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tagger_packed_vs_pairwise.json"))
    args = ap.parse_args()
    base = ToolSettings()
    result: dict = {"runs": {}}
    for tagger in ("pairwise", "packed"):
        s = base.updated(**{"small_tagger": tagger, "model_dir": base.state_dir / f"models-{tagger}"})
        r = run_eval(s, limit=args.limit, out_json=None, kinds=False)
        result["runs"][tagger] = {"tagger": r["versions"]["tagger"], "tag_prior": r["versions"]["tag_prior"],
                                  "throughput": r["throughput"], "tagger_grade=2": r["tagging"]["tagger_grade=2"],
                                  "tagger_grade>=1": r["tagging"]["tagger_grade>=1"],
                                  "tagger_pairs_accuracy": r["tagger_pairs"]["accuracy"]}
    pw, pk = (result["runs"][t]["throughput"]["items_per_s"] for t in ("pairwise", "packed"))
    result["speedup_items_per_s"] = round(pk / pw, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
