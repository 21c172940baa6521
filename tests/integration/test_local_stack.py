"""Against the real Tansu broker and the real Triton, started by the project's own launchers."""

import msgpack
import numpy as np
import pytest

from corpora import samples
from enrich.errors import BackendUnavailable
from enrich.models.inference import OnnxRuntimeBackend, TritonBackend
from enrich.models.loading import load_models
from enrich.preprocess import prepare
from enrich.schemas import decode_item
from ops.kafka.clients import TopicReader, create_topics, publish
from ops.local.broker import LocalBroker
from ops.local.process import LaunchError

pytestmark = pytest.mark.integration


def test_triton_serves_the_same_numbers_as_in_process(local_stack):
    items = [prepare(decode_item(msgpack.packb(i)), 8000) for i in samples.sample_items(6)]
    triton = TritonBackend(local_stack.triton_url)
    local = OnnxRuntimeBackend(local_stack.models_path)
    e1, t1 = load_models(local_stack.models_path, triton, 64, 8)
    e2, t2 = load_models(local_stack.models_path, local, 64, 8)
    np.testing.assert_allclose(e1.embed(items), e2.embed(items), atol=1e-5)
    cands = [["cats", "kafka"]] * len(items)
    for a, b in zip(t1.score(items, cands), t2.score(items, cands), strict=True):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    triton.close()


def test_unreachable_triton_is_unavailable_not_fatal():
    from ops.local.process import free_port

    backend = TritonBackend(f"127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(BackendUnavailable):
        backend.infer("embedder_text", {"input_ids": np.zeros((1, 1), np.int64)})


def test_broker_round_trip_and_idempotent_topic_creation(local_stack):
    assert create_topics(local_stack) == []  # the fixture already made them
    publish(local_stack, "tags.vocab", [(b"k", b"v1"), (b"k", b"v2")])
    reader = TopicReader(local_stack, ["tags.vocab"])
    got = []
    for _ in range(20):
        got += reader.poll(0.5)
        if len(got) >= 2:
            break
    reader.close()
    assert [r.value for r in got][-2:] == [b"v1", b"v2"]


def test_port_in_use_gives_a_clear_error(local_stack, tmp_path):
    with pytest.raises(LaunchError, match="already in use"):
        LocalBroker(local_stack.broker_port, tmp_path / "b.log").start()
