"""The neighbour-vote tag prior: votes, candidates, the decision head, the artifact and the pipeline."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from corpora import samples
from enrich.assembly import make_backend, make_pipeline
from enrich.errors import ModelConfigError
from enrich.pipeline import Enriched, RawEvent, SourceRef
from enrich.tagging.prior import DEFAULT_CANDIDATE_TAGS, DecisionHead, TagPrior, candidate_count, decide, with_votes
from enrich.tagging.vocabulary import VocabSnapshot


def _unit(rows) -> np.ndarray:
    v = np.asarray(rows, np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _prior(k: int = 2, head: DecisionHead | None = None, info: dict | None = None) -> TagPrior:
    vecs = _unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]])
    tags = [["audio", "sound"], ["audio"], ["games"], ["mail"]]
    p = TagPrior.from_items(tags, vecs, head or DecisionHead.unfitted(), info or {"embedder": "e", "tagger": "t"})
    return TagPrior(p.tags, p.vectors, p.item_tags, p.head, p.info, k=k)


def test_votes_are_similarity_weighted_shares_of_the_k_nearest_exemplars():
    prior = _prior(k=2)
    q = _unit([[1, 0.05, 0]])
    votes = prior.votes(q, ["audio", "sound", "games", "mail", "unknown"])
    s = q @ prior.vectors.T
    w0, w1 = s[0, 0], s[0, 1]  # the two nearest exemplars
    np.testing.assert_allclose(votes[0], [1.0, w0 / (w0 + w1), 0, 0, 0], rtol=1e-5)


def test_neighbour_votes_add_candidates_from_the_live_vocabulary_only():
    prior = _prior(k=2)
    # The vocabulary's vectors point elsewhere: by cosine alone "games" is the item's candidate.
    vocab = VocabSnapshot(["audio", "games", "mail"], _unit([[0, 0, 1], [1, 0, 0], [0, 1, 0]]))
    q = _unit([[1, 0.05, 0]])
    base = vocab.candidates(q, 1)
    assert base == [["games"]]
    merged, view = with_votes(prior, vocab, q, 1, base)
    assert merged == [["games", "audio"]]  # "sound" is voted for but retired from the vocabulary
    feats = view.features(0, np.full((2, 3), 1 / 3, np.float32), merged[0])
    np.testing.assert_allclose(feats[:, 3], [0.0, 1.0], atol=1e-6)  # the votes
    np.testing.assert_allclose(feats[:, 4], (q @ vocab.matrix.T)[0, [1, 0]], atol=1e-6)  # the cosines


def test_the_head_learns_which_feature_carries_the_tag_and_decides_grades():
    rng = np.random.default_rng(0)
    n = 2000
    probs = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    votes = rng.uniform(0, 1, n).astype(np.float32)
    cos = rng.uniform(0, 1, n).astype(np.float32)
    carried = votes + rng.normal(0, 0.1, n) > 0.6  # only the vote matters
    feats = np.column_stack([probs, votes, cos])
    head = DecisionHead.fit(feats, carried).with_threshold(0.5)
    assert head.weights[3] > 5 * np.abs(np.delete(head.weights, 3)).max()
    assert ((head.score(feats) >= 0.5) == carried).mean() > 0.9
    p = np.array([[0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]], np.float32)
    grades, prob = decide(head, p, np.column_stack([p, [0.0, 1.0, 0.0], [0.5, 0.5, 0.5]]))
    # the tagger's 2 without neighbour support is capped at 1; the vote makes the second a 2
    assert grades.tolist() == [1, 2, 0]
    np.testing.assert_allclose(prob[[0, 2]], [0.9, 0.9], atol=1e-6)
    assert prob[1] >= 0.5


def test_a_tag_no_exemplar_carries_takes_the_taggers_own_grade():
    """An open vocabulary: the head caps an unvoted 2 at 1, but only for tags the exemplars know."""
    prior = _prior(head=DecisionHead(np.array([0, 0, 0, 10.0, 0]), -5.0, np.zeros(5), np.ones(5), 0.5))
    vocab = VocabSnapshot(["audio", "brand-new"], _unit([[1, 0, 0], [1, 0.1, 0]]))
    q = _unit([[1, 0, 0.01]])
    merged, view = with_votes(prior, vocab, q, 2, vocab.candidates(q, 2))
    assert set(merged[0]) == {"audio", "brand-new"}
    probs = np.array([[0.05, 0.05, 0.9]] * len(merged[0]), np.float32)
    grades, prob = view.decide(prior.head, 0, probs, merged[0])
    by_tag = dict(zip(merged[0], grades.tolist(), strict=True))
    assert view.known.tolist() == [True, False]
    assert by_tag["brand-new"] == 2  # the tagger's own grade: no exemplar could have voted for it
    assert by_tag["audio"] == (2 if view.votes[0, 0] > 0.5 else 1)
    np.testing.assert_allclose(prob[merged[0].index("brand-new")], 0.9, atol=1e-6)


def test_the_open_head_decides_tags_no_exemplar_carries_by_how_near_their_names_are():
    """A platform's own vocabulary: the tagger is unsure (0.4 for grade 2 everywhere); the open head makes
    the new tag nearest the item strong, leaves a farther one weak, and never touches a carried tag."""
    prior = _prior(head=DecisionHead(np.array([0, 0, 0, 10.0, 0]), -5.0, np.zeros(5), np.ones(5), 0.5))
    # strong when the name is the item's nearest new tag (0 below it), whatever the tagger says
    nearest_only = DecisionHead(np.array([0, 0, 0, -40.0, 0], np.float32), 2.0, np.zeros(5, np.float32),
                                np.ones(5, np.float32), 0.5)
    prior = prior.with_open_head(nearest_only, {"open_threshold_without_text": 0.9})
    vocab = VocabSnapshot(["audio", "cat", "dog"], _unit([[1, 0, 0], [0.9, 0.3, 0], [0.6, 0.8, 0]]))
    q = _unit([[1, 0.2, 0]])
    merged, view = with_votes(prior, vocab, q, 3, vocab.candidates(q, 3))
    below = dict(zip(vocab.tags, view.below_nearest_new[0].tolist(), strict=True))
    assert below["audio"] == 0 and below["cat"] == 0 and below["dog"] > 0.1
    rank = dict(zip(vocab.tags, view.rank_among_new[0].tolist(), strict=True))
    assert rank == {"audio": 0.0, "cat": 1.0, "dog": 0.5}  # "audio" is carried: not ranked among the new
    probs = np.array([[0.3, 0.3, 0.4]] * len(merged[0]), np.float32)
    grades, prob = view.decide(prior.head, 0, probs, merged[0], prior.open_head_for(True))
    by_tag = dict(zip(merged[0], grades.tolist(), strict=True))
    assert by_tag["cat"] == 2 and by_tag["dog"] == 1  # the tagger's own 2 is capped like a carried tag's
    assert by_tag["audio"] == (2 if view.votes[0, 0] > 0.5 else 1)
    assert prob[merged[0].index("cat")] > 0.85
    # Items without text take the open head's own threshold.
    assert prior.open_head_for(False).threshold == 0.9 and prior.open_head_for(True).threshold == 0.5
    assert _prior().open_head_for(True) is None


def test_the_open_head_round_trips_and_changes_the_version(tmp_path):
    prior = _prior(head=DecisionHead.unfitted().with_threshold(0.3))
    opened = prior.with_open_head(DecisionHead.unfitted(5).with_threshold(0.4), {"open_threshold_without_text": 0.2})
    assert opened.version != prior.version
    opened.save(tmp_path / "p.npz")
    loaded = TagPrior.load(tmp_path / "p.npz")
    assert loaded.version == opened.version and loaded.open_head is not None
    assert loaded.open_head.threshold == 0.4 and loaded.open_head_for(False).threshold == 0.2
    prior.save(tmp_path / "plain.npz")
    assert TagPrior.load(tmp_path / "plain.npz").open_head is None


def test_the_artifact_round_trips_and_refuses_other_models(tmp_path):
    prior = _prior(head=DecisionHead.unfitted().with_threshold(0.3))
    prior.save(tmp_path / "p.npz")
    loaded = TagPrior.load(tmp_path / "p.npz")
    assert loaded.version == prior.version and loaded.version.startswith("tag-prior-")
    assert loaded.tags == prior.tags and [t.tolist() for t in loaded.item_tags] == [t.tolist() for t in prior.item_tags]
    assert np.abs(loaded.vectors - prior.vectors).max() < 0.01 and loaded.head.threshold == 0.3 and loaded.k == 2
    loaded.check("e", 3, "t")
    with pytest.raises(ModelConfigError, match="rebuild it"):
        loaded.check("other-embedder", 3, "t")
    with pytest.raises(ModelConfigError, match="fitted on the grades of t"):
        loaded.check("e", 3, "other-tagger")
    with pytest.raises(ModelConfigError, match="enrich vocab prior"):
        TagPrior.load(tmp_path / "missing.npz")


def test_the_pipeline_grades_neighbour_voted_tags_and_stamps_the_prior(model_settings, tmp_path):
    base = make_pipeline(model_settings, make_backend(model_settings))
    items = samples.sample_items(6)
    events = [RawEvent(None, msgpack.packb(i), SourceRef("items.new", 0, n)) for n, i in enumerate(items)]
    for e in samples.vocab_entries():
        base.vocabulary.apply(e)
    plain = base.run(events)
    vecs = np.stack([np.frombuffer(o.record.embedding, np.float32) for o in plain])
    vocab_tags = [e.tag for e in samples.vocab_entries()]
    # Each item's exemplar is itself, carrying a tag its cosine candidates never offer.
    far = [[t for t in vocab_tags if t not in {g.tag for g in o.record.tags}][-1] for o in plain]
    always = DecisionHead(np.array([0, 0, 0, 10, 0], np.float32), -5.0, np.zeros(5, np.float32),
                          np.ones(5, np.float32), 0.5)  # grade 2 exactly when the vote is above one half
    # One more exemplar, never anyone's nearest, carries every tag: the prior knows them all, so the
    # head decides for every candidate (a tag no exemplar carries takes the tagger's own grade).
    away = -vecs.mean(axis=0, keepdims=True)
    prior = TagPrior.from_items([[t] for t in far] + [vocab_tags], np.concatenate([vecs, away]), always,
                                {"embedder": base.embedder.version, "tagger": base.tagger.version})
    prior = TagPrior(prior.tags, prior.vectors, prior.item_tags, prior.head, prior.info, k=1)
    prior.save(tmp_path / "prior.npz")
    p = make_pipeline(model_settings.updated(**{"tag_prior": str(tmp_path / "prior.npz"),
                                                        "candidate_tags": 2}), make_backend(model_settings))
    for e in samples.vocab_entries():
        p.vocabulary.apply(e)
    out = p.run(events)
    assert all(isinstance(o, Enriched) for o in out)
    for o, tag in zip(out, far, strict=True):
        strong = {g.tag for g in o.record.tags if g.grade == 2}
        assert strong == {tag}, (o.record.item_id, o.record.tags)
        assert o.record.versions.tag_prior == TagPrior.load(tmp_path / "prior.npz").version
        assert {e.tag for e in o.tag_edges} == {g.tag for g in o.record.tags}
    assert plain[0].record.versions.tag_prior == ""
    off = make_pipeline(model_settings.updated(tag_prior="off"), make_backend(model_settings))
    assert off.tag_prior is None
    bad = TagPrior(prior.tags, prior.vectors, prior.item_tags, prior.head, {"embedder": "x", "tagger": "y"})
    bad.save(tmp_path / "bad.npz")
    with pytest.raises(ModelConfigError, match="ENRICH_TAG_PRIOR=off"):
        make_pipeline(model_settings.updated(**{"tag_prior": str(tmp_path / "bad.npz")}),
                      make_backend(model_settings))


def test_the_export_ships_the_prior_only_beside_the_models_it_was_built_for(model_settings, tmp_path, monkeypatch):
    import shutil

    import triton_models.export_small as builder
    from enrich.models.meta import ModelMeta
    from enrich.tagging.prior import TAG_PRIOR_FILE
    from triton_models.export_small import ship_tag_prior

    models = tmp_path / "models"
    for role in ("embedder", "tagger"):
        (models / role).mkdir(parents=True)
        shutil.copy(model_settings.models_path / role / "meta.json", models / role / "meta.json")
    target = models / "tagger" / TAG_PRIOR_FILE
    said: list[str] = []
    ship_tag_prior(models, said.append)  # the shipped debtags prior: built for the small models, not these
    assert not target.exists()
    versions = {role: ModelMeta.read(models / role / "meta.json").version for role in ("embedder", "tagger")}
    mine = _prior(info={"embedder": versions["embedder"], "tagger": versions["tagger"]})
    mine.save(tmp_path / "mine.npz")
    monkeypatch.setattr(builder, "shipped_tag_priors", lambda: [tmp_path / "mine.npz"])
    ship_tag_prior(models, said.append)
    assert TagPrior.load(target).version == mine.version
    other = _prior(info={"embedder": versions["embedder"], "tagger": "another-tagger"})
    other.save(tmp_path / "mine.npz")
    ship_tag_prior(models, said.append)
    assert not target.exists() and "not shipping" in said[-1]


def test_a_prior_fitted_with_another_candidate_count_is_refused_with_the_fix(small_model_settings):
    prior = TagPrior.load(small_model_settings.tag_prior_file())
    fitted = prior.info["candidate_tags"]
    prior.check_candidates(fitted)
    with pytest.raises(ModelConfigError, match=f"set ENRICH_CANDIDATE_TAGS={fitted}"):
        make_pipeline(small_model_settings.updated(candidate_tags=fitted * 4),
                      make_backend(small_model_settings))


def test_the_candidate_count_left_unset_is_the_shipped_priors(small_model_settings):
    prior = TagPrior.load(small_model_settings.tag_prior_file())
    assert small_model_settings.candidate_tags is None
    assert candidate_count(None, prior) == prior.info["candidate_tags"] == small_model_settings.candidate_count()
    assert candidate_count(None, None) == DEFAULT_CANDIDATE_TAGS and candidate_count(3, prior) == 3
    pipeline = make_pipeline(small_model_settings, make_backend(small_model_settings))
    assert pipeline.config.candidate_tags == prior.info["candidate_tags"]
    off = small_model_settings.updated(tag_prior="off")
    assert off.candidate_count() == DEFAULT_CANDIDATE_TAGS


def test_items_without_text_use_the_threshold_validation_fitted_for_them():
    head = DecisionHead.unfitted().with_threshold(0.5)
    prior = _prior(head=head, info={"embedder": "e", "tagger": "t", "threshold_without_text": 0.2})
    assert prior.head_for(True).threshold == 0.5 and prior.head_for(False).threshold == 0.2
    plain = _prior(head=head)
    assert plain.head_for(False).threshold == 0.5  # a prior fitted on text only: one threshold
    assert prior.version != _prior(head=head, info={"embedder": "e", "tagger": "t"}).version


def test_the_tagger_reads_the_image_only_beside_texts_as_short_as_validation_chose(model_settings, tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buf, "PNG")
    png = buf.getvalue()

    def event(n: int, title: str, text: str) -> RawEvent:
        item = {"schema": 1, "id": f"i{n}", "kind": "image_post", "title": title, "text": text, "images": [png],
                "created_at": 1_700_000_000_000}
        return RawEvent(None, msgpack.packb(item), SourceRef("items.new", 0, n))

    events = [event(0, "", "a long description of what the program does, well past the limit"),
              event(1, "", "short"), event(2, "", "")]
    base = make_pipeline(model_settings, make_backend(model_settings))
    info = {"embedder": base.embedder.version, "tagger": base.tagger.version, "tagger_image_text_chars": 10}
    prior = TagPrior.from_items([["a"]], _unit([[1] + [0] * (base.embedder.meta.hidden_size - 1)]),
                                DecisionHead.unfitted(), info)
    assert prior.tagger_image_text_chars == 10 and prior.tagger_sees_image("short")
    assert not prior.tagger_sees_image("x" * 11)
    assert prior.version != TagPrior(prior.tags, prior.vectors, prior.item_tags, prior.head,
                                     {**info, "tagger_image_text_chars": None}).version
    prior.save(tmp_path / "prior.npz")
    p = make_pipeline(model_settings.updated(tag_prior=str(tmp_path / "prior.npz")), make_backend(model_settings))
    seen: list[int] = []
    real_score = p.tagger.score

    def score(items, candidates):
        seen.extend(len(it.images) for it in items)
        return real_score(items, candidates)

    p.tagger.score = score
    for e in samples.vocab_entries():
        p.vocabulary.apply(e)
        base.vocabulary.apply(e)
    out, plain = p.run(events), base.run(events)
    assert seen == [0, 1, 1]  # the long text's image is not read by the tagger; the short one's and the lone one's are
    assert all(isinstance(o, Enriched) for o in out)
    for o, q in zip(out, plain, strict=True):  # the vectors keep the image
        assert o.record.embedding == q.record.embedding
