"""The audit's accounting: every input enriched or dead-lettered, rewrites counted, conflicts failed."""

import msgpack

from enrich.schemas import DeadLetter, EnrichedItem, ModelVersions, TagGrade, encode
from ops.kafka.audit import audit
from streams.kafka_tools import Record

TOPIC = "p.items.new"
V1 = ModelVersions("emb-1", "tag-1", "rqvae-1")


def item(offset: int, item_id: str) -> Record:
    return Record("items.new", 0, offset, item_id.encode(), msgpack.packb({"id": item_id, "title": "t"}))


def enriched(item_id: str, sid: list[int], enriched_at: int = 1, versions: ModelVersions = V1) -> Record:
    rec = EnrichedItem(item_id=item_id, kind="text", created_at=0, enriched_at=enriched_at,
                       tags=[TagGrade("cats", 2, 0.9)], embedding=b"\0" * 8, dim=2, semantic_id=sid,
                       versions=versions)
    return Record("items.enriched", 0, 0, item_id.encode(), encode(rec))


def dead(offset: int, reason: str, topic: str = TOPIC) -> Record:
    d = DeadLetter(reason=reason, stage="decode", detail="", source_topic=topic, source_partition=0,
                   source_offset=offset, original=b"x", key=None, failed_at=0)
    return Record("items.dlq", 0, 0, None, encode(d))


def test_every_input_accounted_for_and_rewrites_are_not_failures():
    inputs = [item(0, "a"), item(1, "b"), Record("items.new", 0, 2, None, b"\xc1garbage")]
    # "a" was replayed after a crash: the same output twice (only the wall-clock stamp differs).
    outputs = [enriched("a", [1, 2, 3, 0]), enriched("a", [1, 2, 3, 0], enriched_at=9), enriched("b", [4, 5, 6, 0])]
    # The bad record was replayed too: dead-lettered twice, counted once.
    report = audit(inputs, outputs, [dead(2, "not_msgpack"), dead(2, "not_msgpack")], TOPIC)
    assert report.ok, report.summary()
    assert (report.inputs, report.items, report.enriched, report.rewrites) == (3, 2, 2, 1)
    assert (report.dead_lettered, report.dlq_rewrites, report.dlq_by_reason) == (1, 1, {"not_msgpack": 1})


def test_missing_inputs_fail_the_audit():
    # A DLQ record of another topic does not account for this topic's offset 1.
    report = audit([item(0, "a"), item(1, "b")], [enriched("a", [1, 2, 3, 0])], [dead(1, "bad", "other.items.new")],
                   TOPIC)
    assert not report.ok
    assert report.missing == ["b at items.new[0]@1"]


def test_conflicting_duplicates_fail_but_a_new_model_version_does_not():
    v2 = ModelVersions("emb-2", "tag-1", "rqvae-1")
    report = audit([item(0, "a")], [enriched("a", [1, 2, 3, 0]), enriched("a", [9, 9, 9, 0], versions=v2)], [], TOPIC)
    assert report.ok, report.summary()
    report = audit([item(0, "a")], [enriched("a", [1, 2, 3, 0]), enriched("a", [1, 2, 3, 1])], [], TOPIC)
    assert not report.ok and len(report.conflicts) == 1 and "FAILED" in report.summary()
    assert report.conflicts[0].endswith("2 outputs that differ in semantic_id")
