"""The neighbour-vote prior: labelled exemplars and a decision head over the tagger's grades.

A new item's nearest labelled items carry most of its tags (Debian packages come in families
that share their debtags; a platform's new items resemble ones editors already tagged). The
prior keeps those labelled exemplars (unit content vectors and their tags) and, per item:

- **candidates**: the tags its 10 nearest exemplars vote for (similarity-weighted, as a
  fraction of the neighbourhood) join the vocabulary's nearest tags, so the tagger is asked
  about the tags the neighbourhood suggests even when their vectors are far;
- **decision**: a logistic head over the tagger's three grade probabilities, the vote and the
  candidate's cosine gives P(the item carries the tag); grade 2 when it reaches the head's
  threshold (fitted for F1 on validation items), else the tagger's grade capped at 1;
- **open vocabulary**: a tag no exemplar carries (added at run time, a platform's own vocabulary)
  has no vote, so a second head decides it, over the tagger's probabilities and where the tag's
  name stands among the item's new tags (how far its cosine is below the nearest's, which place); it is fitted on
  validation items with vocabularies no exemplar carries (AppStream keywords, emoji subcategories).

Exemplar votes mean something only in the embedder's space that made them, and the head's
weights only for the tagger whose probabilities it was fitted on: a worker checks both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from enrich import artifacts
from enrich.errors import ModelConfigError
from enrich.tagging.vocabulary import VocabSnapshot

DEFAULT_CANDIDATE_TAGS = 8  # candidates graded per item when neither the setting nor a tag prior says otherwise
TAG_PRIOR_FILE = "tag_prior.npz"  # beside the tagger's graphs in a model directory
FEATURES = ("tagger_p0", "tagger_p1", "tagger_p2", "neighbour_vote", "candidate_cosine")
# Not the cosine itself: its level is the vocabulary's (short abstract names sit lower than long concrete
# ones), so a head fitted on one vocabulary misplaces another's; where the tag stands among the item's new
# tags (how far below the nearest, which place) carries over (validation, docs/models.md).
OPEN_FEATURES = ("tagger_p0", "tagger_p1", "tagger_p2", "cosine_below_nearest_new_tag", "one_over_rank_among_new_tags")


@dataclass(frozen=True)
class DecisionHead:
    """Logistic regression over standardised ``FEATURES``; ``threshold`` on its output means grade 2."""

    weights: np.ndarray  # [F]
    bias: float
    mean: np.ndarray  # [F]
    scale: np.ndarray  # [F]
    threshold: float

    def score(self, features: np.ndarray) -> np.ndarray:
        z = ((features - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    @classmethod
    def fit(cls, features: np.ndarray, carried: np.ndarray, l2: float = 1e-3, steps: int = 3000,
            lr: float = 0.5) -> DecisionHead:
        """Full-batch gradient descent on the log loss (a few thousand rows of five features: deterministic
        and instant); the threshold is set afterwards with ``with_threshold``."""
        mean = features.mean(axis=0)
        scale = features.std(axis=0) + 1e-9
        z = (features - mean) / scale
        y = carried.astype(np.float64)
        w, b = np.zeros(z.shape[1]), 0.0
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
            w -= lr * (z.T @ (p - y) / len(y) + l2 * w)
            b -= lr * float((p - y).mean())
        return cls(w.astype(np.float32), float(b), mean.astype(np.float32), scale.astype(np.float32), 0.5)

    @classmethod
    def unfitted(cls, n: int = len(FEATURES)) -> DecisionHead:
        """Scores 0.5 and never reaches its threshold: for exemplars whose head is still to be fitted."""
        return cls(np.zeros(n, np.float32), 0.0, np.zeros(n, np.float32), np.ones(n, np.float32), 1.0)

    def with_threshold(self, threshold: float) -> DecisionHead:
        return DecisionHead(self.weights, self.bias, self.mean, self.scale, float(threshold))


@dataclass(frozen=True)
class TagPrior:
    tags: list[str]  # the exemplars' tag vocabulary
    vectors: np.ndarray  # [N, D] unit rows
    item_tags: list[np.ndarray]  # per exemplar: indexes into ``tags``
    head: DecisionHead
    info: dict = field(default_factory=dict)  # embedder, tagger, fit figures
    k: int = 10
    open_head: DecisionHead | None = None  # over OPEN_FEATURES, for tags no exemplar carries

    @property
    def embedder(self) -> str:
        return str(self.info.get("embedder", ""))

    @property
    def tagger(self) -> str:
        return str(self.info.get("tagger", ""))

    @property
    def version(self) -> str:
        h = hashlib.sha256(self._int8().tobytes())
        h.update("\n".join(self.tags).encode())
        h.update(json.dumps([self.head.weights.tolist(), self.head.bias, self.head.threshold,
                             self.info.get("threshold_without_text"), self.tagger_image_text_chars]).encode())
        if self.open_head is not None:
            o = self.open_head
            h.update(json.dumps([o.weights.tolist(), o.bias, o.mean.tolist(), o.scale.tolist(), o.threshold,
                                 self.info.get("open_threshold_without_text")]).encode())
        return f"tag-prior-{h.hexdigest()[:12]}"

    @property
    def tagger_image_text_chars(self) -> int | None:
        """The tagger reads an item's images only when its text has at most this many characters (None: always).
        Fitted on validation with this prior: beside a long text an icon makes the tagger surer of tags the
        text does not support (on the validation listings F1 0.589 with the icon, 0.605 without it, while a
        name and summary gain from it, 0.528 -> 0.545); the item's vector keeps its image either way."""
        value = self.info.get("tagger_image_text_chars")
        return None if value is None else int(value)

    def tagger_sees_image(self, text: str) -> bool:
        limit = self.tagger_image_text_chars
        return limit is None or len(text) <= limit

    def head_for(self, has_text: bool) -> DecisionHead:
        """The head with the threshold fitted for items like this one: an image alone has votes only from
        icon exemplars and the tagger's reading of an icon, weaker evidence than text gives, so validation
        sets its own (lower) threshold for it where the prior was fitted on such items."""
        without = self.info.get("threshold_without_text")
        return self.head if has_text or without is None else self.head.with_threshold(float(without))

    def open_head_for(self, has_text: bool) -> DecisionHead | None:
        """The open-vocabulary head at the threshold fitted for items like this one (None: the prior has none,
        and a tag no exemplar carries takes the tagger's own grade)."""
        without = self.info.get("open_threshold_without_text")
        if self.open_head is None or has_text or without is None:
            return self.open_head
        return self.open_head.with_threshold(float(without))

    def with_open_head(self, head: DecisionHead, info: dict) -> TagPrior:
        return dataclasses.replace(self, open_head=head, info=self.info | info)

    def check(self, embedder: str, dim: int, tagger: str) -> None:
        if dim != self.vectors.shape[1] or embedder != self.embedder:
            raise ModelConfigError(
                f"tag prior {self.version} holds exemplars embedded by {self.embedder or 'an unknown embedder'} "
                f"({self.vectors.shape[1]}-d), the worker serves {embedder} ({dim}-d): rebuild it with "
                "`enrich vocab prior` after an embedder change, or set ENRICH_TAG_PRIOR=off")
        if tagger != self.tagger:
            raise ModelConfigError(
                f"tag prior {self.version} was fitted on the grades of {self.tagger or 'an unknown tagger'}, "
                f"the worker serves {tagger}: rebuild it with `enrich vocab prior`, or set ENRICH_TAG_PRIOR=off")

    @property
    def fitted_candidates(self) -> int | None:
        """How many candidate tags per item the decision head was fitted on (None: not recorded)."""
        fitted = self.info.get("candidate_tags")
        return None if fitted is None else int(fitted)

    def check_candidates(self, candidate_tags: int) -> None:
        """The decision head was fitted on grades of ``candidate_tags`` candidates per item; another count
        changes what its features mean."""
        fitted = self.fitted_candidates
        if fitted is not None and fitted != candidate_tags:
            raise ModelConfigError(
                f"tag prior {self.version} was fitted with {fitted} candidate tags per item, the worker grades "
                f"{candidate_tags} (ENRICH_CANDIDATE_TAGS): set ENRICH_CANDIDATE_TAGS={fitted}, rebuild it with "
                "`enrich vocab prior` at this setting, or set ENRICH_TAG_PRIOR=off")

    def votes(self, vectors: np.ndarray, tags: Sequence[str], exemplars_themselves: bool = False) -> np.ndarray:
        """[B, len(tags)]: the similarity-weighted share of each item's k nearest exemplars carrying each
        of ``tags`` (0 for a tag no exemplar carries). ``exemplars_themselves``: the items are the exemplars,
        in order, and each must not vote for itself. The one neighbour vote: training and the baselines
        call this too (``top_voted``)."""
        out = np.zeros((len(vectors), len(tags)), np.float32)
        if not len(vectors) or not len(self.vectors) or not len(tags):
            return out
        column = {t: j for j, t in enumerate(tags)}
        to_out = np.array([column.get(t, -1) for t in self.tags])
        sims = vectors @ self.vectors.T
        if exemplars_themselves:
            np.fill_diagonal(sims, -np.inf)
        k = min(self.k, len(self.vectors))
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for i, row in enumerate(near):
            weights = np.clip(sims[i, row], 0.0, None)  # a -inf (the item itself) weighs nothing
            total = float(weights.sum())
            if total <= 0:
                continue
            for j, w in zip(row, weights, strict=True):
                cols = to_out[self.item_tags[j]]
                np.add.at(out[i], cols[cols >= 0], w / total)
        return out

    def top_voted(self, vectors: np.ndarray, top: int, exemplars_themselves: bool = False) -> list[list[str]]:
        """Per item, the ``top`` tags its neighbours vote for most (ties by name), only tags with a vote."""
        votes = self.votes(vectors, self.tags, exemplars_themselves)
        return [[self.tags[j] for j in sorted(np.flatnonzero(row), key=lambda j: (-row[j], self.tags[j]))[:top]]
                for row in votes]

    def _int8(self) -> np.ndarray:
        return np.round(self.vectors * 127).astype(np.int8)

    def save(self, path: Path) -> None:
        lengths = np.array([len(t) for t in self.item_tags], np.int32)
        flat = np.concatenate(self.item_tags).astype(np.int16) if self.item_tags else np.zeros(0, np.int16)
        h = self.head
        o = self.open_head
        open_arrays = {} if o is None else {"open_weights": o.weights, "open_bias": o.bias, "open_mean": o.mean,
                                            "open_scale": o.scale, "open_threshold": o.threshold}
        # int8 unit vectors: cosines within 0.01, half of float16's size
        artifacts.write(path, self.info, vectors=self._int8(), tags=np.array(self.tags), tag_lengths=lengths,
                        tag_ids=flat, weights=h.weights, bias=h.bias, mean=h.mean, scale=h.scale,
                        threshold=h.threshold, k=self.k, **open_arrays)

    @classmethod
    def load(cls, path: Path) -> TagPrior:
        with artifacts.reading(path, "tag-prior", "enrich vocab prior") as z:
            vecs = z["vectors"].astype(np.float32) / 127  # not renormalised: the version stays the saved one's
            ends = np.cumsum(z["tag_lengths"])
            flat = z["tag_ids"].astype(np.int64)
            item_tags = [flat[e - n:e] for e, n in zip(ends, z["tag_lengths"], strict=True)]
            head = _head(z, "")
            open_head = _head(z, "open_") if "open_weights" in z.files else None
            return cls([str(t) for t in z["tags"]], vecs, item_tags, head, artifacts.info_of(z), int(z["k"]),
                       open_head)

    @classmethod
    def from_items(cls, item_tags: Sequence[Sequence[str]], vectors: np.ndarray, head: DecisionHead,
                   info: dict, k: int = 10) -> TagPrior:
        tags = sorted({t for ts in item_tags for t in ts})
        col = {t: j for j, t in enumerate(tags)}
        ids = [np.array([col[t] for t in ts], np.int64) for ts in item_tags]
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return cls(tags, unit.astype(np.float32), ids, head, info, k)


def _head(z: np.lib.npyio.NpzFile, prefix: str) -> DecisionHead:
    return DecisionHead(z[f"{prefix}weights"].astype(np.float32), float(z[f"{prefix}bias"]),
                        z[f"{prefix}mean"].astype(np.float32), z[f"{prefix}scale"].astype(np.float32),
                        float(z[f"{prefix}threshold"]))


@dataclass(frozen=True)
class PriorView:
    """One batch's neighbour votes and tag cosines, columns aligned with the live vocabulary's tags."""

    tags: list[str]
    votes: np.ndarray  # [B, T]
    cosines: np.ndarray  # [B, T]
    known: np.ndarray  # [T] bool: some exemplar carries the tag

    def _columns(self, candidates: Sequence[str]) -> list[int]:
        column = {t: j for j, t in enumerate(self.tags)}
        return [column[t] for t in candidates]

    @cached_property
    def below_nearest_new(self) -> np.ndarray:
        """[B, T]: for a tag no exemplar carries, how far its cosine is below the item's nearest such tag
        (0 for the nearest; 0 for a carried tag, where the feature is unused)."""
        new = ~self.known
        if not new.any():
            return np.zeros_like(self.cosines)
        nearest = np.where(new, self.cosines, -np.inf).max(axis=1, keepdims=True)
        return np.where(new, nearest - self.cosines, 0.0).astype(np.float32)

    def features(self, row: int, probs: np.ndarray, candidates: Sequence[str]) -> np.ndarray:
        cols = self._columns(candidates)
        return features(probs, self.votes[row, cols], self.cosines[row, cols])

    @cached_property
    def rank_among_new(self) -> np.ndarray:
        """[B, T]: 1 / (1 + place) of a tag no exemplar carries among the item's such tags by cosine (1 for the
        nearest, 1/2 for the next, ...); 0 for a carried tag."""
        new = ~self.known
        out = np.zeros_like(self.cosines)
        if not new.any():
            return out
        order = np.argsort(-np.where(new, self.cosines, -np.inf), axis=1, kind="stable")
        place = np.empty_like(order)
        np.put_along_axis(place, order, np.arange(order.shape[1])[None, :].repeat(len(order), 0), axis=1)
        return np.where(new, 1.0 / (1.0 + place), 0.0).astype(np.float32)

    def open_features(self, row: int, probs: np.ndarray, candidates: Sequence[str]) -> np.ndarray:
        cols = self._columns(candidates)
        return open_features(probs, self.below_nearest_new[row, cols], self.rank_among_new[row, cols])

    def decide(self, head: DecisionHead, row: int, probs: np.ndarray, candidates: Sequence[str],
               open_head: DecisionHead | None = None) -> tuple[np.ndarray, np.ndarray]:
        cols = self._columns(candidates)
        opened = None if open_head is None else (open_head, self.open_features(row, probs, candidates))
        return decide(head, probs, features(probs, self.votes[row, cols], self.cosines[row, cols]), self.known[cols],
                      opened)


def with_votes(prior: TagPrior, vocab: VocabSnapshot, vectors: np.ndarray, top_m: int,
               candidates: Sequence[Sequence[str]]) -> tuple[list[list[str]], PriorView]:
    """The vocabulary's candidates joined by the tags the neighbours vote for (top ``top_m`` with a vote),
    and the batch's view for the decision. Only live vocabulary tags: a retired tag is never proposed."""
    carried = set(prior.tags)
    view = PriorView(vocab.tags, prior.votes(vectors, vocab.tags), vocab.similarities(vectors),
                     np.array([t in carried for t in vocab.tags], bool))
    voted = vocab.candidates(vectors, top_m, view.votes)
    column = {t: j for j, t in enumerate(vocab.tags)}
    merged = [list(dict.fromkeys([*c, *(t for t in v if view.votes[i, column[t]] > 0)]))
              for i, (c, v) in enumerate(zip(candidates, voted, strict=True))]
    return merged, view


def features(probs: np.ndarray, votes: np.ndarray, cosines: np.ndarray) -> np.ndarray:
    """[C, len(FEATURES)] for one item's C candidates."""
    return np.column_stack([probs[:, 0], probs[:, 1], probs[:, 2], votes, cosines]).astype(np.float32)


def open_features(probs: np.ndarray, below_nearest: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """[C, len(OPEN_FEATURES)] for one item's C candidates."""
    return np.column_stack([probs[:, 0], probs[:, 1], probs[:, 2], below_nearest, rank]).astype(np.float32)


def _graded(head: DecisionHead, probs: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    own = probs.argmax(axis=1)
    carried = head.score(feats)
    strong = carried >= head.threshold
    grades = np.where(strong, 2, np.minimum(own, 1))
    return grades, np.where(strong, carried, np.where(grades == 1, probs[:, 1] + probs[:, 2], probs[:, 0]))


def decide(head: DecisionHead, probs: np.ndarray, feats: np.ndarray, known: np.ndarray | None = None,
           opened: tuple[DecisionHead, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grades and their probabilities for one item's candidates: grade 2 with P(carried) where the head
    says so, else the tagger's grade capped at 1 (with the tagger's P(grade >= 1)) or 0 (with its P(0)).

    ``known``: per candidate, whether any exemplar carries it. For a tag none carries (a tag added at
    run time, another vocabulary) the missing vote is no evidence against it, and the head, fitted where
    nearly every carried tag had votes, would cap it at grade 1 for ever: ``opened`` (the open-vocabulary
    head and its features) decides it the same way, and without one the tagger's own grade does.
    """
    if not len(probs):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    grades, prob = _graded(head, probs, feats)
    if known is not None:
        own = probs.argmax(axis=1)
        new_grades, new_prob = (own, probs[np.arange(len(own)), own]) if opened is None else _graded(
            opened[0], probs, opened[1])
        grades = np.where(known, grades, new_grades)
        prob = np.where(known, prob, new_prob)
    return grades.astype(np.int64), prob.astype(np.float32)


def candidate_count(setting: int | None, prior: TagPrior | None) -> int:
    """Candidates graded per item: ``ENRICH_CANDIDATE_TAGS`` when set, else the count the shipped tag prior was
    fitted with, so a bundle and a worker left at the default always agree; else ``DEFAULT_CANDIDATE_TAGS``."""
    if setting is not None:
        return setting
    fitted = prior.fitted_candidates if prior is not None else None
    return fitted if fitted is not None else DEFAULT_CANDIDATE_TAGS
