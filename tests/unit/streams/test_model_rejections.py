"""A request the model server rejects: its batch is retried item by item, the item that keeps failing is
dead-lettered with reason model_rejected, the others are enriched; a batch whose every item fails stops
the worker instead. The rejection is injected by wrapping the real in-process backend, because a real
Triton cannot be made to reject one chosen item on demand."""

import asyncio

import msgpack
import pytest

import streams.services as services
from enrich.errors import ModelConfigError, ModelRejected
from enrich.models.inference import OnnxRuntimeBackend
from enrich.pipeline import Enriched, RawEvent, SourceRef
from enrich.schemas import DeadLetter, now_ms


class RejectsLongTexts:
    def __init__(self, inner: OnnxRuntimeBackend, max_tokens: int) -> None:
        self.inner, self.max_tokens, self.calls = inner, max_tokens, 0

    def infer(self, model, inputs):
        self.calls += 1
        ids = inputs.get("input_ids")
        if ids is not None and ids.shape[-1] > self.max_tokens:
            raise ModelRejected(f"{model}: sequence of {ids.shape[-1]} tokens refused")
        return self.inner.infer(model, inputs)

    def close(self):
        self.inner.close()


def event(item_id: str, text: str, offset: int) -> RawEvent:
    item = {"schema": 1, "id": item_id, "kind": "article", "title": "t", "text": text, "created_at": now_ms()}
    return RawEvent(item_id.encode(), msgpack.packb(item), SourceRef("items.new", 0, offset))


@pytest.fixture
def enrichment(model_settings, monkeypatch):
    monkeypatch.setattr(services, "make_backend",
                        lambda s: RejectsLongTexts(OnnxRuntimeBackend(s.models_path), max_tokens=64))
    e = services.Enrichment(model_settings.updated(backend="onnxruntime", item_retries=1))
    yield e
    e.backend.close()


def test_the_rejected_item_is_dead_lettered_and_the_rest_enriched(enrichment):
    events = [event("ok-1", "short", 0), event("poison", "word " * 400, 1), event("ok-2", "also short", 2)]
    outcomes = asyncio.run(enrichment.run(events))
    assert [type(o) for o in outcomes] == [Enriched, DeadLetter, Enriched]
    dead = outcomes[1]
    assert (dead.reason, dead.stage, dead.item_id, dead.source_offset) == ("model_rejected", "model", "poison", 1)
    assert "refused" in dead.detail and dead.original == events[1].value


def test_a_batch_rejected_item_by_item_stops_the_worker(enrichment):
    events = [event("poison-1", "word " * 400, 0), event("poison-2", "word " * 300, 1)]
    with pytest.raises(ModelConfigError, match="rejected all 2 items"):
        asyncio.run(enrichment.run(events))
