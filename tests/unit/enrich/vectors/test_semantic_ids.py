import numpy as np
import pytest
import torch

from enrich.errors import ModelConfigError
from enrich.vectors.semantic_ids import SemanticIdCodebook, code_stats
from ops.measure.semantic_eval import evaluate, prefix_neighbours
from training.rqvae import RQVAE, TrainConfig, _reset_dead_codes, load_embeddings, train_rqvae

SMALL = TrainConfig(levels=3, codes=32, latent_dim=16, hidden=(64,), epochs=12, warmup_epochs=2, batch_size=256)


def hierarchical(n=3000, d=48, seed=0) -> np.ndarray:
    """Topics with sub-topics: the structure residual levels are meant to find."""
    rng = np.random.default_rng(seed)
    top, sub = rng.standard_normal((12, d)) * 3, rng.standard_normal((12, 8, d))
    a, b = rng.integers(12, size=n), rng.integers(8, size=n)
    return (top[a] + sub[a, b] + rng.standard_normal((n, d)) * 0.2).astype(np.float32)


@pytest.fixture(scope="module")
def trained() -> tuple[np.ndarray, SemanticIdCodebook, list[dict]]:
    x, history = hierarchical(), []
    return x, train_rqvae(x, SMALL, history.append), history


@pytest.mark.slow
def test_training_converges_and_uses_the_codebooks(trained):
    _, book, history = trained
    train = [r for r in history if r["phase"] == "train"]
    assert len(history) == SMALL.warmup_epochs + SMALL.epochs
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert train[-1]["recon"] < history[0]["recon"]
    assert min(book.meta["metrics"]["utilisation"]) >= 0.9
    assert all(p > 8 for p in book.meta["metrics"]["perplexity"])  # traffic spreads over many codes, not a few


@pytest.mark.slow
def test_euclidean_variant_trains_on_raw_vectors():
    x, history = hierarchical(1500), []
    book = train_rqvae(x, TrainConfig(**{**SMALL.__dict__, "normalise": False, "epochs": 20}), history.append)
    assert not book.normalise and history[-1]["loss"] < history[SMALL.warmup_epochs]["loss"]
    # The codes carry the items' positions, not just directions: far better than the mean vector.
    decoded = book.reconstruct(book.quantize(x))
    assert ((decoded - x) ** 2).sum(1).mean() < 0.5 * ((x.mean(0) - x) ** 2).sum(1).mean()


def test_more_levels_reconstruct_better(trained):
    x, book, _ = trained
    codes = book.quantize(x)
    errs = []
    for levels in (1, 2, 3):
        z = book.latent_of(codes[:, :levels])
        errs.append(float(((z - book.encode(x)) ** 2).sum(1).mean()))
    assert errs[0] > errs[1] > errs[2]


def test_dead_codes_are_reset_to_live_residuals():
    cfg = TrainConfig(levels=2, codes=8, latent_dim=4, hidden=(8,))
    model = RQVAE(6, cfg)
    usage = torch.ones(2, 8, dtype=torch.long)
    usage[1, [2, 5]] = 0
    residuals = [torch.zeros(10, 4), torch.full((10, 4), 7.0)]
    before = model.codebooks.detach().clone()
    assert _reset_dead_codes(model, usage, residuals, torch.Generator().manual_seed(0)) == 2
    after = model.codebooks.detach()
    assert torch.allclose(after[1, [2, 5]], torch.full((2, 4), 7.0), atol=0.01)
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[1, [2, 5]] = False
    assert torch.equal(after[keep], before[keep])


def test_numpy_serving_assigns_the_codes_training_assigns():
    x = hierarchical(800)
    model = RQVAE(x.shape[1], SMALL)
    model.init_codebooks(torch.from_numpy(x), torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, torch_codes, _, _ = model.quantize(model.encode(torch.from_numpy(x)))
    book = model.to_codebook({})
    np.testing.assert_array_equal(book.quantize(x), torch_codes.numpy())


@pytest.mark.slow
def test_training_is_deterministic_and_the_artifact_round_trips(trained, tmp_path):
    x, book, _ = trained
    again = train_rqvae(x, SMALL)
    assert again.version == book.version and book.version.startswith("rqvae-L3K32-")
    path = tmp_path / "cb.npz"
    book.save(path)
    back = SemanticIdCodebook.load(path)
    assert back.version == book.version and back.meta["trained_on"]["items"] == len(x)
    assert back.meta["trained_on"]["data_hash"] == book.meta["trained_on"]["data_hash"]
    np.testing.assert_array_equal(back.quantize(x), book.quantize(x))
    assert back.quantize(x).shape == (len(x), 3) and back.quantize(x).max() < 32


def test_load_refuses_missing_edited_and_foreign_artifacts(trained, tmp_path):
    _, book, _ = trained
    with pytest.raises(ModelConfigError, match="enrich codebook fit"):
        SemanticIdCodebook.load(tmp_path / "missing.npz")
    book.save(tmp_path / "cb.npz")
    with np.load(tmp_path / "cb.npz") as z:
        arrays = dict(z)
    arrays["codebooks"] = arrays["codebooks"] + 1
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(ModelConfigError, match="does not match its version"):
        SemanticIdCodebook.load(tmp_path / "edited.npz")
    np.savez(tmp_path / "old.npz", codebooks=arrays["codebooks"], meta=np.array('{"kind": "residual_kmeans"}'))
    with pytest.raises(ModelConfigError, match="not an RQ-VAE"):
        SemanticIdCodebook.load(tmp_path / "old.npz")


def test_training_refuses_too_few_vectors():
    with pytest.raises(ValueError, match="N >= 32"):
        train_rqvae(np.zeros((10, 4), np.float32), SMALL)


def test_code_stats_on_known_codes():
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 0]])
    s = code_stats(codes, k=4)
    assert s["utilisation"] == [0.5, 0.5]
    assert s["perplexity"][0] == pytest.approx(2.0)
    assert s["distinct_ids"] == 3 and s["collision_rate"] == 0.5 and s["max_items_per_id"] == 2


def test_prefix_neighbours_rank_by_shared_prefix():
    codes = np.array([[1, 2, 3], [1, 2, 4], [1, 5, 5], [9, 9, 9], [1, 2, 3]])
    assert prefix_neighbours(codes, np.array([0]), 3).tolist() == [[4, 1, 2]]


def test_evaluation_beats_random_on_structured_data(trained):
    x, book, _ = trained
    r = evaluate(book, x, queries=200)
    recall = r["recall@10"]
    assert recall["semantic_id_prefix"] > 10 * recall["random"]
    assert recall["decoded_vectors"] > recall["random"]
    assert r["reconstruction_cosine"] > 0.8 and r["quantise_items_per_s"] > 0


def test_embeddings_load_from_npy_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = hierarchical(20, d=5)
    np.save(tmp_path / "e.npy", x)
    pq.write_table(pa.table({"id": list(range(20)), "embedding": x.tolist()}), tmp_path / "e.parquet")
    np.testing.assert_array_equal(load_embeddings(tmp_path / "e.npy"), x)
    np.testing.assert_allclose(load_embeddings(tmp_path / "e.parquet"), x)
    np.save(tmp_path / "bad.npy", np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="finite"):
        load_embeddings(tmp_path / "bad.npy")


def test_a_codebook_is_bound_to_the_embedder_it_was_fitted_on(model_settings, tmp_path):
    from enrich.assembly import make_pipeline
    from enrich.models.inference import OnnxRuntimeBackend
    from ops.local.stack import ensure_codebook, exported_embedder

    book = SemanticIdCodebook.load(model_settings.codebook_path)
    assert book.embedder == exported_embedder(model_settings)  # stamped when it was fitted
    other = model_settings.updated(**{"codebook": tmp_path / "other.npz"})
    book.meta["embedder"] = "another-embedder-v9"
    book.save(other.codebook_path)
    with pytest.raises(ModelConfigError, match="fitted on embedder another-embedder-v9.*enrich codebook fit"):
        make_pipeline(other, OnnxRuntimeBackend(other.models_path))
    said: list[str] = []
    ensure_codebook(other, said.append)  # the local stack fits it again instead
    assert any("refitting the codebook" in line for line in said)
    make_pipeline(other, OnnxRuntimeBackend(other.models_path)).close()
