"""CF adapter: training moves co-used items together, serving adds a CF vector beside the content one."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from corpora import samples
from corpora.debtags import DebtagsItem
from enrich.assembly import make_backend, make_pipeline
from enrich.errors import ModelConfigError
from enrich.pipeline import Enriched, RawEvent, SourceRef
from enrich.schemas import vector_from_bytes
from enrich.vectors.cf_adapter import CfAdapter
from ops.recall.index import NeighborIndex
from training.cf_adapter import train_cf


def _co_use_world(n_groups: int = 40, per_group: int = 6, dim: int = 32, seed: int = 0):
    """Items whose co-use partners are content-far: each group's members sit in different content
    clusters, so content neighbours rarely find them and only co-use training can."""
    rng = np.random.default_rng(seed)
    clusters = rng.normal(size=(per_group, dim))
    vecs, items = [], []
    for g in range(n_groups):
        direction = rng.normal(size=dim) * 0.6  # what the group shares: weaker than the cluster signal
        members = [f"g{g}-m{m}" for m in range(per_group)]
        for m, name in enumerate(members):
            v = clusters[m] + direction + rng.normal(size=dim) * 0.3
            vecs.append(v / np.linalg.norm(v))
            split = "test" if g % 5 == 0 and m == 0 else "train"
            items.append(DebtagsItem(name, name, "", [], [o for o in members if o != name], split))
    return items, np.asarray(vecs, np.float32)


@pytest.mark.slow
def test_training_beats_content_on_held_out_co_use_and_keeps_some_content_similarity():
    items, vecs = _co_use_world()
    adapter = train_cf(items, vecs, "emb-1", epochs=60, batch=64, hard=2, progress=False)
    info = adapter.info
    assert info["embedder"] == "emb-1" and info["held_out_queries"] == 8
    recall = info["recall@10"]
    assert recall["cf_tuned"] > recall["content"] + 0.2, recall
    assert 0.0 < info["content_neighbour_retention@10"] <= 1.0
    assert adapter.version.startswith("cf-adapter-debtags-v1-")
    out = adapter.apply(vecs)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_an_untrained_adapter_is_the_identity_and_round_trips(tmp_path):
    a = CfAdapter(np.zeros((8, 8), np.float32), "cf-x", {"embedder": "emb-1"})
    v = np.eye(8, dtype=np.float32)[:3]
    np.testing.assert_allclose(a.apply(v), v)
    a.save(tmp_path / "cf.npz")
    b = CfAdapter.load(tmp_path / "cf.npz")
    assert (b.version, b.embedder, b.dim) == ("cf-x", "emb-1", 8)
    with pytest.raises(ModelConfigError, match="not found"):
        CfAdapter.load(tmp_path / "missing.npz")


def test_an_adapter_refuses_another_embedder():
    a = CfAdapter(np.zeros((8, 8), np.float32), "cf-x", {"embedder": "emb-1"})
    a.check_embedder("emb-1", 8)
    with pytest.raises(ModelConfigError, match="retrain it"):
        a.check_embedder("emb-2", 8)
    with pytest.raises(ModelConfigError, match="retrain it"):
        a.check_embedder("emb-1", 16)


def test_the_pipeline_publishes_the_cf_vector_beside_the_content_vector(model_settings, tmp_path):
    base = make_pipeline(model_settings, make_backend(model_settings))
    dim = base.embedder.meta.hidden_size
    weight = np.random.default_rng(0).normal(scale=0.2, size=(dim, dim)).astype(np.float32)
    adapter = CfAdapter(weight, "cf-test-1", {"embedder": base.embedder.version})
    adapter.save(tmp_path / "cf.npz")
    p = make_pipeline(model_settings.updated(**{"cf_adapter": tmp_path / "cf.npz"}),
                      make_backend(model_settings))
    for e in samples.vocab_entries():
        p.vocabulary.apply(e)
    items = samples.sample_items(4)
    out = p.run([RawEvent(None, msgpack.packb(i), SourceRef("items.new", 0, n)) for n, i in enumerate(items)])
    assert all(isinstance(o, Enriched) for o in out)
    loaded = CfAdapter.load(tmp_path / "cf.npz")  # float16 on disk: compare with what the worker serves
    content = np.stack([vector_from_bytes(o.record.embedding) for o in out])
    cf = np.stack([vector_from_bytes(o.record.cf_embedding) for o in out])
    np.testing.assert_allclose(cf, loaded.apply(content), atol=1e-6)
    assert not np.allclose(cf, content)
    assert all(o.neighbor.cf_vector == o.record.cf_embedding for o in out)
    assert all(o.record.versions.cf_adapter == "cf-test-1" for o in out)
    assert base.versions.cf_adapter == "" and base.run(
        [RawEvent(None, msgpack.packb(items[0]), SourceRef("items.new", 0, 0))])[0].record.cf_embedding is None
    bad = CfAdapter(weight, "cf-test-2", {"embedder": "another-embedder"})
    bad.save(tmp_path / "bad.npz")
    with pytest.raises(ModelConfigError, match="another-embedder"):
        make_pipeline(model_settings.updated(**{"cf_adapter": tmp_path / "bad.npz"}),
                      make_backend(model_settings))


def test_the_cf_neighbour_index_reads_cf_vectors_and_skips_records_without_one():
    idx = NeighborIndex(vector_field="cf_vector")
    content = np.eye(4, dtype=np.float32)
    cf = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    for i in range(4):
        rec = {"item_id": f"i{i}", "vector": content[i].tobytes(), "semantic_id": [i], "enriched_at": 1,
               "cf_vector": cf[i].tobytes()}
        assert idx.apply(rec)
    assert not idx.apply({"item_id": "plain", "vector": content[0].tobytes(), "semantic_id": [0],
                          "enriched_at": 1, "cf_vector": None})
    assert "plain" not in idx
    assert idx.by_item("i0", k=1)[0].item_id == "i1"  # content vectors alone would tie every item
