"""The first stage's agent through Faust's agent test context, and the second stage's numbering: events in on
the agent's channel, the real pipeline (tiny models, in-process ONNX Runtime) in between, what the agent sends
captured per topic; the ``items.coded`` records it sends numbered by ``streams.publish_stage.number``.

The real-broker tests (tests/integration, tests/e2e) run both stages against Apache Kafka; these pin the stages'
own logic: one output per input, dead letters with their reason, outputs sent before the input is acked, and the
``items.coded`` hand-off the second stage reads back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest

from enrich.schemas import decode_coded, now_ms
from streams.app import create_app
from streams.collision_digits import DigitStore
from streams.publish_stage import number
from streams.topology import STAGES


def item(item_id: str, text: str) -> bytes:
    return msgpack.packb({"schema": 1, "id": item_id, "kind": "article", "title": item_id, "text": text,
                          "created_at": now_ms()}, use_bin_type=True)


class Message:
    """A consumed ``items.coded`` record, as confluent-kafka gives it to the publish stage."""

    def __init__(self, key: bytes | None, value: bytes | None, offset: int, partition: int = 0) -> None:
        self._key, self._value, self._offset, self._partition = key, value, offset, partition

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def topic(self) -> str:
        return "items.coded"


class Sent:
    """What the agents send, by topic. Each send's delivery future is done at once, or (``hold``) only when
    ``deliver()`` is called, as a broker's acknowledgement comes later."""

    def __init__(self, app: Any, hold: bool = False, refuse: str | None = None) -> None:
        self.records: dict[str, list[tuple[bytes, bytes, int | None]]] = {}
        self.hold, self.pending, self.refuse = hold, [], refuse
        for name, topic in app.stream_topics.items():
            topic.send = self._sender(name)

    def deliver(self) -> None:
        for f in self.pending:
            f.set_result(None)

    def _sender(self, name: str):  # noqa: ANN202 - an async send
        async def send(key: bytes | None = None, value: bytes | None = None, partition: int | None = None,
                       **_: Any) -> asyncio.Future:
            self.records.setdefault(name, []).append((key, value, partition))
            delivery = asyncio.get_running_loop().create_future()
            if name == self.refuse:  # what the broker or the producer says of a record too large
                delivery.set_exception(RuntimeError(f"MessageSizeTooLargeError: {name}"))
            elif self.hold:
                self.pending.append(delivery)
            else:
                delivery.set_result(None)
            return delivery
        return send


@pytest.fixture
def app(model_settings, monkeypatch):
    monkeypatch.setattr(DigitStore, "_read_partition", lambda self, partition: ({}, []))  # an empty changelog
    s = model_settings.updated(backend="onnxruntime", batch_size=4, batch_wait_s=0.05,
                                          web_port=6066)
    app = create_app(s)
    app.finalize()
    app.conf.store = "memory://"
    yield app
    app.enrichment.pipeline.close()
    app.enrichment.backend.close()


async def _until(done: Any, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if done():
            return
        await asyncio.sleep(0.05)


async def _run(agent: Any, values: list[tuple[bytes, bytes]], sent: Sent, expect: int) -> dict[str, list[bool]]:
    """Put ``values`` on the agent's channel and wait until ``expect`` records were sent and every event was
    acked; which events were acked before the sends were delivered (``sent.hold``), and after."""
    async with agent.test_context() as tested:
        events = [await tested.put(v, key=k, wait=False) for k, v in values]
        await _until(lambda: sum(map(len, sent.records.values())) >= expect)
        await asyncio.sleep(0.3)  # time to ack, were the agent not waiting for the deliveries
        before = [e.message.acked for e in events]
        sent.deliver()
        await _until(lambda: all(e.message.acked for e in events))
        return {"before_delivery": before, "after": [e.message.acked for e in events]}


def test_the_topology_places_every_topic_and_the_app_runs_its_stages(app):
    from streams.topology import STREAM_TOPICS, TAGS_VOCAB, TOPIC_NAMES

    assert set(STREAM_TOPICS) | {TAGS_VOCAB} == set(TOPIC_NAMES)
    first, second = STAGES
    assert first.agent in app.agents and second.agent not in app.agents  # the second runs on its own consumer
    assert app.agents[first.agent].channel.get_topic_name() == app.stream_topics[first.reads].get_topic_name()
    assert app.publishing.stage.coded_topic == app.stream_topics[second.reads].get_topic_name()


def test_the_enrich_stage_hands_items_on_and_dead_letters_bad_ones(app):
    sent = Sent(app, hold=True)
    values = [(b"a", item("a", "a text about audio players")), (b"bad", b"\xc1 not msgpack"),
              (b"b", item("b", "an image editor"))]
    acked = asyncio.run(_run(app.agents[STAGES[0].agent], values, sent, expect=3))
    coded = sent.records["items.coded"]
    assert sorted(decode_coded(v, k).item_id for k, v, _ in coded) == ["a", "b"]
    (dead,) = sent.records["items.dlq"]
    assert dead[0] == b"bad" and msgpack.unpackb(dead[1])["reason"] == "not_msgpack"
    assert acked == {"before_delivery": [False] * 3, "after": [True] * 3}  # acked once the broker has the outputs


def _digits(app: Any) -> DigitStore:
    return DigitStore(app.publishing.stage.settings)


def test_the_digit_stage_numbers_and_publishes_every_output_of_a_coded_item(app):
    first = Sent(app)
    asyncio.run(_run(app.agents[STAGES[0].agent], [(b"a", item("a", "a text about audio players"))], first, 1))
    (key, coded, _), = first.records["items.coded"]
    batch = number(app.publishing.stage.settings, _digits(app), [Message(key, coded, 7),
                                                                Message(b"x", b"not a coded record", 8)])
    assert batch.offsets == {("items.coded", 0): 9}  # committed after the outputs: the next offset
    (enriched,) = [(k, v) for t, k, v in batch.outputs if t == "items.enriched"]
    record = msgpack.unpackb(enriched[1])
    assert enriched[0] == b"a" and record["item_id"] == "a"
    assert record["semantic_id"][:-1] == decode_coded(coded, key).record["semantic_id"]
    assert record["semantic_id"][-1] == 0
    assert [k for t, k, _ in batch.outputs if t == "recall.neighbors"] == [b"a"]
    assert [p for p, _, _ in batch.digits] == [0]  # the digits' partition is the coded one's
    (dead,) = batch.dead
    assert dead.reason == "bad_coded_record"


def test_a_replayed_item_keeps_its_digit_and_writes_no_new_one(app):
    first = Sent(app)
    asyncio.run(_run(app.agents[STAGES[0].agent], [(b"a", item("a", "a text about audio players"))], first, 1))
    (key, coded, _), = first.records["items.coded"]
    digits = _digits(app)
    once = number(app.publishing.stage.settings, digits, [Message(key, coded, 0)])
    again = number(app.publishing.stage.settings, digits, [Message(key, coded, 1)])
    assert len(once.digits) == 1 and again.digits == []
    assert [v for t, _, v in once.outputs if t == "items.enriched"] == \
        [v for t, _, v in again.outputs if t == "items.enriched"]


def test_faust_finds_the_module_level_app_and_its_stages(model_settings):
    """``faust -A streams.app`` builds the app from the environment's settings (here: the tiny models)."""
    import subprocess
    import sys

    from ops.local.harness import settings_env

    env = settings_env(model_settings.updated(backend="onnxruntime", web_port=6066))
    res = subprocess.run([sys.executable, "-m", "faust", "-A", "streams.app", "agents"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    first = STAGES[0]
    assert f"@{first.agent}" in res.stdout and model_settings.topic(first.reads) in res.stdout


def test_a_tombstone_or_an_empty_record_on_items_new_is_dead_lettered_and_the_items_behind_it_go_on(app):
    sent = Sent(app)
    values = [(b"k", None), (None, item("a", "a text about audio players")), (b"e", b""),
              (b"b", item("b", "an image editor"))]
    asyncio.run(_run(app.agents[STAGES[0].agent], values, sent, expect=4))
    assert sorted(decode_coded(v, k).item_id for k, v, _ in sent.records["items.coded"]) == ["a", "b"]
    letters = {k: msgpack.unpackb(v) for k, v, _ in sent.records["items.dlq"]}
    assert set(letters) == {b"k", b"e"} and {d["reason"] for d in letters.values()} == {"not_msgpack"}
    assert "tombstone" in letters[b"k"]["detail"] and letters[b"k"]["original"] == b""


def test_a_coded_record_under_another_key_or_none_is_dead_lettered_not_numbered(app):
    first = Sent(app)
    asyncio.run(_run(app.agents[STAGES[0].agent], [(b"a", item("a", "a text about audio players"))], first, 1))
    (key, coded, _), = first.records["items.coded"]
    messages = [Message(None, coded, 0), Message(b"v:9-9-9", coded, 1), Message(key, None, 2), Message(key, coded, 3)]
    batch = number(app.publishing.stage.settings, _digits(app), messages)
    assert [k for t, k, _ in batch.outputs if t == "items.enriched"] == [b"a"]
    assert [d.reason for d in batch.dead] == ["bad_coded_record"] * 3
