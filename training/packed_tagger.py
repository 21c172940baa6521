"""Train the packed visual tagger (``packed_tagger.py``) on the debtags text and the AppStream kinds.

Rows are built exactly as the worker builds them (``enrich.models.encoders.PackedRowTokens`` and
``packed_inputs``): one row per item, its visual tokens and text once, then one suffix per candidate.

- **Data**: the debtags snapshot's train split as text items, and the AppStream snapshot's train apps
  (with debtags or keywords) with their icons, each in all three kinds (modality dropout: the listing with
  its icon, name and summary with its icon, the icon alone), so the tagger learns what an icon says when
  there is no text and to trust the text when there is.
- **Labels**: debtags, and the apps' AppStream keywords as free text (v2): a few thousand phrases nobody
  chose for this tagger, so it learns to grade a tag it has not seen from the tag's words, which is what
  an open vocabulary asks of it. AppStream categories are never trained on: they are the held-out
  vocabulary of the open-vocabulary test.
- **Candidates**: the gold labels (grade 2), hard negatives from both of the workers' candidate sources
  (what the neighbours vote for, what the tag vectors are near; graded by rule, same-facet debtags 1),
  keywords of other apps in the same categories, and one random tag, in random order.
- **Trained**: LoRA adapters on every MiniLM layer (the visual tokens enter at the bottom), the visual
  projection and the head; EfficientNet-Lite0 and MiniLM stay frozen. v1 started from the pairwise
  tagger's adapters and head (a model that already grades tags), v2 from v1.
- A time budget bounds the run on a 2-core CPU; the record keeps validation accuracy and, per kind,
  grade-2 F1 on the validation apps.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corpora import appstream, debtags
from corpora.appstream import keyword_labels
from corpora.debtags import grade_of, tag_vocabulary
from corpora.emoji import Emoji, load_emoji
from enrich import artifacts
from enrich.models.encoders import PackedRowTokens, load_encoder_tokenizer, packed_inputs
from enrich.preprocess import prepare_event
from enrich.tagging.vocabulary import readable_tag
from training.pairwise_tagger import lr_schedule, minilm_vectors, neighbour_candidates, zero_shot_candidates
from triton_models.packed_tagger import (
    VISUAL_TOKENS,
    PackedEncoderTagger,
    pooled_cells,
    save_packed_tagger,
)
from triton_models.small_models import EfficientNetLite0, image_pixels, load_minilm, minilm_dir

log = logging.getLogger(__name__)
PACKED_TAGGER_VERSION = "tagger-packed-visual-v3"
KINDS = appstream.KINDS


@dataclass(frozen=True)
class PackedConfig:
    max_minutes: float = 30.0
    epochs: int = 3
    batch: int = 16
    max_text_tokens: int = 96
    max_candidates: int = 16
    hard_per_item: int = 8
    lr: float = 1e-3
    seed: int = 0


@dataclass
class Example:
    text: str
    tags: list[str]  # gold
    candidates: list[str]  # mined hard negatives
    cells: int = -1  # row of the icon's pooled feature map, -1 without an image
    kind: str = "text"


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    grades: list[list[int]] = field(default_factory=list)


def label_grade(tag: str, gold: list[str]) -> int:
    """A debtag: 2 gold, 1 same facet as a gold debtag, else 0. A free-text keyword has no facets: 2 or 0."""
    if "::" in tag:
        return grade_of(tag, [g for g in gold if "::" in g])
    return 2 if tag in gold else 0


class RowBuilder:
    """Training batches made the way the worker makes them.

    ``project`` turns image cells into an image's visual tokens; the MiniLM tagger's rows are the default, the
    multilingual tagger passes its own tokenizer (``tokenizer_dir``), row tokens, visual tokens per image and
    width."""

    def __init__(self, cfg: PackedConfig, vocab: list[str], cells: torch.Tensor, project,  # noqa: ANN001
                 tokenizer_dir: Path | None = None, tokens: PackedRowTokens | None = None,
                 visual_tokens: int = VISUAL_TOKENS, width: int = 384) -> None:
        self.cfg = cfg
        self.vocab = vocab
        self.tok = load_encoder_tokenizer(tokenizer_dir or minilm_dir())
        self.tok.no_padding()
        self.tokens = tokens or PackedRowTokens(self.tok.token_to_id("[CLS]"), self.tok.token_to_id("[SEP]"),
                                                self.tok.token_to_id("[unused0]"))
        self.pad = self.tokens.sep if tokens else self.tok.token_to_id("[PAD]")
        self.visual_tokens, self.width = visual_tokens, width
        self._tag_ids: dict[str, list[int]] = {}
        self.cells = cells
        self.project = project

    def tag_ids(self, tag: str) -> list[int]:
        if tag not in self._tag_ids:  # as the worker tokenizes a candidate (``PackedEncoderTagger._tags``)
            self._tag_ids[tag] = self.tok.encode(readable_tag(tag), add_special_tokens=False).ids[:16]
        return self._tag_ids[tag]

    def suffixes(self, ex: Example, rng: random.Random) -> list[str]:
        gold = list(ex.tags)
        if len(gold) > self.cfg.max_candidates // 2:  # an app may carry two dozen keywords: a sample each time
            gold = rng.sample(gold, self.cfg.max_candidates // 2)
        hard = [t for t in ex.candidates if t not in ex.tags]
        chosen = gold + rng.sample(hard, min(self.cfg.hard_per_item, len(hard)))
        chosen.append(rng.choice(self.vocab))
        chosen = list(dict.fromkeys(chosen))[: self.cfg.max_candidates]
        rng.shuffle(chosen)
        return chosen

    def batch(self, examples: list[Example], rng: random.Random) -> Batch:
        texts = self.tok.encode_batch([ex.text for ex in examples], add_special_tokens=False)
        rows, visual, grades = [], [], []
        idx = [ex.cells for ex in examples if ex.cells >= 0]
        projected = self.project(self.cells[idx]) if idx else None
        k = 0
        for ex, enc in zip(examples, texts, strict=True):
            tags = self.suffixes(ex, rng)
            if ex.cells >= 0:
                visual.append(projected[k])
                k += 1
            else:
                visual.append(torch.zeros((0, self.width)))
            rows.append(self.tokens.row(self.visual_tokens if ex.cells >= 0 else 0, enc.ids[: self.cfg.max_text_tokens],
                                        [self.tag_ids(t) for t in tags]))
            grades.append([label_grade(t, ex.tags) for t in tags])
        # The host inputs come from the serving code; the visual tokens stay tensors so gradients reach
        # the projection.
        host = packed_inputs(rows, [np.zeros((len(v), self.width), np.float32) for v in visual], self.pad)
        t = max(1, max(len(v) for v in visual))
        image = torch.zeros((len(rows), t, self.width))
        for r, v in enumerate(visual):
            if len(v):
                image[r, : len(v)] = v
        inputs = {k: torch.from_numpy(v) for k, v in host.items() if k != "image_embeds"}
        inputs["image_embeds"] = image
        return Batch(inputs, grades)


def _forward(model: PackedEncoderTagger, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    x = b.inputs
    logits = model(x["input_ids"], x["attn_segments"], x["position_ids"], x["token_type_ids"], x["image_embeds"],
                   x["readout_index"])
    flat = torch.cat([logits[r, : len(g)] for r, g in enumerate(b.grades)])
    gold = torch.tensor([g for gs in b.grades for g in gs])
    return flat, gold


@torch.no_grad()
def pooled_image_cells(events: list[dict]) -> torch.Tensor:
    """Pooled EfficientNet-Lite0 feature maps of image-only ``items.new`` records' images, decoded as serving
    decodes them."""
    images = [prepare_event(e, 8000).images[0] for e in events]
    net = EfficientNetLite0.pretrained()
    return torch.cat([pooled_cells(net, image_pixels(images[i:i + 64])) for i in range(0, len(images), 64)])


def build_examples(seed: int, emoji_dir: Path | None = None, translated: Sequence[debtags.DebtagsItem] = (),
                   translated_apps: Sequence[appstream.AppItem] = (),
                   ) -> tuple[list[str], dict[str, list[Example]], list[appstream.AppItem], torch.Tensor]:
    """``translated``, ``translated_apps``: the same packages and apps in another language (``kind`` "zh_CN:..."),
    graded against the same labels and candidates as their English twins, with the same icons."""
    # A wrong package directory fails here, not after minutes of embedding.
    emoji = [e for e in load_emoji(emoji_dir) if e.split != "test"] if emoji_dir is not None else []
    items = debtags.load_snapshot()
    vocab = tag_vocabulary(items)
    train = [it for it in items if it.split == "train"]
    val = [it for it in items if it.split == "val"]
    both = train + val
    vecs, tag_vecs = minilm_vectors(both, vocab)
    tv = vecs[: len(train)]
    near = (neighbour_candidates(tv, tv, [it.tags for it in train], 8, same=True)
            + neighbour_candidates(vecs[len(train):], tv, [it.tags for it in train], 8))
    zero = zero_shot_candidates(vecs, tag_vecs, vocab, 8)
    cands = {it.id: list(dict.fromkeys([*n, *z])) for it, n, z in zip(both, near, zero, strict=True)}
    examples: dict[str, list[Example]] = {"train": [], "val": []}
    for it in both:
        text = prepare_event(debtags.as_event(it), 8000).text
        examples[it.split].append(Example(text, list(it.tags), cands[it.id]))
    for it in translated:
        if it.id in cands:
            text = prepare_event(debtags.as_event(it), 8000).text
            examples[it.split].append(Example(text, list(it.tags), cands[it.id], kind="translated"))
    apps = [a for a in appstream.load_snapshot() if a.split in ("train", "val") and (a.tags or keyword_labels(a))]
    icons = appstream.load_icons()
    cells = pooled_image_cells([a.event("image_only", icons[a.id]) for a in apps])
    keyword_negatives = _keyword_negatives(apps)
    rng = random.Random(seed)
    for k, a in enumerate(apps):
        kinds = KINDS if a.split == "train" else (KINDS[rng.randrange(3)],)
        gold = list(a.tags) + keyword_labels(a)
        negatives = cands.get(a.id, []) + keyword_negatives[a.id]
        for kind in kinds:
            unillustrated = a.event(kind, b"") | {"kind": "article", "images": []}
            text = "" if kind == "image_only" else prepare_event(unillustrated, 8000).text
            examples[a.split].append(Example(text, gold, negatives, k, kind))
    row_of = {a.id: k for k, a in enumerate(apps)}
    for a in translated_apps:
        if a.id not in row_of:
            continue
        english = apps[row_of[a.id]]
        gold = list(english.tags) + keyword_labels(english)  # the English labels: the vocabulary is English
        for kind in KINDS[:2]:
            unillustrated = a.event(kind, b"") | {"kind": "article", "images": []}
            examples[a.split].append(Example(prepare_event(unillustrated, 8000).text, gold,
                                             cands.get(a.id, []) + keyword_negatives[a.id], row_of[a.id],
                                             f"translated_{kind}"))
    if emoji:
        start = len(cells)
        cells = torch.cat([cells, pooled_image_cells([e.event(e.name) for e in emoji])])
        for k, (e, gold, negatives) in enumerate(zip(emoji, *emoji_labels(emoji, seed), strict=True)):
            examples[e.split].append(Example("", gold, negatives, start + k, "emoji"))
    return vocab, examples, apps, cells


def emoji_labels(emoji: list[Emoji], seed: int, per_item: int = 10) -> tuple[list[list[str]], list[list[str]]]:
    """An emoji's free-text labels, its subcategory and its name (``face-smiling``, ``grinning face``), and hard
    negatives: the subcategories and names of emoji of the same category but another subcategory (the names
    of its own subcategory's emoji are left out: many would fit it too). The category is never a label: it is
    the held-out vocabulary of the emoji check."""
    rng = random.Random(seed)
    by_category: dict[str, set[str]] = {}
    own_subcategory: dict[str, set[str]] = {}
    for e in emoji:
        by_category.setdefault(e.category, set()).update((e.subcategory, e.name))
        own_subcategory.setdefault(e.subcategory, set()).update((e.subcategory, e.name))
    gold, negatives = [], []
    for e in emoji:
        pool = sorted(by_category[e.category] - own_subcategory[e.subcategory])
        gold.append([e.subcategory, e.name])
        negatives.append(rng.sample(pool, min(per_item, len(pool))))
    return gold, negatives


def _keyword_negatives(apps: list[appstream.AppItem], per_app: int = 12, seed: int = 0) -> dict[str, list[str]]:
    """Hard negatives among keywords: those of other apps in the same categories (they sound alike), which
    this app does not carry."""
    rng = random.Random(seed)
    by_category: dict[str, list[str]] = {}
    for a in apps:
        for c in a.categories:
            by_category.setdefault(c, []).extend(keyword_labels(a))
    out = {}
    for a in apps:
        own = set(keyword_labels(a))
        pool = sorted({kw for c in a.categories for kw in by_category.get(c, [])} - own)
        out[a.id] = rng.sample(pool, min(per_app, len(pool)))
    return out


@torch.no_grad()
def validate(model: PackedEncoderTagger, rows: RowBuilder, val: list[Example], seed: int) -> dict:
    model.eval()
    rng = random.Random(seed)
    correct = total = 0
    per_kind: dict[str, list[int]] = {}
    for i in range(0, len(val), 32):
        chunk = val[i:i + 32]
        b = rows.batch(chunk, rng)
        flat, gold = _forward(model, b)
        pred = flat.argmax(-1)
        correct += int((pred == gold).sum())
        total += len(gold)
        k = 0
        for ex, g in zip(chunk, b.grades, strict=True):
            p = pred[k:k + len(g)].tolist()
            k += len(g)
            tp = sum(1 for a, y in zip(p, g, strict=True) if a == 2 and y == 2)
            c = per_kind.setdefault(ex.kind, [0, 0, 0])
            c[0] += tp
            c[1] += sum(1 for a in p if a == 2)
            c[2] += sum(1 for y in g if y == 2)
    f1 = {kind: round(2 * tp / max(1, npred + ngold), 4) for kind, (tp, npred, ngold) in per_kind.items()}
    model.train()
    return {"val_accuracy": round(correct / max(1, total), 4), "val_suffixes": total,
            "val_grade2_f1_among_candidates": f1}


def fit(model: torch.nn.Module, rows: RowBuilder, train: list[Example], cfg: PackedConfig, desc: str,
        progress: bool = True) -> list[float]:
    """Train ``model``'s trainable parameters on ``train`` rows for ``cfg.epochs`` or ``cfg.max_minutes``."""
    from tqdm import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    rng = random.Random(cfg.seed)
    order: list[Example] = []
    for _ in range(cfg.epochs):
        epoch = list(train)
        rng.shuffle(epoch)
        order += epoch
    steps_total = len(order) // cfg.batch
    budget_s = cfg.max_minutes * 60
    started = time.perf_counter()
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps_total), desc=desc, unit="step", disable=not progress)
    for step in bar:
        frac = max(step / steps_total, (time.perf_counter() - started) / budget_s)
        if frac >= 1:
            log.info("time budget of %.1f min reached after %d steps", cfg.max_minutes, step)
            break
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_schedule(frac)
        b = rows.batch(order[step * cfg.batch:(step + 1) * cfg.batch], rng)
        flat, gold = _forward(model, b)
        loss = F.cross_entropy(flat, gold)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses


def train_packed_tagger(out: Path, cfg: PackedConfig = PackedConfig(), init: Path | None = None,
                        progress: bool = True, emoji_dir: Path | None = None) -> dict:
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    vocab, examples, apps, cells = build_examples(cfg.seed, emoji_dir)
    log.info("%d training rows, %d validation rows (%.0fs to build)", len(examples["train"]),
             len(examples["val"]), time.perf_counter() - t0)
    tok = load_encoder_tokenizer(minilm_dir())
    model = PackedEncoderTagger(load_minilm(), tok.token_to_id("[unused0]"))
    if init is not None:
        blob = torch.load(init, map_location="cpu", weights_only=True)
        own = model.trained_state()
        start = {k: v.float() for k, v in blob["state"].items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(start, strict=False)
        log.info("started %d of %d trained tensors from %s", len(start), len(own), init.name)
    rows = RowBuilder(cfg, vocab, cells, model.visual)
    losses = fit(model, rows, examples["train"], cfg, "training packed tagger", progress)
    info = {"version": PACKED_TAGGER_VERSION, "datasets": [debtags.SNAPSHOT_DIR.name, appstream.SNAPSHOT_DIR.name]
            + (["emoji-datasource-google"] if emoji_dir else []),
            "base": "all-MiniLM-L6-v2 + EfficientNet-Lite0", "init": init.name if init else None,
            "steps": len(losses), "rows_seen": len(losses) * cfg.batch, "train_rows": len(examples["train"]),
            "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
            "train_seconds": round(time.perf_counter() - t0, 1), "max_tokens": cfg.max_text_tokens,
            "visual_tokens": VISUAL_TOKENS, "config": cfg.__dict__}
    info |= validate(model, rows, examples["val"], cfg.seed + 1)
    save_packed_tagger(model, out, info)
    artifacts.write_record(out, info)
    return info
