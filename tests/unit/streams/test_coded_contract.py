"""items.coded is a versioned contract between the workers of a rolling update."""

from __future__ import annotations

import msgpack
import pytest

from enrich.errors import InvalidItem, Stop
from enrich.schemas import CODED_SCHEMA, CodedItem, CodedVersionError, decode_coded

RECORD = {"item_id": "a", "created_at": 1_700_000_000_000, "semantic_id": [1, 2], "tags": [],
          "versions": {"codebook": "rq-1"}}
NEIGHBOR = {"item_id": "a", "semantic_id": [1, 2]}
KEY = b"rq-1:1-2"


def test_this_version_and_the_previous_releases_bare_list_are_read():
    v1 = msgpack.packb({"schema": CODED_SCHEMA, "record": RECORD, "neighbor": NEIGHBOR, "edges": [b"e"]})
    v0 = msgpack.packb([RECORD, NEIGHBOR, [b"e"]])
    assert decode_coded(v1, KEY) == decode_coded(v0, KEY) == CodedItem(RECORD, NEIGHBOR, [b"e"])
    assert decode_coded(CodedItem(RECORD, NEIGHBOR, [b"e"]).encode(), KEY).key == KEY


def test_finishing_appends_the_digit_to_both_records_and_keeps_fields_it_does_not_know():
    coded = CodedItem(RECORD | {"added_by_a_newer_release": 1}, NEIGHBOR, [b"e"])
    done = coded.finish(7)
    assert msgpack.unpackb(done.enriched)["semantic_id"] == [1, 2, 7]
    assert msgpack.unpackb(done.enriched)["added_by_a_newer_release"] == 1
    assert msgpack.unpackb(done.neighbor)["semantic_id"] == [1, 2, 7] and done.edges == [b"e"]
    assert (done.item_id, done.created_at) == ("a", RECORD["created_at"])


def test_a_newer_version_stops_the_worker_and_garbage_or_a_wrong_key_is_dead_lettered():
    with pytest.raises(CodedVersionError, match="schema 2.*rolling update") as err:
        decode_coded(msgpack.packb({"schema": 2, "payload": "whatever a newer release writes"}), KEY)
    assert isinstance(err.value, Stop)
    good = CodedItem(RECORD, NEIGHBOR, []).encode()
    for raw, key in ((b"\xc1", KEY), (msgpack.packb({"schema": "one"}), KEY), (msgpack.packb([1, 2, 3]), KEY),
                     (None, KEY), (good, None), (good, b"rq-1:9-9")):
        with pytest.raises(InvalidItem) as bad:
            decode_coded(raw, key)
        assert bad.value.reason == "bad_coded_record"
