"""The second stage on its own consumer, against Apache Kafka: it numbers and publishes what ``items.coded``
holds, commits only after the outputs are acknowledged, writes one transaction per batch in exactly-once mode,
and stops the worker (committing nothing) on a record the broker refuses."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from enrich.schemas import CODED_SCHEMA, CodedItem
from ops.kafka.clients import create_topics, publish
from streams.kafka_tools import read_to_end
from streams.publish_stage import PublishStage, publish_group
from streams.topology import ITEMS_CODED, ITEMS_ENRICHED, RECALL_NEIGHBORS, SID_DIGITS

pytestmark = pytest.mark.integration


def coded(item_id: str, codes: tuple[int, ...] = (1, 2)) -> tuple[bytes, bytes]:
    record = {"item_id": item_id, "created_at": 1_700_000_000_000, "semantic_id": list(codes), "tags": [],
              "versions": {"codebook": "rq-1"}, "enriched_at": 1_700_000_000_500}
    item = CodedItem(record, {"item_id": item_id, "semantic_id": list(codes)}, [])
    assert msgpack.unpackb(item.encode())["schema"] == CODED_SCHEMA
    return item.key, item.encode()


@pytest.fixture
def fresh(local_stack):
    s = local_stack.updated(topic_prefix=f"p{time.time_ns()}.", group_id=f"g{time.time_ns()}", batch_size=8)
    create_topics(s)
    return s


def run_until(stage: PublishStage, done, timeout_s: float = 60.0) -> None:  # noqa: ANN001 - a predicate
    stage.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert stage.error is None, stage.error
            assert time.monotonic() < deadline, "the publish stage did not finish in time"
            time.sleep(0.2)
    finally:
        stage.stop()


def committed(settings, partitions: int) -> dict[int, int]:
    c = Consumer(settings.kafka_client_config() | {"group.id": publish_group(settings)})
    try:
        tps = c.committed([TopicPartition(settings.topic(ITEMS_CODED), p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    except KafkaException:  # the group coordinator of a new cluster may still be loading
        return {}
    finally:
        c.close()


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_items_are_numbered_published_and_committed(fresh, exactly_once):
    s = fresh.updated(exactly_once=exactly_once)
    records = [coded(f"item-{n}") for n in range(12)] + [coded("other", (3, 4))]
    publish(s, ITEMS_CODED, records)
    stage = PublishStage(s, on_fatal=lambda exc: None)
    run_until(stage, lambda: sum(committed(s, s.partitions).values()) >= len(records))
    out = {r.key.decode(): msgpack.unpackb(r.value) for r in read_to_end(s, [ITEMS_ENRICHED])}
    assert sorted(v["semantic_id"][-1] for k, v in out.items() if k.startswith("item-")) == list(range(12))
    assert out["other"]["semantic_id"] == [3, 4, 0]
    assert len(read_to_end(s, [RECALL_NEIGHBORS])) == len(records) == len(read_to_end(s, [SID_DIGITS]))
    # a second run of the group starts where the first committed: nothing is published twice
    again = PublishStage(s, on_fatal=lambda exc: None)
    run_until(again, lambda: again.last_poll > 0 and bool(again.assigned), timeout_s=30)
    time.sleep(1.0)
    assert len(read_to_end(s, [ITEMS_ENRICHED])) == len(records)


def test_a_record_the_broker_refuses_stops_the_stage_and_commits_nothing(fresh):
    s = fresh
    # items.enriched takes at most 2,000 bytes here; the item's record is larger, its other outputs are not
    admin = AdminClient(s.kafka_client_config())
    limit = ConfigResource("topic", s.topic(ITEMS_ENRICHED),
                           incremental_configs=[ConfigEntry("max.message.bytes", "2000",
                                                            incremental_operation=AlterConfigOpType.SET)])
    for f in admin.incremental_alter_configs([limit]).values():
        f.result()
    key, value = coded("big")
    record = msgpack.unpackb(value)
    record["record"]["pad"] = "x" * 5000
    publish(s, ITEMS_CODED, [(key, msgpack.packb(record))])
    stopped = threading.Event()
    errors: list[BaseException] = []
    stage = PublishStage(s, on_fatal=lambda exc: (errors.append(exc), stopped.set()))
    stage.start()
    try:
        assert stopped.wait(60), "the stage did not stop on a refused record"
    finally:
        stage.stop()
    assert "refused by the broker" in str(errors[0]) and "too large" in str(errors[0]).lower(), errors
    assert committed(s, s.partitions) == {}
    assert read_to_end(s, [ITEMS_ENRICHED]) == []
