"""/readyz is honest: a worker is ready only once the backend reports every model it calls ready and one
warm-up item went through the whole pipeline; an unavailable backend keeps it unready."""

from __future__ import annotations

import asyncio

import pytest

from enrich.errors import BackendUnavailable, ModelConfigError
from streams.services import Enrichment


@pytest.fixture
def enrichment(model_settings):
    e = Enrichment(model_settings.updated(retry_max_s=0.05))
    yield e
    e.pipeline.close()


def test_ready_only_after_every_model_is_ready_and_a_warm_up_item_ran(enrichment, monkeypatch):
    asked: list[list[str]] = []
    real_ready, real_infer = enrichment.backend.is_ready, enrichment.backend.infer
    calls = {"infer": 0}

    def is_ready(models):
        asked.append(models)
        return len(asked) > 2 and real_ready(models)  # the server loads its models for a while

    def infer(model, inputs):
        calls["infer"] += 1
        if calls["infer"] == 1:
            raise BackendUnavailable("still starting")
        return real_infer(model, inputs)

    monkeypatch.setattr(enrichment.backend, "is_ready", is_ready)
    monkeypatch.setattr(enrichment.backend, "infer", infer)
    assert not enrichment.ready
    asyncio.run(enrichment.warm_up())
    assert enrichment.ready and enrichment.warm
    assert set(asked[0]) == {"embedder_vision", "embedder_text", "tagger_vision", "tagger_text"}
    assert len(asked) >= 4 and calls["infer"] > 1  # waited for readiness, then retried the unavailable call
    enrichment.backend_ok = False  # what a failing batch sets
    assert not enrichment.ready


def test_a_warm_up_the_deployment_fails_stops_the_worker(enrichment, monkeypatch):
    def infer(model, inputs):
        raise ModelConfigError(f"no model {model}")

    monkeypatch.setattr(enrichment.backend, "infer", infer)
    with pytest.raises(ModelConfigError):
        asyncio.run(enrichment.warm_up())
    assert not enrichment.ready
