"""Build the neighbour-vote tag prior from the debtags snapshot and the exported small models.

Exemplars: the train split (vectors from the exported embedder). The decision head is fitted on
the validation split exactly as a worker would see it: the same vocabulary vectors (prototypes),
the same candidates (vocabulary top-M joined by the neighbours' votes) and the exported tagger's
grade probabilities; its threshold is the one with the best micro F1 there. The test split is
never read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import msgpack
import numpy as np

from enrich.debtags import DebtagsItem, as_event
from enrich.models import Embedder, Tagger
from enrich.preprocess import prepare
from enrich.schemas import decode_item
from enrich.tag_prior import FEATURES, DecisionHead, TagPrior, with_votes
from enrich.tags import VocabSnapshot

ARTIFACTS = Path(__file__).parent / "artifacts"
DEFAULT_TAG_PRIOR = ARTIFACTS / "tag-prior-debtags-v1.npz"
THRESHOLDS = np.round(np.arange(0.1, 0.81, 0.025), 3)


def micro_f1(predicted: Sequence[set[str]], gold: Sequence[set[str]]) -> float:
    tp = sum(len(p & g) for p, g in zip(predicted, gold, strict=True))
    n_pred, n_gold = sum(map(len, predicted)), sum(map(len, gold))
    return 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0


def fit_tag_prior(train: Sequence[DebtagsItem], train_vectors: np.ndarray, val: Sequence[DebtagsItem],
                  val_vectors: np.ndarray, embedder: Embedder, tagger: Tagger, vocab: VocabSnapshot,
                  candidate_tags: int, max_text_chars: int, say: Callable[[str], None] = print) -> TagPrior:
    info = {"embedder": embedder.version, "tagger": tagger.version, "exemplars": len(train),
            "fitted_on": len(val), "candidate_tags": candidate_tags}
    draft = TagPrior.from_items([it.tags for it in train], train_vectors, DecisionHead.unfitted(), info)
    base = vocab.candidates(val_vectors, candidate_tags)
    candidates, view = with_votes(draft, vocab, val_vectors, candidate_tags, base)
    # what a worker decodes from the item's event
    prepared = [prepare(decode_item(msgpack.packb(as_event(it), use_bin_type=True)), max_text_chars)
                for it in val]
    say(f"grading {sum(map(len, candidates))} candidates of {len(val)} validation items with {tagger.version}")
    scores = tagger.score(prepared, candidates)
    rows = [view.features(i, sc.probs, sc.tags) for i, sc in enumerate(scores)]
    gold = [set(it.tags) for it in val]
    carried = np.concatenate([[t in g for t in sc.tags] for sc, g in zip(scores, gold, strict=True)])
    head = DecisionHead.fit(np.concatenate(rows), carried)
    per_item = [head.score(r) for r in rows]

    def f1_at(threshold: float) -> float:
        return micro_f1([{t for t, p in zip(sc.tags, s, strict=True) if p >= threshold}
                         for sc, s in zip(scores, per_item, strict=True)], gold)

    best = max(THRESHOLDS, key=f1_at)
    # The votes alone, thresholded the same way: what the tagger adds is measured against this.
    votes = [r[:, 3] for r in rows]

    def vote_f1_at(threshold: float) -> float:
        return micro_f1([{t for t, v in zip(sc.tags, vs, strict=True) if v >= threshold}
                         for sc, vs in zip(scores, votes, strict=True)], gold)

    vote_best = max(THRESHOLDS, key=vote_f1_at)
    info |= {"votes_alone_threshold": float(vote_best), "votes_alone_validation_f1": round(vote_f1_at(vote_best), 4)}
    info |= {"threshold": float(best), "validation_f1": round(f1_at(best), 4),
             "validation_candidate_recall": round(float(carried.sum() / sum(map(len, gold))), 4),
             "weights": {"bias": round(head.bias, 3)} | {
                 name: round(float(w), 3) for name, w in zip(FEATURES, head.weights, strict=True)}}
    say(f"decision head: threshold {best}, validation F1 {info['validation_f1']} (votes alone "
        f"{info['votes_alone_validation_f1']} at {vote_best}), weights {info['weights']}")
    return TagPrior(draft.tags, draft.vectors, draft.item_tags, head.with_threshold(best), info)
