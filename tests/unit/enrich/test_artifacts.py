"""The one artifact store: what is written is read back, and what cannot be read says how to build it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enrich import artifacts
from enrich.errors import ModelConfigError
from enrich.tagging.prior import DecisionHead, TagPrior
from enrich.vectors.cf_adapter import CfAdapter


def test_arrays_and_info_round_trip_and_the_record_sits_beside(tmp_path):
    path = tmp_path / "deep" / "a.npz"
    artifacts.write(path, {"embedder": "e1", "n": 2}, weight=np.eye(2, dtype=np.float32), version="v1")
    with artifacts.reading(path, "thing", "enrich make-thing") as z:
        assert artifacts.info_of(z) == {"embedder": "e1", "n": 2} and str(z["version"]) == "v1"
        assert np.array_equal(z["weight"], np.eye(2))
    record = artifacts.write_record(path, {"version": "v1"})
    assert record == tmp_path / "deep" / "a.json" and json.loads(record.read_text()) == {"version": "v1"}


def test_a_missing_or_foreign_file_names_the_command_that_builds_one(tmp_path):
    with pytest.raises(ModelConfigError, match="not found: build it with `enrich models train-cf`"):
        CfAdapter.load(tmp_path / "none.npz")
    foreign = tmp_path / "foreign.npz"
    artifacts.write(foreign, {}, something_else=np.zeros(3))
    with pytest.raises(ModelConfigError, match="is not a CF adapter artifact.*`enrich models train-cf`"):
        CfAdapter.load(foreign)
    (tmp_path / "garbage.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ModelConfigError, match="is not a tag-prior artifact.*`enrich vocab prior`"):
        TagPrior.load(tmp_path / "garbage.npz")


def test_the_shipped_kinds_all_go_through_it(tmp_path):
    prior = TagPrior.from_items([["a"], ["a", "b"]], np.eye(2, dtype=np.float32), DecisionHead.unfitted(),
                                {"embedder": "e"})
    prior.save(tmp_path / "p.npz")
    again = TagPrior.load(tmp_path / "p.npz")
    assert again.version == prior.version and again.tags == ["a", "b"] and again.info == {"embedder": "e"}
