"""Fine-tune the small cross-encoder tagger on (package, debtag) pairs graded 2/1/0.

Pairs per training item: its gold tags (grade 2), the tags the zero-shot retriever ranks
highest for it (the candidates the service will ask about, so the hard cases; graded by
rule, so same-facet ones are grade 1), and one random tag. Only LoRA adapters on the top
layers and the head train; a time budget bounds the run on a 2-core CPU.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corpora.debtags import DebtagsItem, grade_of, tag_vocabulary
from enrich import artifacts
from enrich.tagging.prior import DecisionHead, TagPrior
from enrich.tagging.vocabulary import readable_tag
from triton_models.small_models import (
    CrossEncoderTagger,
    embed_texts,
    load_minilm,
    minilm_tokenizer,
    save_tagger_artifact,
)

log = logging.getLogger(__name__)
TAGGER_ARTIFACT_VERSION = "tagger-minilm-debtags-v2"


@dataclass(frozen=True)
class Pair:
    text: str
    tag: str
    grade: int


@dataclass(frozen=True)
class TrainConfig:
    max_minutes: float = 10.0
    max_steps: int = 0  # 0: until the time budget or the pairs run out
    batch: int = 32
    max_tokens: int = 80
    lr: float = 1e-3
    hard_candidates: int = 8  # zero-shot candidates in the hard-negative pool
    neighbour_candidates: int = 8  # neighbour-voted candidates in the pool
    hard_per_item: int = 6
    seed: int = 0


def lr_schedule(progress: float, warmup: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to zero, over the fraction of the run done."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))


def item_text(it: DebtagsItem) -> str:
    return f"{it.title}\n{it.text}"


def minilm_vectors(items: Sequence[DebtagsItem], vocab: list[str], progress: bool = False,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM vectors of the items and of the tag names."""
    bert, tok = load_minilm(), minilm_tokenizer()
    tag_vecs = embed_texts(bert, tok, [readable_tag(t) for t in vocab])
    item_vecs = embed_texts(bert, tok, [item_text(it) for it in items], progress=progress)
    return item_vecs.numpy(), tag_vecs.numpy()


def zero_shot_candidates(item_vecs: np.ndarray, tag_vecs: np.ndarray, vocab: list[str], top: int) -> list[list[str]]:
    """The zero-shot retriever: cosine between item and tag-name vectors, top ``top`` tags."""
    order = np.argsort(-(item_vecs @ tag_vecs.T), axis=1)[:, :top]
    return [[vocab[j] for j in row] for row in order]


def neighbour_candidates(item_vecs: np.ndarray, exemplar_vecs: np.ndarray, exemplar_tags: Sequence[Sequence[str]],
                         top: int, k: int = 10, same: bool = False) -> list[list[str]]:
    """The tags the ``k`` nearest exemplars vote for (similarity-weighted), top ``top``: what the workers'
    tag prior adds to the candidates, by the prior's own vote. ``same``: the items are the exemplars, so each
    skips itself."""
    prior = TagPrior.from_items(exemplar_tags, exemplar_vecs, DecisionHead.unfitted(), {}, k=k)
    return prior.top_voted(item_vecs, top, exemplars_themselves=same)


def make_pairs(items: Sequence[DebtagsItem], vocab: list[str], candidates: Sequence[Sequence[str]],
               seed: int, hard_per_item: int = 4) -> list[Pair]:
    rng = random.Random(seed)
    pairs = []
    for it, cands in zip(items, candidates, strict=True):
        text = item_text(it)
        chosen = set(it.tags)
        hard = [t for t in cands if t not in chosen]
        chosen |= set(rng.sample(hard, min(hard_per_item, len(hard))))
        chosen.add(rng.choice(vocab))
        pairs += [Pair(text, t, grade_of(t, it.tags)) for t in sorted(chosen)]
    rng.shuffle(pairs)
    return pairs


def _encode(tok, pairs: Sequence[Pair], max_tokens: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return tok([p.text for p in pairs], [readable_tag(p.tag) for p in pairs], padding=True,
               truncation="only_first", max_length=max_tokens, return_tensors="pt")


@torch.no_grad()
def predict(model: CrossEncoderTagger, tok, pairs: Sequence[Pair], max_tokens: int,  # noqa: ANN001
            batch: int = 64) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(pairs), batch):
        enc = _encode(tok, pairs[i:i + batch], max_tokens)
        out.append(model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


def accuracy(logits: np.ndarray, pairs: Sequence[Pair]) -> float:
    gold = np.array([p.grade for p in pairs])
    return float((logits.argmax(1) == gold).mean()) if len(pairs) else 0.0


def train_tagger(items: Sequence[DebtagsItem], out: Path, cfg: TrainConfig = TrainConfig(),
                 dataset_version: str = "", progress: bool = True) -> dict:
    """Train on the ``train`` split, report accuracy on ``val`` pairs, write the artifact."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    vocab = tag_vocabulary(items)
    train = [it for it in items if it.split == "train"]
    val = [it for it in items if it.split == "val"]
    t0 = time.perf_counter()
    item_vecs, tag_vecs = minilm_vectors(train + val, vocab, progress=progress)
    zero = zero_shot_candidates(item_vecs, tag_vecs, vocab, cfg.hard_candidates)
    # Hard negatives from both of the workers' candidate sources: what the tag prior's neighbours vote
    # for (the tagger has to tell a family's tags from this item's) and what the tag vectors are near.
    train_vecs = item_vecs[:len(train)]
    near = (neighbour_candidates(train_vecs, train_vecs, [it.tags for it in train], cfg.neighbour_candidates,
                                 same=True)
            + neighbour_candidates(item_vecs[len(train):], train_vecs, [it.tags for it in train],
                                   cfg.neighbour_candidates))
    cands = [list(dict.fromkeys([*n, *z])) for n, z in zip(near, zero, strict=True)]
    train_pairs = make_pairs(train, vocab, cands[:len(train)], cfg.seed, cfg.hard_per_item)
    val_pairs = make_pairs(val, vocab, cands[len(train):], cfg.seed + 1, cfg.hard_per_item)
    log.info("%d training pairs, %d validation pairs (%.0fs to mine)", len(train_pairs), len(val_pairs),
             time.perf_counter() - t0)
    tok = minilm_tokenizer()
    model = CrossEncoderTagger(load_minilm())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    steps_total = len(train_pairs) // cfg.batch
    if cfg.max_steps:
        steps_total = min(steps_total, cfg.max_steps)
    budget_s = cfg.max_minutes * 60
    started = time.perf_counter()
    model.train()
    seen, losses = 0, []
    bar = tqdm(range(steps_total), desc="training tagger", unit="step", disable=not progress)
    for step in bar:
        # Progress is whichever runs out first, steps or time, so the schedule completes either way.
        progress_frac = max(step / steps_total, (time.perf_counter() - started) / budget_s)
        if progress_frac >= 1:
            log.info("time budget of %.1f min reached after %d steps", cfg.max_minutes, step)
            break
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_schedule(progress_frac)
        batch = train_pairs[step * cfg.batch:(step + 1) * cfg.batch]
        enc = _encode(tok, batch, cfg.max_tokens)
        logits = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        loss = F.cross_entropy(logits, torch.tensor([p.grade for p in batch]))
        loss.backward()
        opt.step()
        opt.zero_grad()
        seen += len(batch)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    train_s = time.perf_counter() - t0
    val_logits = predict(model, tok, val_pairs, cfg.max_tokens)
    info = {
        "version": TAGGER_ARTIFACT_VERSION, "dataset": dataset_version, "base": "all-MiniLM-L6-v2",
        "steps": len(losses), "pairs_seen": seen, "train_pairs": len(train_pairs),
        "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
        "val_pairs": len(val_pairs), "val_accuracy": round(accuracy(val_logits, val_pairs), 4),
        "train_seconds": round(train_s, 1), "max_tokens": cfg.max_tokens, "config": cfg.__dict__,
    }
    save_tagger_artifact(model, out, info)
    artifacts.write_record(out, info)
    return info
