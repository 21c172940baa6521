"""What real producers send, against a live worker and the real broker: every record shape Kafka can deliver
(null values, null keys, empty values, headers) in batches of every codec librdkafka writes (none, gzip,
snappy, lz4, zstd), on every topic the worker reads, with good items behind them; and many reposts of one
item. Each record is processed or dead-lettered with its reason, the worker never stops, nothing is lost."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import msgpack
import pytest
from cli_runs import cli, http_get, read_until, wait_for
from confluent_kafka import Producer

from corpora import samples
from enrich.schemas import VocabEntry, encode
from ops.local.harness import start_worker
from streams.kafka_tools import read_to_end

pytestmark = pytest.mark.e2e

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def produce(settings, topic: str, records: list[tuple], codec: str = "none") -> None:
    """(key, value[, headers][, partition]) records in one compressed batch per partition; raises unless every
    record was acknowledged."""
    p = Producer({**settings.kafka_client_config(), "compression.type": codec, "linger.ms": 200,
                  "batch.num.messages": 1000})
    failed: list[str] = []

    def report(err, _msg) -> None:  # noqa: ANN001 - librdkafka's callback
        if err is not None:
            failed.append(err.str())

    for key, value, *rest in records:
        headers = rest[0] if rest else None
        where = {"partition": rest[1]} if len(rest) > 1 else {}
        p.produce(settings.topic(topic), value=value, key=key, headers=headers, on_delivery=report, **where)
    assert p.flush(30) == 0 and not failed, failed


def item(item_id: str, text: str = "", seed: int = 0) -> bytes:
    base = samples.sample_items(1, seed=seed)[0]
    return msgpack.packb(base | {"id": item_id, "text": text or base["text"]}, use_bin_type=True)


def test_every_record_shape_in_every_codec_on_every_topic_is_processed_or_dead_lettered(fresh, tmp_path):
    # the worker's own state topics hold junk before it starts: it must read past it
    # (Apache Kafka refuses a record without a key on a compacted topic, so such junk cannot get there:
    # test_a_compacted_topic_refuses_records_without_a_key)
    partitions = range(fresh.partitions)
    produce(fresh, "sid.digits", [(b"v:9-9-9", b"not msgpack", None, p) for p in partitions] +
            [(b"v:1-2-3\x00someone", b"\xc1", None, p) for p in partitions], codec="zstd")
    tag = VocabEntry("compressed-tag", description="a tag in a zstd batch")
    produce(fresh, "tags.vocab", [(b"compressed-tag", encode(tag)), (b"\xff\xfe", None), (b"empty", b"")],
            codec="zstd")
    log = tmp_path / "worker.log"
    worker = start_worker(fresh, log)
    try:
        long_text = "a long description that compresses well. " * 900  # about 36 KB: the reported size
        good: list[str] = []
        for codec in CODECS:
            produce(fresh, "items.new", [
                (f"tombstone-{codec}".encode(), None),
                (None, item(f"no-key-{codec}", long_text)),
                (f"empty-{codec}".encode(), b""),
                (f"headers-{codec}".encode(), item(f"headers-{codec}", seed=1), [("trace", b"abc"), ("n", None)]),
            ], codec=codec)
            good += [f"no-key-{codec}", f"headers-{codec}"]
        got = read_until(fresh, {"items.enriched": len(good)}, 180, topics=["items.enriched"])
        assert {k.decode() for k, _ in got["items.enriched"]} == set(good), log.read_text()[-3000:]

        # the worker's internal topic, compressed and with junk: its own records again (a replay), a
        # tombstone and a record without a key
        coded = [r for r in read_to_end(fresh, ["items.coded"]) if r.value]
        assert len(coded) == len(good)
        produce(fresh, "items.coded", [(r.key, r.value, None, r.partition) for r in coded] +
                [(b"v:1-2-3", None, None, 0), (None, coded[0].value, None, 0)], codec="lz4")
        again = read_until(fresh, {"items.enriched": 2 * len(good)}, 120, topics=["items.enriched"],
                           records=True)["items.enriched"]
        assert len(again) == 2 * len(good), log.read_text()[-3000:]
        sids: dict[str, set] = {}
        for k, v in again:
            sids.setdefault(k.decode(), set()).add(tuple(v["semantic_id"]))
        assert all(len(s) == 1 for s in sids.values())  # a replay keeps its digit

        want = Counter({("not_msgpack", "items.new"): 2 * len(CODECS), ("bad_tag", "tags.vocab"): 1,
                        ("not_msgpack", "tags.vocab"): 1, ("bad_coded_record", "items.coded"): 2})
        # the digits' junk: dead-lettered when the owner of its partition reads it, before its first record
        loaded = {r.partition for r in coded} | {0}
        want[("bad_digit_record", "sid.digits")] = 2 * len(loaded)
        letters = read_until(fresh, {"items.dlq": sum(want.values())}, 60, topics=["items.dlq"],
                             records=True)["items.dlq"]
        assert Counter((d["reason"], d["source_topic"][len(fresh.topic_prefix):]) for _, d in letters) == want
        tombstones = [d for _, d in letters if d["key"] and d["key"].startswith(b"tombstone-")]
        assert all("tombstone" in d["detail"] for d in tombstones) and len(tombstones) == len(CODECS)
        ready = json.loads(http_get(fresh.web_port, "/readyz")[1])
        assert ready["ready"] and ready["waiting_for"] == [] and ready["vocab_tags"] == 31
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    assert code == 0, log.read_text()[-3000:]
    res = cli(fresh, "audit", "--json", str(tmp_path / "audit.json"))
    report = json.loads((tmp_path / "audit.json").read_text())
    assert res.returncode == 0 and report["missing"] == [] and report["conflicts"] == [], res.stdout


@pytest.mark.parametrize("topic", ["tags.vocab", "sid.digits", "items.enriched", "recall.neighbors"])
def test_a_compacted_topic_refuses_records_without_a_key(fresh, topic):
    """What the docs tell producers: Apache Kafka refuses a keyless record on a compacted topic (the bundled
    Tansu took it), so the readers of those topics never see one from this broker."""
    p = Producer(fresh.kafka_client_config())
    errors: list[str] = []
    p.produce(fresh.topic(topic), value=b"x", key=None, on_delivery=lambda err, _m: errors.append(err and err.str()))
    p.flush(30)
    assert errors and errors[0] is not None and "validate" in errors[0].lower(), errors


def test_two_thousand_reposts_of_one_item_all_come_out_with_distinct_digits(fresh, tmp_path):
    """Items with the same content lost some of them: the tuple's one digits record, every item's id in it, grew
    past the producer's limit and the batch was dropped unacknowledged. With the producer's limit at its least
    (ENRICH_MAX_MESSAGE_BYTES=64 KiB, so 128 KiB a request) and 250-character ids, that record passed it at
    about 500 items; the digits now take a record per item."""
    n = 2000
    template = samples.sample_items(1, seed=11)[0]
    ids = [f"repost-{k:05d}-" + "x" * 237 for k in range(n)]
    produce(fresh, "items.new", [(i.encode(), msgpack.packb(template | {"id": i}, use_bin_type=True))
                                 for i in ids], codec="lz4")
    log = tmp_path / "worker.log"
    worker = start_worker(fresh.updated(batch_size=64, max_message_bytes=64 * 1024), log)
    try:
        got = read_until(fresh, {"items.enriched": n}, 300, topics=["items.enriched"])["items.enriched"]
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    assert code == 0, log.read_text()[-3000:]
    sids = {k.decode(): tuple(v["semantic_id"]) for k, v in got}
    assert set(sids) == set(ids), f"{n - len(sids)} missing"
    assert len({s[:-1] for s in sids.values()}) == 1  # one code tuple
    assert sorted(s[-1] for s in sids.values()) == list(range(n))  # every digit once
    res = cli(fresh, "audit", "--json", str(tmp_path / "audit.json"))
    report = json.loads((tmp_path / "audit.json").read_text())
    assert res.returncode == 0 and report["missing"] == [] and report["enriched"] == n, res.stdout


def test_items_keep_flowing_while_a_flood_of_long_tags_is_embedded(fresh, tmp_path):
    """5,000 tags with 2,000-character descriptions stopped enrichment for over 300 s, and a restarted worker
    was unready for 443 s. Items now flow while the feed embeds the tags, each once."""
    log = tmp_path / "worker.log"
    worker = start_worker(fresh.updated(batch_size=4), log)
    try:
        wait_for(lambda: http_get(fresh.web_port, "/readyz")[0] == 200, 90, "the worker ready", log)
        description = ("a very long description of a tag, repeated until it is long. " * 33)[:2000]
        produce(fresh, "tags.vocab", [(f"flood-{k}".encode(), encode(VocabEntry(f"flood-{k}", description=description)))
                                      for k in range(5000)], codec="lz4")
        waiting = wait_for(lambda: (lambda r: r if r["vocab_pending"] > 0 else None)(
            json.loads(http_get(fresh.web_port, "/readyz")[1])), 30, "the flood seen by the feed", log)
        t0 = time.monotonic()
        produce(fresh, "items.new", [(f"during-{k}".encode(), item(f"during-{k}", seed=k)) for k in range(8)])
        got = read_until(fresh, {"items.enriched": 8}, 120, topics=["items.enriched"])["items.enriched"]
        took = time.monotonic() - t0
        after = json.loads(http_get(fresh.web_port, "/readyz")[1])
        print(f"8 items out in {took:.1f}s while {after['vocab_pending']} of {after['vocab_tags']} tags wait")
        assert len(got) == 8, log.read_text()[-3000:]
        assert after["vocab_pending"] > 0  # the items did not wait for the whole flood
        assert any("tags to embed" in w for w in waiting["waiting_for"])
        assert waiting["ready"]  # loading tags does not make the worker unready
        done = wait_for(lambda: (lambda r: r if r["vocab_tags"] == 5030 and not r["vocab_pending"] else None)(
            json.loads(http_get(fresh.web_port, "/readyz")[1])), 300, "the whole flood embedded", log)
        print(f"the flood embedded {time.monotonic() - t0:.1f}s after the items were published")
        assert done["waiting_for"] == []
        metrics = http_get(fresh.web_port, "/metrics")[1]
        assert "enrich_vocab_pending_tags 0.0" in metrics
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    assert code == 0, log.read_text()[-3000:]
