"""Why the service has no exactly-once mode on the local stack (docs/reliability.md, "Delivery").

The bundled broker accepts the whole transactional API (init, send offsets, commit, abort), but a
``read_committed`` consumer still reads an aborted transaction's records, so transactions there
would promise what they cannot keep. When this test fails, the broker has learnt to filter aborted
records and an exactly-once mode becomes worth building and testing here.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.kafka_tools import create_topics

pytestmark = pytest.mark.integration


def test_local_broker_shows_aborted_transactions_to_read_committed_consumers(local_stack):
    s = local_stack.updated(**{"topic_prefix": f"x{time.time_ns()}."})
    create_topics(s)
    topic = s.topic("recall.neighbors")
    producer = Producer(s.kafka_client_config() | {"transactional.id": f"txn-{time.time_ns()}"})
    producer.init_transactions(15)
    for value, commit in ((b"committed", True), (b"aborted", False)):
        producer.begin_transaction()
        producer.produce(topic, value, key=value, partition=0)
        producer.flush(10)
        if commit:
            producer.commit_transaction(15)
        else:
            producer.abort_transaction(15)

    consumer = Consumer(s.consumer_config(f"txn-check-{time.time_ns()}") |
                        {"isolation.level": "read_committed", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen: list[bytes] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(seen) < 2:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            seen.append(msg.value())
    consumer.close()
    assert seen == [b"committed", b"aborted"]
