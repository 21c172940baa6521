"""Tag prototypes: per-tag mean vectors, shipped for the exported embedder, carried on tags.vocab."""

from __future__ import annotations

import numpy as np
import pytest

from enrich.errors import InvalidItem, ModelConfigError
from enrich.schemas import VocabEntry, decode_vocab, encode
from enrich.tagging.prototypes import TagPrototypes


def test_prototypes_are_normalised_means_of_the_items_carrying_each_tag(tmp_path):
    vecs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    p = TagPrototypes.compute([["a", "b"], ["a"], ["c"]], vecs, "emb-1")
    assert p.tags == ["a", "b", "c"] and p.embedder == "emb-1"
    np.testing.assert_allclose(p.vectors[0], [2 ** -0.5, 2 ** -0.5, 0], rtol=1e-6)
    np.testing.assert_allclose(p.vectors[2], [0, 0, 1])
    assert TagPrototypes.compute([["a", "b"], ["a"], ["c"]], vecs, "emb-1", min_items=2).tags == ["a"]
    p.save(tmp_path / "p.npz")
    q = TagPrototypes.load(tmp_path / "p.npz")
    assert (q.tags, q.embedder) == (p.tags, p.embedder)
    np.testing.assert_allclose(q.vectors, p.vectors, atol=1e-3)  # float16 on disk
    with pytest.raises(ModelConfigError, match="enrich vocab prototypes"):
        TagPrototypes.load(tmp_path / "missing.npz")


def test_vocab_entries_carry_prototypes_over_the_wire():
    proto = np.arange(4, dtype=np.float32).tobytes()
    e = decode_vocab(encode(VocabEntry("use::editing", "use", prototype=proto, prototype_embedder="emb-1")))
    assert e.prototype == proto and e.prototype_embedder == "emb-1"
    assert decode_vocab(encode(VocabEntry("use::editing"))).prototype is None
    with pytest.raises(InvalidItem, match="float32"):
        decode_vocab(encode(VocabEntry("use::editing", prototype=b"abc")))


def test_the_shipped_artifacts_belong_to_the_exported_small_models(small_model_settings):
    """The CF adapter, the prototypes and the tag prior are bound to the model versions they were made
    with: a change to the small models must come with rebuilt artifacts, or they silently stop shipping."""
    from enrich.models.meta import ModelMeta
    from enrich.vectors.cf_adapter import CF_ADAPTER_FILE, CfAdapter
    from ops.local.stack import debtags_vocabulary

    embedder = ModelMeta.read(small_model_settings.models_path / "embedder" / "meta.json").version
    assert CfAdapter.load(small_model_settings.models_path / "embedder" / CF_ADAPTER_FILE).embedder == embedder
    assert small_model_settings.cf_adapter_file() is not None
    entries = debtags_vocabulary(small_model_settings)
    with_proto = [e for e in entries if e.prototype]
    assert len(with_proto) >= 0.95 * len(entries) and {e.prototype_embedder for e in with_proto} == {embedder}
    from enrich.tagging.prior import TagPrior

    tagger = ModelMeta.read(small_model_settings.models_path / "tagger" / "meta.json").version
    prior_path = small_model_settings.tag_prior_file()
    assert prior_path is not None and prior_path.parent == small_model_settings.models_path / "tagger"
    prior = TagPrior.load(prior_path)
    assert (prior.embedder, prior.tagger) == (embedder, tagger)
    assert len(prior.vectors) == prior.info["exemplars"] and 0 < prior.head.threshold < 1
