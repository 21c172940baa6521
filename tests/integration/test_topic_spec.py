"""The one topic specification against the real broker: created as specified, checked for drift, and a
replication factor the cluster cannot hold refused with the fix; a record the broker refuses is never
counted as sent."""

from __future__ import annotations

import sys
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from ops.kafka.clients import create_topics
from streams.kafka_tools import KafkaToolError, topic_drift
from streams.topology import TOPIC_NAMES, topic_specs


def prefixed(settings, name: str):
    return settings.updated(**{"topic_prefix": f"{name}{time.time_ns()}."})


def test_topics_are_created_as_specified_and_checked_for_drift(local_stack):
    import subprocess

    from ops.local.harness import settings_env

    s = prefixed(local_stack, "spec")
    assert sorted(create_topics(s)) == sorted(s.topic(t) for t in TOPIC_NAMES)
    assert topic_drift(s) == []
    res = subprocess.run([sys.executable, "-m", "ops.cli", "topics", "check"], env=settings_env(s),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "every topic matches" in res.stdout, res.stdout + res.stderr
    # the same topics checked against a spec that asks for more: every difference is named
    wider = s.updated(partitions=s.partitions + 2, retention_ms=3_600_000)
    drift = topic_drift(wider)
    assert any(f"{s.topic('items.new')}: {s.partitions} partitions, the spec says {s.partitions + 2}" == d
               for d in drift)
    assert any(d.startswith(f"{s.topic('items.dlq')}: retention.ms=") for d in drift)
    assert not any("tags.vocab: " in d and "partitions" in d for d in drift)  # always one partition
    res = subprocess.run([sys.executable, "-m", "ops.cli", "topics", "check"], env=settings_env(wider),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "differences from the topic specification" in res.stdout


def test_a_replication_factor_above_the_broker_count_is_refused_with_the_fix(local_stack):
    s = prefixed(local_stack, "rf").updated(replication_factor=3, min_insync_replicas=2)
    with pytest.raises(KafkaToolError, match="set ENRICH_REPLICATION_FACTOR=1"):
        create_topics(s)
    assert all(spec.replication_factor == 3 and spec.min_insync_replicas == 2 for spec in topic_specs(s))


def test_a_record_without_a_delivery_report_of_success_is_not_counted_as_sent(local_stack):
    """``flush()`` returns 0 once a failed record left the queue; only its delivery report says it failed."""
    from confluent_kafka import Producer

    from ops.kafka.clients import Deliveries

    s = prefixed(local_stack, "refuse")
    admin = AdminClient(s.kafka_client_config())
    for f in admin.create_topics([NewTopic(s.topic("items.new"), 1, 1)]).values():
        f.result(15)
    producer = Producer(s.kafka_client_config())
    out = Deliveries(producer, s.topic("items.new"))
    out.produce(b"fine", b"a")
    out.produce(b"nowhere", b"b", partition=7)  # the topic has one partition: the report says so
    out.produce(b"fine too", b"c")
    assert producer.flush(15) == 0  # what the backfill used to trust
    with pytest.raises(KafkaToolError, match="1 records refused"):
        out.settle(15)
    assert out.sent == 2
