import msgpack
import numpy as np
import pytest

from corpora import samples
from enrich.errors import InvalidItem
from enrich.schemas import (
    DeadLetter,
    EnrichedItem,
    ModelVersions,
    NeighborRecord,
    TagGrade,
    TagRecall,
    VocabEntry,
    decode,
    decode_item,
    decode_vocab,
    encode,
    vector_bytes,
    vector_from_bytes,
)

V = ModelVersions("e1", "t1", "c1")


@pytest.mark.parametrize("record", [
    EnrichedItem("a", "article", 1, 2, [TagGrade("x", 2, 0.9)], vector_bytes(np.ones(4)), 4, [1, 2], V),
    TagRecall("x", "a", 1, 0.5, 1, V),
    NeighborRecord("a", [1, 2, 3], vector_bytes(np.arange(3)), 3, 1, V),
    DeadLetter("not_msgpack", "decode", "d", "items.new", 0, 5, b"\x00", b"k", 9),
    VocabEntry("cats", "animals", "felines", False, 3),
])
def test_every_schema_round_trips_with_version(record):
    back = decode(encode(record))
    assert back["schema"] == 1
    for k, v in record.__dict__.items():
        if k == "versions":
            assert back[k] == v.__dict__
        elif k == "tags":
            assert back[k] == [t.__dict__ for t in v]
        else:
            assert back[k] == v


def test_vector_bytes_are_float32_little_endian():
    v = np.array([0.5, -1.25], np.float32)
    assert vector_bytes(v) == b"\x00\x00\x00?\x00\x00\xa0\xbf"
    np.testing.assert_array_equal(vector_from_bytes(vector_bytes(v)), v)


def test_valid_sample_items_decode():
    for raw in samples.sample_items(12):
        item = decode_item(msgpack.packb(raw, use_bin_type=True))
        assert item.id == raw["id"] and len(item.images) == len(raw["images"])


@pytest.mark.parametrize("reason,raw", samples.malformed_events())
def test_malformed_events_get_their_specific_reason(reason, raw):
    try:
        decode_item(raw)
    except InvalidItem as err:
        assert err.reason == reason
    else:
        assert reason == "image_undecodable"  # only detectable when decoding the image


def test_bytes_that_are_not_msgpack_get_a_reason_that_says_what_they_start_with():
    with pytest.raises(InvalidItem) as e:
        decode_item(b"\xc1{\"id\": 1}")  # 0xc1 is the one byte msgpack never uses: FormatError, no message
    assert e.value.reason == "not_msgpack"
    assert str(e.value.detail).startswith("FormatError: not a msgpack value (10 B starting b'\\xc1{")


def test_bool_is_not_an_int_timestamp():
    raw = msgpack.packb({"schema": 1, "id": "a", "kind": "article", "title": "t", "created_at": True})
    with pytest.raises(InvalidItem) as e:
        decode_item(raw)
    assert e.value.reason == "wrong_type"


def test_vocab_requires_tag():
    with pytest.raises(InvalidItem):
        decode_vocab(msgpack.packb({"schema": 1, "tag": "  "}))
    assert decode_vocab(msgpack.packb({"schema": 1, "tag": " cats "})).tag == "cats"
