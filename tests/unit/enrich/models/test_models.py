"""The real inference code on tiny exported models, in-process (ONNX Runtime)."""

import msgpack
import numpy as np
import pytest
import torch

from corpora import samples
from enrich.models.inference import OnnxRuntimeBackend
from enrich.models.loading import load_models
from enrich.models.sequences import Prefix
from enrich.preprocess import prepare
from enrich.schemas import decode_item
from triton_models.export import ParityError, check_parity
from triton_models.graphs import LateFusionGate, TextGraph, VisionGraph, build_random_model
from triton_models.presets import get_preset


@pytest.fixture(scope="module")
def models(models_dir):
    backend = OnnxRuntimeBackend(models_dir)
    return load_models(models_dir, backend, max_text_tokens=64, max_batch=4)


def _items(n):
    return [prepare(decode_item(msgpack.packb(i)), 8000) for i in samples.sample_items(n)]


def test_embeddings_are_unit_norm_and_batch_independent(models):
    embedder, _ = models
    items = _items(7)  # crosses the max_batch=4 boundary, text-only and image items mixed
    together = embedder.embed(items)
    alone = np.concatenate([embedder.embed([it]) for it in items])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_images_change_the_embedding(models):
    embedder, _ = models
    item = _items(2)[1]
    assert item.images
    text_only = type(item)(item.item, item.text, [])
    assert np.abs(embedder.embed([item]) - embedder.embed([text_only])).max() > 1e-4


def test_packed_tag_scoring_equals_one_pass_per_tag(models):
    _, tagger = models
    items = _items(3)
    tags = ["cooking", "kubernetes", "cats", "a much longer tag name"]
    packed = tagger.score(items, [tags] * len(items))
    for it, sc in zip(items, packed, strict=True):
        for k, tag in enumerate(tags):
            single = tagger.score([it], [[tag]])[0]
            np.testing.assert_allclose(sc.probs[k], single.probs[0], atol=1e-5)
        np.testing.assert_allclose(sc.probs.sum(1), 1, atol=1e-5)


def test_items_without_candidates_are_scored_empty(models):
    _, tagger = models
    out = tagger.score(_items(2), [[], ["cats"]])
    assert out[0].tags == [] and out[1].probs.shape == (1, 3)


@pytest.mark.parametrize("role", ["embedder", "tagger"])
def test_host_mrope_positions_match_hf_get_rope_index(role):
    model = build_random_model(get_preset(role, "tiny"))
    sp = model.config
    pre = Prefix()
    pre.add_text([1, 2, 3])
    pre.add_text([sp.vision_start_token_id])
    pre.add_image((1, 8, 6), 2, sp.image_token_id)
    pre.add_text([sp.vision_end_token_id, 4, 5])
    pre.add_image((1, 4, 4), 2, sp.image_token_id)
    pre.add_text([6])
    ids = torch.tensor([pre.ids])
    ref, _ = model.model.get_rope_index(ids, (ids == sp.image_token_id).int(),
                                        image_grid_thw=torch.tensor([[1, 8, 6], [1, 4, 4]]))
    np.testing.assert_array_equal(pre.position_array(), ref[:, 0].numpy())


def test_parity_check_fails_loudly_on_a_wrong_graph(models_dir):
    from enrich.models.meta import ModelMeta

    meta = ModelMeta.read(models_dir / "embedder" / "meta.json")
    other = build_random_model(get_preset("embedder", "tiny"), seed=123)  # different weights
    gate = LateFusionGate.random(meta.hidden_size, seed=123)
    with pytest.raises(ParityError):
        check_parity(models_dir / "embedder", VisionGraph(other), TextGraph(other, "embedder", gate=gate), meta, seed=5)


def test_padding_to_a_bucket_changes_no_output(models_dir, models):
    """Workers pad to ENRICH_SEQ_BUCKET so Triton can merge requests; the padding must be invisible."""
    embedder, tagger = models
    bucketed_emb, bucketed_tag = load_models(models_dir, embedder.backend, max_text_tokens=64, max_batch=4,
                                             seq_bucket=32)
    items = _items(5)
    np.testing.assert_allclose(bucketed_emb.embed(items), embedder.embed(items), atol=1e-5)
    tags = [["cats", "kubernetes"]] * len(items)
    for a, b in zip(bucketed_tag.score(items, tags), tagger.score(items, tags), strict=True):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


def test_a_stale_export_is_refused_with_the_fix(models_dir, tmp_path):
    import json
    import shutil

    from enrich.errors import ModelConfigError
    from enrich.models.meta import ModelMeta

    shutil.copy(models_dir / "embedder" / "meta.json", tmp_path / "meta.json")
    raw = json.loads((tmp_path / "meta.json").read_text())
    del raw["contract"]  # written before the graphs became batch-first
    (tmp_path / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(ModelConfigError, match="export it again"):
        ModelMeta.read(tmp_path / "meta.json")
