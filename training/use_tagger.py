"""Train the multilingual tagger (``triton_models.multilingual.UsePackedTagger``): the USE tower stays frozen,
the icon's projection and the grader of (item, tag) vector pairs train.

Rows are the packed tagger's (``training/packed_tagger.py``), built as the worker builds them with the USE
tokenizer, so what trains is what serves. Data: the packed tagger's (the debtags train split, the AppStream
train apps in three kinds with their keywords as free-text labels, the emoji images), plus the same packages
and apps in Chinese from the zh_CN snapshots (``corpora/debtags_zh.py``, ``corpora/appstream_zh.py``), graded
against their English twins' labels. Nothing in another language is read. Validation: the validation split in
both languages, grade-2 F1 per kind ("translated" rows are the Chinese ones).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from corpora import appstream, appstream_zh, debtags, debtags_zh
from enrich import artifacts
from enrich.models.encoders import PackedRowTokens
from training.packed_tagger import PackedConfig, RowBuilder, build_examples, fit, validate
from triton_models.multilingual import (
    BOS,
    EOS,
    IMAGE_SLOT,
    USE_WIDTH,
    UsePackedTagger,
    UseTaggerHead,
    UseTextTower,
    save_use_tagger,
    save_use_tokenizer,
)

log = logging.getLogger(__name__)
USE_TAGGER_VERSION = "tagger-use-debtags-zh-v1"


# the tower's pooling projection and DAN: tuned with the head when ``tune_tower`` (the n-gram layers and the
# embedding table stay the package's)
TUNED_TOWER = ("pool.", "d0.", "d1.", "p1.", "d2.", "d3.", "p3.")


def train_use_tagger(out: Path, cfg: PackedConfig = PackedConfig(lr=2e-3), emoji_dir: Path | None = None,
                     progress: bool = True, tune_tower: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    zh = [it for it in debtags_zh.load_snapshot() if it.split in ("train", "val")]
    zh_apps = [a for a in appstream_zh.load_snapshot() if a.split in ("train", "val")]
    vocab, examples, _, cells = build_examples(cfg.seed, emoji_dir, translated=zh, translated_apps=zh_apps)
    log.info("%d training rows, %d validation rows (%.0fs to build)", len(examples["train"]),
             len(examples["val"]), time.perf_counter() - t0)
    model = UsePackedTagger(UseTextTower.pretrained(), UseTaggerHead())
    for name, p in model.tower.named_parameters():
        p.requires_grad_(tune_tower and name.startswith(TUNED_TOWER))
    with tempfile.TemporaryDirectory() as tmp:
        save_use_tokenizer(Path(tmp))
        rows = RowBuilder(cfg, vocab, cells, model.head.project, tokenizer_dir=Path(tmp),
                          tokens=PackedRowTokens(BOS, EOS, IMAGE_SLOT), visual_tokens=1, width=USE_WIDTH)
        losses = fit(model, rows, examples["train"], cfg, "training multilingual tagger", progress)
        info = {"version": USE_TAGGER_VERSION,
                "datasets": [debtags.SNAPSHOT_DIR.name, debtags_zh.SNAPSHOT_DIR.name, appstream.SNAPSHOT_DIR.name,
                             appstream_zh.SNAPSHOT_DIR.name] + (["emoji-datasource-google"] if emoji_dir else []),
                "base": "USE multilingual v3 + EfficientNet-Lite0", "steps": len(losses),
                "rows_seen": len(losses) * cfg.batch, "train_rows": len(examples["train"]),
                "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
                "max_tokens": cfg.max_text_tokens, "visual_tokens": 1, "config": cfg.__dict__,
                "tuned_tower": list(TUNED_TOWER) if tune_tower else []}
        info |= validate(model, rows, examples["val"], cfg.seed + 1)
    info["train_seconds"] = round(time.perf_counter() - t0, 1)
    save_use_tagger(model, out, info)
    artifacts.write_record(out, info)
    return info
