"""The artifacts bound to the exported small embedder, built end to end from the snapshots.

Each export the models if needed, embeds the training data in-process as a worker would (cached per
embedder version), fits the artifact with its trainer in ``training`` and writes the shipped file with
its record: the tag prototypes (`enrich vocab prototypes`), the CF adapter (`enrich models train-cf`)
and the neighbour-vote tag prior (`enrich vocab prior`). After an embedder change all three are rebuilt.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from corpora import appstream, debtags
from corpora.appstream import keyword_labels
from corpora.emoji import load_emoji
from enrich import artifacts
from enrich.assembly import in_process_models
from enrich.models.meta import ModelMeta
from enrich.preprocess import prepare_event
from enrich.schemas import VocabEntry
from enrich.tagging.prior import DEFAULT_CANDIDATE_TAGS, TagPrior
from enrich.tagging.prototypes import TagPrototypes
from enrich.tagging.vocabulary import TagVocabulary, VocabSnapshot
from ops.local.stack import debtags_vocabulary, ensure_models
from ops.measure.evaluate import embed_debtags
from ops.settings import ToolSettings
from training.cf_adapter import train_cf
from training.tag_prior import OpenSet, fit_open_head, fit_tag_prior
from triton_models.export_small import SmallPreset, ship_cf_adapter, ship_tag_prior, small_preset


def with_small_models(s: ToolSettings, say: Callable[[str], None]) -> tuple[ToolSettings, SmallPreset]:
    """``s`` on its small preset (the English one for a random-weight preset), with its models exported into
    the state dir."""
    preset = small_preset(s.model_preset)
    s = s.updated(model_preset=preset.name)
    s.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_models(s, progress=say)
    return s, preset


def training_texts(preset: SmallPreset, split: str) -> list[debtags.DebtagsItem]:
    """The debtags items of ``split`` a preset's artifacts are fitted on: English, and for a multilingual
    preset the same packages in Chinese too (zh_CN, the one translation trained on)."""
    items = [it for it in debtags.load_snapshot() if it.split == split]
    if preset.tower == "use":
        from corpora import debtags_zh

        items += [it for it in debtags_zh.load_snapshot() if it.split == split]
    return items


def build_prototypes(s: ToolSettings, out: Path | None, say: Callable[[str], None] = print) -> TagPrototypes:
    """Tag prototypes from the debtags train split (never the evaluated items), in the exported embedder's space."""
    s, preset = with_small_models(s, say)
    train = training_texts(preset, "train")
    vectors, embedder = embed_debtags(s, train, say)
    protos = TagPrototypes.compute([it.tags for it in train], vectors, embedder)
    target = out or preset.prototypes
    protos.save(target)
    say(f"{protos.version}: {protos.info} in the space of {embedder} -> {target}")
    return protos


def build_cf_adapter(s: ToolSettings, dataset: Path | None, epochs: int, out: Path | None,
                     say: Callable[[str], None] = print) -> Path:
    """The CF adapter on the debtags co-use pairs, over the exported embedder's vectors."""
    s, preset = with_small_models(s, say)
    items = debtags.load_snapshot(dataset or debtags.SNAPSHOT_DIR)
    vectors, embedder = embed_debtags(s, items, say)
    target = out or preset.cf
    adapter = train_cf(items, vectors, embedder, epochs=epochs, version=target.stem)
    adapter.save(target)
    artifacts.write_record(target, adapter.info | {"version": adapter.version})
    say(json.dumps(adapter.info, indent=2))
    say(f"{adapter.version} -> {target}")
    if target == preset.cf:  # the state dir's export gets it now, not at its next export
        embedder_dir = s.models_path / "embedder"
        ship_cf_adapter(ModelMeta.read(embedder_dir / "meta.json").version, embedder_dir, say)
    return target


def build_tag_prior(s: ToolSettings, out: Path | None, say: Callable[[str], None] = print,
                    emoji_dir: Path | None = None) -> TagPrior:
    """`enrich vocab prior`: the prior for the exported small models, written to ``out`` or the shipped artifact
    of ``s.small_tagger`` (and then shipped into the state dir's export)."""
    emoji = load_emoji(emoji_dir) if emoji_dir is not None else []  # a wrong directory fails before any work
    s, preset = with_small_models(s, say)
    train = training_texts(preset, "train")
    val = training_texts(preset, "val")  # never the evaluated (test) items
    train_vecs, _ = embed_debtags(s, train, say)
    val_vecs, _ = embed_debtags(s, val, say)
    apps, icons = appstream.load_snapshot(), appstream.load_icons()
    app_train = [a for a in apps if a.split == "train" and a.tags]
    app_val = [(a, kind) for a in apps if a.split == "val" and a.tags for kind in appstream.KINDS]
    with in_process_models(s) as (embedder, tagger):

        def embed(prepared: list) -> np.ndarray:
            return np.concatenate([embedder.embed(prepared[i:i + 64]) for i in range(0, len(prepared), 64)])

        icon_items = [prepare_event(a.event("image_only", icons[a.id]), s.model_text_chars) for a in app_train]
        val_items = ([prepare_event(debtags.as_event(it), s.model_text_chars) for it in val]
                     + [prepare_event(a.event(kind, icons[a.id]), s.model_text_chars) for a, kind in app_val])
        say(f"embedding {len(icon_items)} train apps' icons and {len(app_val)} validation app items")

        def new_tags(tags: list[str]) -> VocabSnapshot:
            vocab = TagVocabulary(embedder.embed_texts, embedder.version)
            for t in tags:
                vocab.apply(VocabEntry(tag=t))
            return vocab.snapshot()

        vocabulary = TagVocabulary(embedder.embed_texts, embedder.version)
        for entry in debtags_vocabulary(s):  # the vectors the workers rank candidates by
            vocabulary.apply(entry)
        prior = fit_tag_prior([it.tags for it in train] + [a.tags for a in app_train],
                              np.concatenate([train_vecs, embed(icon_items)]), val_items,
                              [set(it.tags) for it in val] + [set(a.tags) for a, _ in app_val],
                              np.concatenate([val_vecs, embed(val_items[len(val):])]), embedder, tagger,
                              vocabulary.snapshot(), s.candidate_tags or DEFAULT_CANDIDATE_TAGS, say,
                              {"exemplar_sources": {"debtags_train_text": len(train), "appstream_train_icons":
                                                    len(app_train)},
                               "fitted_on_sources": {"debtags_val_text": len(val),
                                                     "appstream_val_three_kinds": len(app_val)}},
                              val_kinds=["debtags_text"] * len(val) + [kind for _, kind in app_val])
        # The open-vocabulary head: validation items with a vocabulary of their own (free text no exemplar
        # carries): the apps with their AppStream keywords, in all three kinds, and (given the package) the
        # validation emoji as image-only items with their subcategories.
        keyword_val = [(a, kind) for a in apps if a.split == "val" and keyword_labels(a) for kind in appstream.KINDS]
        kw_items = [prepare_event(a.event(kind, icons[a.id]), s.model_text_chars) for a, kind in keyword_val]
        sets = [OpenSet("appstream_val_keywords", kw_items, [set(keyword_labels(a)) for a, _ in keyword_val],
                        embed(kw_items), new_tags(sorted({kw for a in apps if a.split != "test"
                                                          for kw in keyword_labels(a)})))]
        if emoji:
            val_emoji = [e for e in emoji if e.split == "val"]
            em_items = [prepare_event(e.event(e.name), s.model_text_chars) for e in val_emoji]
            sets.append(OpenSet("emoji_val_subcategories", em_items, [{e.subcategory} for e in val_emoji],
                                embed(em_items), new_tags(sorted({e.subcategory for e in emoji if e.split != "test"}))))
        prior = fit_open_head(prior, sets, tagger, s.candidate_tags or DEFAULT_CANDIDATE_TAGS, say)
    shipped = preset.tag_priors[0 if s.small_tagger == "packed" else 1]
    target = out or shipped
    prior.save(target)
    artifacts.write_record(target, {"version": prior.version} | prior.info)
    say(f"{prior.version} ({len(train)} exemplars) -> {target}")
    if target == shipped:
        ship_tag_prior(s.models_path, say)
    return prior
