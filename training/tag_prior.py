"""Build the neighbour-vote tag prior from the debtags and AppStream snapshots and the exported small models.

Exemplars: the debtags train split (text vectors from the exported embedder) and the tagged AppStream train
apps as their icon alone (an icon's vector has neighbours only among icons: without them an image-only item
gets no votes). The decision head is fitted on the validation splits exactly as a worker would see them
(the debtags packages as text, the AppStream apps in all three kinds): the same vocabulary vectors
(prototypes), the same candidates (vocabulary top-M joined by the neighbours' votes) and the exported
tagger's grade probabilities; its threshold is the one with the best micro F1 there. The test splits are
never read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from enrich.models.protocol import EmbedderModel, TaggerModel
from enrich.preprocess import PreparedItem
from enrich.tagging.prior import FEATURES, OPEN_FEATURES, DecisionHead, PriorView, TagPrior, with_votes
from enrich.tagging.vocabulary import VocabSnapshot

THRESHOLDS = np.round(np.arange(0.1, 0.81, 0.025), 3)


def micro_f1(predicted: Sequence[set[str]], gold: Sequence[set[str]]) -> float:
    tp = sum(len(p & g) for p, g in zip(predicted, gold, strict=True))
    n_pred, n_gold = sum(map(len, predicted)), sum(map(len, gold))
    return 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0


IMAGE_TEXT_CHARS = (0, 50, 100, 200, 300, 400, 600, 800, 1200)  # None beyond: the tagger always reads the image


def image_text_chars(val: Sequence[PreparedItem], gold: Sequence[set[str]], scores: Sequence, view: PriorView,
                     head: DecisionHead, tagger: TaggerModel, with_text: Sequence[int],
                     say: Callable[[str], None] = print, kinds: Sequence[str] | None = None) -> dict:
    """``tagger_image_text_chars``: the longest text beside which the tagger still reads the image, chosen on
    the validation items with text and images (each item graded by the tagger with its image up to the limit,
    without it beyond; the vectors keep the image) as the limit whose strong tags score the best micro F1
    among the limits where reading the image lowers no kind's F1 (``kinds``: each item's kind of content, for
    instance a long listing or a name and summary), against the tagger not reading it. The image must not
    make any kind's tags worse, and on validation is the only place that can be checked before serving."""
    both = [i for i in with_text if val[i].images]
    bare = [val[i].without_images() for i in both]
    cands = [scores[i].tags for i in both]
    blind = [sc for k in range(0, len(bare), 32) for sc in tagger.score(bare[k:k + 32], cands[k:k + 32])]

    def strong(i: int, sc) -> set[str]:  # noqa: ANN001 - TagScores
        grades, _ = view.decide(head, i, sc.probs, sc.tags)
        return {t for t, g in zip(sc.tags, grades, strict=True) if g == 2}

    seeing = {i: strong(i, scores[i]) for i in both}
    not_seeing = {i: strong(i, sc) for i, sc in zip(both, blind, strict=True)}
    groups: dict[str, list[int]] = {}
    for i in both:
        groups.setdefault(kinds[i] if kinds is not None else "all", []).append(i)

    def f1_with(limit: int | None, keep: Sequence[int] = both) -> float:
        return micro_f1([seeing[i] if limit is None or len(val[i].text) <= limit else not_seeing[i] for i in keep],
                        [gold[i] for i in keep])

    limits = (*IMAGE_TEXT_CHARS, None)
    f1 = {limit: f1_with(limit) for limit in limits}
    by_kind = {kind: {limit: f1_with(limit, keep) for limit in limits} for kind, keep in groups.items()}
    blind_f1 = {kind: micro_f1([not_seeing[i] for i in keep], [gold[i] for i in keep])
                for kind, keep in groups.items()}
    harmless = [limit for limit in limits if all(by_kind[k][limit] >= blind_f1[k] for k in groups)]
    # 0 reads no image beside text, so it is always among them; ties: read the image more
    chosen = max(harmless, key=lambda limit: (f1[limit], limit is None, limit or 0))
    table = {str(limit): round(v, 4) for limit, v in f1.items()}
    kind_table = {kind: {"not_reading": round(blind_f1[kind], 4)} | {str(limit): round(v, 4) for limit, v in t.items()}
                  for kind, t in by_kind.items()}
    say(f"the tagger reads the image beside texts of at most {chosen} chars (validation F1 by limit: {table}; "
        f"by kind: {kind_table}; limits that lower no kind: {[str(limit) for limit in harmless]})")
    return {"tagger_image_text_chars": chosen, "tagger_image_text_chars_validation_f1": table,
            "tagger_image_text_chars_validation_f1_by_kind": kind_table}


def fit_tag_prior(exemplar_tags: Sequence[Sequence[str]], exemplar_vectors: np.ndarray,
                  val: Sequence[PreparedItem], val_gold: Sequence[set[str]], val_vectors: np.ndarray,
                  embedder: EmbedderModel, tagger: TaggerModel, vocab: VocabSnapshot, candidate_tags: int,
                  say: Callable[[str], None] = print, sources: dict | None = None,
                  val_kinds: Sequence[str] | None = None) -> TagPrior:
    """The prior over ``exemplar_*``, its head fitted on the validation items ``val`` (prepared as a worker
    prepares them) with their gold tags, content vectors and (``val_kinds``) kinds of content."""
    info = {"embedder": embedder.version, "tagger": tagger.version, "exemplars": len(exemplar_tags),
            "fitted_on": len(val), "candidate_tags": candidate_tags} | (sources or {})
    draft = TagPrior.from_items(exemplar_tags, exemplar_vectors, DecisionHead.unfitted(), info)
    base = vocab.candidates(val_vectors, candidate_tags)
    candidates, view = with_votes(draft, vocab, val_vectors, candidate_tags, base)
    say(f"grading {sum(map(len, candidates))} candidates of {len(val)} validation items with {tagger.version}")
    scores = [sc for i in range(0, len(val), 32) for sc in tagger.score(val[i:i + 32], candidates[i:i + 32])]
    rows = [view.features(i, sc.probs, sc.tags) for i, sc in enumerate(scores)]
    gold = list(val_gold)
    carried = np.concatenate([[t in g for t in sc.tags] for sc, g in zip(scores, gold, strict=True)])
    head = DecisionHead.fit(np.concatenate(rows), carried)
    per_item = [head.score(r) for r in rows]

    def f1_at(threshold: float, rows_of: Sequence[int] | None = None) -> float:
        keep = range(len(scores)) if rows_of is None else rows_of
        return micro_f1([{t for t, p in zip(scores[i].tags, per_item[i], strict=True) if p >= threshold}
                         for i in keep], [gold[i] for i in keep])

    with_text = [i for i, it in enumerate(val) if it.text]
    without_text = [i for i, it in enumerate(val) if not it.text]
    best = max(THRESHOLDS, key=lambda t: f1_at(t, with_text))
    if tagger.image_pixels and any(val[i].images for i in with_text):  # a tagger that can read images
        info |= image_text_chars(val, gold, scores, view, head.with_threshold(best), tagger, with_text, say,
                                 val_kinds)
    if without_text:  # an image alone: its own threshold (see TagPrior.head_for)
        alone = max(THRESHOLDS, key=lambda t: f1_at(t, without_text))
        info |= {"threshold_without_text": float(alone),
                 "validation_f1_without_text": round(f1_at(alone, without_text), 4),
                 "validation_f1_without_text_at_the_text_threshold": round(f1_at(best, without_text), 4)}
    # The votes alone, thresholded the same way: what the tagger adds is measured against this.
    votes = [r[:, 3] for r in rows]

    def vote_f1_at(threshold: float) -> float:
        return micro_f1([{t for t, v in zip(sc.tags, vs, strict=True) if v >= threshold}
                         for sc, vs in zip(scores, votes, strict=True)], gold)

    vote_best = max(THRESHOLDS, key=vote_f1_at)
    info |= {"votes_alone_threshold": float(vote_best), "votes_alone_validation_f1": round(vote_f1_at(vote_best), 4)}
    info |= {"threshold": float(best), "validation_f1": round(f1_at(best, with_text), 4),
             "validation_candidate_recall": round(float(carried.sum() / sum(map(len, gold))), 4),
             "weights": {"bias": round(head.bias, 3)} | {
                 name: round(float(w), 3) for name, w in zip(FEATURES, head.weights, strict=True)}}
    say(f"decision head: threshold {best}, validation F1 {info['validation_f1']} with text (votes alone "
        f"{info['votes_alone_validation_f1']} at {vote_best}), weights {info['weights']}")
    if without_text:
        say(f"items without text: threshold {info['threshold_without_text']}, validation F1 "
            f"{info['validation_f1_without_text']} ({info['validation_f1_without_text_at_the_text_threshold']} at "
            f"the text threshold)")
    return TagPrior(draft.tags, draft.vectors, draft.item_tags, head.with_threshold(best), info)


@dataclass(frozen=True)
class OpenSet:
    """Validation items with a vocabulary of their own that no exemplar carries (their tags' vectors are their
    names, as a new tag's are), and each item's gold tags in it."""

    name: str
    items: Sequence[PreparedItem]
    gold: Sequence[set[str]]
    vectors: np.ndarray
    vocab: VocabSnapshot


def fit_open_head(prior: TagPrior, sets: Sequence[OpenSet], tagger: TaggerModel, candidate_tags: int,
                  say: Callable[[str], None] = print) -> TagPrior:
    """``prior`` with its open-vocabulary head, fitted on the validation ``sets`` as a worker would grade them
    (each item's candidates: its vocabulary's top-M; the exported tagger's probabilities); thresholds for
    the best micro F1 with and without text, over all sets."""
    rows, tags, probs, gold, has_text, of_set = [], [], [], [], [], []
    for k, st in enumerate(sets):
        carried_by_exemplars = set(prior.tags) & set(st.vocab.tags)
        if carried_by_exemplars:
            raise ValueError(f"{st.name}: the open head's vocabulary must be new to the exemplars: "
                             f"{sorted(carried_by_exemplars)[:5]}")
        sims = st.vocab.similarities(st.vectors)
        view = PriorView(st.vocab.tags, np.zeros_like(sims), sims, np.zeros(len(st.vocab.tags), bool))
        candidates = st.vocab.candidates(st.vectors, candidate_tags)
        say(f"open vocabulary {st.name}: grading {sum(map(len, candidates))} candidates of {len(st.items)} "
            f"validation items ({len(st.vocab.tags)} tags no exemplar carries)")
        scores = [sc for i in range(0, len(st.items), 32)
                  for sc in tagger.score(st.items[i:i + 32], candidates[i:i + 32])]
        for i, sc in enumerate(scores):
            rows.append(view.open_features(i, sc.probs, sc.tags))
            tags.append(sc.tags)
            probs.append(sc.probs)
        gold += list(st.gold)
        has_text += [bool(it.text) for it in st.items]
        of_set += [k] * len(st.items)
    carried = np.concatenate([[t in g for t in ts] for ts, g in zip(tags, gold, strict=True)])
    head = DecisionHead.fit(np.concatenate(rows), carried)
    per_item = [head.score(r) for r in rows]

    def f1_at(threshold: float | None, keep: Sequence[int]) -> float:
        """``None``: the tagger's own grade 2, what a tag no exemplar carries got before this head."""
        return micro_f1([{t for t, p, q in zip(tags[i], per_item[i], probs[i], strict=True)
                          if (q.argmax() == 2 if threshold is None else p >= threshold)} for i in keep],
                        [gold[i] for i in keep])

    info: dict = {"open_fitted_on": {st.name: len(st.items) for st in sets}}
    table: dict = {}
    for name, text in (("with_text", True), ("without_text", False)):
        keep = [i for i, t in enumerate(has_text) if t == text]
        if not keep:
            continue
        best = max(THRESHOLDS, key=lambda t: f1_at(t, keep))  # noqa: B023 - used at once
        info[f"open_threshold_{name}"] = float(best)
        for k, st in enumerate(sets):
            part = [i for i in keep if of_set[i] == k]
            if part:
                table[f"{st.name} {name}"] = {"head": round(f1_at(best, part), 4),
                                              "tagger_alone": round(f1_at(None, part), 4)}
    info |= {"open_validation_f1": table, "open_weights": {"bias": round(head.bias, 3)} | {
        n: round(float(w), 3) for n, w in zip(OPEN_FEATURES, head.weights, strict=True)}}
    threshold = info.get("open_threshold_with_text", info.get("open_threshold_without_text", 0.5))
    say(f"open-vocabulary head: validation F1 {table} (tagger alone: its own grade 2), weights "
        f"{info['open_weights']}")
    return prior.with_open_head(head.with_threshold(threshold), info)
