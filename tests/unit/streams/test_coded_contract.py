"""items.coded is a versioned contract between the workers of a rolling update."""

from __future__ import annotations

import msgpack
import pytest

from enrich.errors import InvalidItem, Stop
from streams.agents import CODED_SCHEMA, CodedVersionError, decode_coded

RECORD = {"item_id": "a", "created_at": 1_700_000_000_000, "semantic_id": [1, 2], "tags": []}
NEIGHBOR = {"item_id": "a", "semantic_id": [1, 2]}


def test_this_version_and_the_previous_releases_bare_list_are_read():
    v1 = msgpack.packb({"schema": CODED_SCHEMA, "record": RECORD, "neighbor": NEIGHBOR, "edges": [b"e"]})
    v0 = msgpack.packb([RECORD, NEIGHBOR, [b"e"]])
    assert decode_coded(v1) == decode_coded(v0) == (RECORD, NEIGHBOR, [b"e"])


def test_a_newer_version_stops_the_worker_and_garbage_is_dead_lettered():
    with pytest.raises(CodedVersionError, match="schema 2.*rolling update") as err:
        decode_coded(msgpack.packb({"schema": 2, "payload": "whatever a newer release writes"}))
    assert isinstance(err.value, Stop)
    for raw in (b"\xc1", msgpack.packb({"schema": "one"}), msgpack.packb([1, 2, 3]), None):
        with pytest.raises(InvalidItem) as bad:
            decode_coded(raw)
        assert bad.value.reason == "bad_coded_record"
