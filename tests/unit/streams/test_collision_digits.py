"""The collision digits' records: one per (code tuple, item), bounded in size however many items share a
tuple; the releases before's one-record-per-tuple changelog still read; unreadable records refused."""

from __future__ import annotations

import msgpack
import pytest

from enrich.errors import InvalidItem
from streams.collision_digits import DigitStore, TupleDigits, apply_record, digit_record


def store_with_empty_partition() -> DigitStore:
    store = DigitStore.__new__(DigitStore)
    store._partitions = {0: {}}
    return store


def test_a_hundred_thousand_reposts_get_distinct_digits_and_records_that_stay_small():
    store = store_with_empty_partition()
    key = b"rqvae-L3K16-abc:1-2-3"
    item_ids = [f"repost-{n:06d}-" + "x" * 1000 for n in range(100_000)]  # ids of about 1 kB, as reported
    written = [store.assign(0, key, i) for i in item_ids]
    assert [d for d, _ in written] == list(range(100_000))
    assert max(len(k) + len(v) for _, (k, v) in written) < 1100  # the id and a few bytes, never the tuple's list
    assert store.assign(0, key, item_ids[5]) == (5, None)  # a replay keeps its digit and writes nothing


def test_the_changelog_read_back_gives_each_item_its_digit_and_newcomers_the_next():
    state: dict[bytes, TupleDigits] = {}
    for n in range(3):
        apply_record(state, *digit_record(b"v:1-2", f"item-{n}", n))
    apply_record(state, b"v:1-2\x00item-2", None)  # a deleted item's digit is never given again
    assert state[b"v:1-2"].by_item == {"item-0": 0, "item-1": 1} and state[b"v:1-2"].next == 3


def test_the_previous_releases_one_record_per_tuple_is_still_read():
    state: dict[bytes, TupleDigits] = {}
    apply_record(state, b"v:1-2", msgpack.packb({"a": 0, "b": 1}))
    apply_record(state, *digit_record(b"v:1-2", "c", 2))
    assert state[b"v:1-2"].by_item == {"a": 0, "b": 1, "c": 2} and state[b"v:1-2"].next == 3
    apply_record(state, b"v:1-2", None)  # that release's tombstone dropped the whole tuple
    assert b"v:1-2" not in state


@pytest.mark.parametrize(("key", "value", "says"), [
    (None, msgpack.packb(1), "without a key"),
    (b"", msgpack.packb(1), "without a key"),
    (b"v:1\x00item", b"\xc1", "not msgpack"),
    (b"v:1\x00item", msgpack.packb(-1), "not a digit"),
    (b"v:1\x00item", msgpack.packb(True), "not a digit"),
    (b"v:1\x00item", msgpack.packb("3"), "not a digit"),
    (b"v:1\x00\xff\xfe", msgpack.packb(1), "not UTF-8"),
    (b"v:1", msgpack.packb([1, 2]), "must map item ids to digits"),
    (b"v:1", msgpack.packb({"a": "zero"}), "must map item ids to digits"),
])
def test_an_unreadable_record_is_refused_and_changes_nothing(key, value, says):
    state = {b"v:1": TupleDigits({"a": 0}, 1)}
    with pytest.raises(InvalidItem, match=says) as err:
        apply_record(state, key, value)
    assert err.value.reason == "bad_digit_record"
    assert state == {b"v:1": TupleDigits({"a": 0}, 1)}


def test_exactly_once_tells_a_replay_from_a_new_version_and_remembers_it_after_a_reload():
    store = store_with_empty_partition()
    key = b"rq-1:1-2"
    digit, record, replay = store.assign_once(0, key, "a", created_at=100)
    assert (digit, replay) == (0, False) and record == (key + b"\x00a", msgpack.packb([0, 100]))
    assert store.assign_once(0, key, "a", created_at=100) == (0, None, True)  # a replay: published already
    again, newer, replay = store.assign_once(0, key, "a", created_at=200)  # a new version keeps its digit
    assert (again, replay) == (0, False) and newer == (key + b"\x00a", msgpack.packb([0, 200]))
    state: dict[bytes, TupleDigits] = {}
    apply_record(state, *record)
    apply_record(state, *newer)
    assert state[key].by_item == {"a": 0} and state[key].created == {"a": 200}


def test_a_partition_whose_leader_is_away_is_read_again_not_skipped(monkeypatch):
    from streams.kafka_tools import KafkaToolError

    store = DigitStore.__new__(DigitStore)
    store._partitions = {}
    calls = []

    def read(partition: int):  # noqa: ANN202 - the store's reader
        calls.append(partition)
        if len(calls) == 1:
            raise KafkaToolError("Failed to get watermark offsets: Local: Timed out")
        return {b"v:1": TupleDigits({"a": 0}, 1)}, []

    monkeypatch.setattr(store, "_read_partition", read)
    monkeypatch.setattr("streams.collision_digits.time.sleep", lambda _s: None)
    assert store.ensure_loaded(3) == [] and calls == [3, 3]
    assert store.assign(3, b"v:1", "b") == (1, (b"v:1\x00b", msgpack.packb(1)))
