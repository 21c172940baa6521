import numpy as np
import pytest

from enrich.errors import ModelConfigError
from enrich.semantic_ids import ResidualKMeans


def _clustered(n=600, d=16, k=12, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    return (centers[rng.integers(k, size=n)] + rng.standard_normal((n, d)) * 0.3).astype(np.float32)


def test_more_levels_reconstruct_better():
    x = _clustered()
    errs = []
    for levels in (1, 2, 3):
        cb = ResidualKMeans.fit(x, levels, 16, seed=1)
        errs.append(float(((cb.reconstruct(cb.quantize(x)) - x) ** 2).sum(1).mean()))
    assert errs[0] > errs[1] > errs[2]


def test_quantize_is_deterministic_and_round_trips(tmp_path):
    x = _clustered()
    cb = ResidualKMeans.fit(x, 2, 8)
    path = tmp_path / "cb.npz"
    cb.save(path)
    back = ResidualKMeans.load(path)
    assert back.version == cb.version
    np.testing.assert_array_equal(back.quantize(x), cb.quantize(x))
    assert cb.quantize(x).shape == (len(x), 2) and cb.quantize(x).max() < 8


def test_fit_rejects_too_few_vectors_and_load_says_how_to_fix(tmp_path):
    with pytest.raises(ValueError):
        ResidualKMeans.fit(np.zeros((3, 4)), 2, 8)
    with pytest.raises(ModelConfigError, match="enrich codebook fit"):
        ResidualKMeans.load(tmp_path / "missing.npz")
