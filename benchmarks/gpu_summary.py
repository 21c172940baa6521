"""The GPU run's results as the README's speed table, beside the issue's targets (``benchmarks/gpu_run.sh``).

Reads ``gpu_speed.json`` and ``export_check.json`` from the folder given and prints Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PATHS = ("hf_embed", "served_embed", "served_tag", "served_embed+tag")


def table(speed: dict) -> list[str]:
    rows: dict[int, dict[str, dict]] = {}
    for r in speed["results"]:
        rows.setdefault(r["items"], {})[r["path"]] = r
    head = ("| items per batch | HF embed | HF tagger per pair | served embed | served tag | served embed + tag "
            "| MFU (embed + tag) |")
    out = [head, "|" + "---|" * 7]
    per_pair = next((r for r in speed["results"] if r["path"] == "hf_tag_per_pair"), None)
    for n in sorted(rows):
        if n == 1 and set(rows[n]) == {"hf_tag_per_pair"}:
            continue
        cells = []
        for path in ("hf_embed", "hf_tag_per_pair", "served_embed", "served_tag", "served_embed+tag"):
            r = per_pair if path == "hf_tag_per_pair" else rows[n].get(path)
            cells.append("-" if r is None else r.get("error", f"{r['items_per_s']:.1f}"))
        both = rows[n].get("served_embed+tag", {})
        cells.append(f"{both['mfu']:.0%}" if "mfu" in both else "-")
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    return out


def targets(speed: dict) -> list[str]:
    ok = [r for r in speed["results"] if "items_per_s" in r]
    both = [r for r in ok if r["path"] == "served_embed+tag" and r["items"] >= 16]
    best = max((r["items_per_s"] for r in both), default=0.0)
    ratios = []
    for r in ok:
        if r["path"] == "served_embed":
            hf = next((h for h in ok if h["path"] == "hf_embed" and h["items"] == r["items"]), None)
            if hf:
                ratios.append((r["items"], r["items_per_s"] / hf["items_per_s"]))
    oom = sorted({r["items"] for r in speed["results"] if r.get("error") == "out of memory"})
    lines = ["- served embed + tag at 16 items or more: "
             + (f"{best:.1f} items/s" if both else "not run at such a batch") + " (target 30)",
             "- served embed / plain HF embed: " + (", ".join(f"{x:.2f}x at {n}" for n, x in ratios) or "-")
             + " (target 0.9x)",
             f"- out of memory at: {', '.join(map(str, oom)) if oom else 'none'} "
             f"(batch sizes run: {', '.join(map(str, speed['workload']['batch_sizes']))})"]
    for c in speed.get("checks", []):
        lines.append(f"- {c['check']}: max |diff| {c['max_abs_diff']} ({c['relative_to_scale']:.2%} of the scale)")
    return lines


def main() -> None:
    folder = Path(sys.argv[1])
    speed = json.loads((folder / "gpu_speed.json").read_text())
    lines = [f"# GPU run: {speed['device']}, torch {speed['torch']}, {speed['preset']} presets, {speed['dtype']}, "
             f"compile {speed['compile']}", "",
             f"Workload per item: one {speed['workload']['image']} image, {speed['workload']['text_tokens']} text "
             f"tokens, {speed['workload']['tags']} candidate tags. Items/s, one process, measured side by side.", ""]
    lines += table(speed) + [""] + targets(speed)
    export = folder / "export_check.json"
    if export.exists():
        e = json.loads(export.read_text())
        if "skipped" in e:
            lines.append(f"- {e['skipped']}")
        elif e.get("ok"):
            worst = max(e["parity_max_abs_diff"].values())
            files = ", ".join(f"{k} {v / 2**30:.2f} GiB" if v > 2**30 else f"{k} {v / 2**20:.1f} MiB"
                              for k, v in e["files"].items())
            lines.append(f"- {e['role']} exported in {e['dtype']} in {e['seconds']:.0f}s ({files}); ONNX Runtime "
                         f"parity max |diff| {worst:.2e}")
        else:
            lines.append(f"- {e['role']} {e['dtype']} export failed after {e.get('seconds', '?')}s: "
                         f"{e.get('error', '')[:300]}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
