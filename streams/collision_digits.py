"""Collision digits: the last element of a semantic ID, unique among items sharing a code tuple.

``items.coded`` is keyed by code tuple, so each tuple lives in one partition and
one worker owns it at a time. The owner keeps ``tuple -> {item id: digit}`` for
its partitions in memory and writes every new digit to the compacted ``sid.digits``
topic, into the partition of the same number, before the input is acknowledged.
A worker that is assigned a partition reads that ``sid.digits`` partition to its
end before it numbers anything there, so an item replayed after a restart or a
rebalance finds its digit again, and a newcomer gets the next free one.

One record per (code tuple, item): key ``<tuple key> NUL <item id>``, value the digit
(a msgpack integer), or in exactly-once mode ``[digit, created_at]``: the item's ``created_at`` tells a replay
of the same input (numbered and published before, in the same transaction) from a new version of the item.
A record's size is bounded by the item id's, however many items share a tuple; the releases
before wrote one record per tuple holding every item's digit, which a tuple of some thousand
reposts made too large for the broker. Those
records (key without NUL, value a map) are still read, so an upgrade keeps every digit.
A tuple's next digit is one past the largest it has given, so a digit once given is
never given again, even after its record was deleted.

This is what a Faust table with a changelog does. It is not one because
faust-streaming 0.15.3 starts its fetcher before it seeks the stream partitions
to their committed offsets when a table has a changelog to recover, and input
records fetched in that window were dropped (six items of sixty in the SIGKILL
end-to-end test); an app without tables never enters that path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import msgpack
from confluent_kafka import KafkaException

from enrich.errors import InvalidItem
from streams.kafka_tools import KafkaToolError, Record, read_to_end
from streams.settings import Settings
from streams.topology import SID_DIGITS

log = logging.getLogger(__name__)

TOPIC = SID_DIGITS
_SEP = b"\x00"  # item ids are printable (enrich.schemas), so never hold it; tuple keys are ASCII
BAD_RECORD = "bad_digit_record"


@dataclass
class TupleDigits:
    """The digits given within one code tuple."""

    by_item: dict[str, int] = field(default_factory=dict)
    next: int = 0
    created: dict[str, int] = field(default_factory=dict)  # created_at of the version published (exactly-once)

    def give(self, item_id: str, digit: int, created_at: int | None = None) -> None:
        self.by_item[item_id] = digit
        self.next = max(self.next, digit + 1)
        if created_at is not None:
            self.created[item_id] = created_at


@dataclass(frozen=True)
class Rejected:
    """A ``sid.digits`` record the store could not read: skipped, to be dead-lettered by the caller."""

    record: Record
    error: InvalidItem


def digit_record(tuple_key: bytes, item_id: str, digit: int, created_at: int | None = None) -> tuple[bytes, bytes]:
    """The (key, value) of one item's digit in ``sid.digits`` (with the version's ``created_at`` in exactly-once
    mode)."""
    value = digit if created_at is None else [digit, created_at]
    return tuple_key + _SEP + item_id.encode(), msgpack.packb(value)


def apply_record(state: dict[bytes, TupleDigits], key: bytes | None, value: bytes | None) -> None:
    """Apply one ``sid.digits`` record to ``state``; ``InvalidItem`` (changing nothing) when it is not one."""
    if not key:
        raise InvalidItem(BAD_RECORD, "a sid.digits record without a key", stage="semantic_id")
    tuple_key, sep, item = key.partition(_SEP)
    if sep:
        try:
            item_id = item.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidItem(BAD_RECORD, f"item id in the key is not UTF-8 ({item[:32].hex()})",
                              stage="semantic_id") from None
        if value is None:  # a deletion: the item's digit is free, but never given again
            if tuple_key in state:
                state[tuple_key].by_item.pop(item_id, None)
            return
        digit = _unpack(value)
        created_at = None
        if isinstance(digit, list) and len(digit) == 2 and _is_digit(digit[1]):
            digit, created_at = digit
        if not _is_digit(digit):
            raise InvalidItem(BAD_RECORD, f"value {digit!r:.60} is not a digit (a non-negative integer)",
                              stage="semantic_id")
        state.setdefault(tuple_key, TupleDigits()).give(item_id, digit, created_at)
        return
    if value is None:  # a release before this one deleted the whole tuple
        state.pop(tuple_key, None)
        return
    legacy = _unpack(value)  # the releases before: the whole tuple in one record
    if not isinstance(legacy, dict) or not all(isinstance(i, str) and _is_digit(d) for i, d in legacy.items()):
        raise InvalidItem(BAD_RECORD, "a tuple's record must map item ids to digits", stage="semantic_id")
    digits = state.setdefault(tuple_key, TupleDigits())
    for item_id, digit in legacy.items():
        digits.give(item_id, digit)


def _unpack(value: bytes) -> object:
    try:
        return msgpack.unpackb(value, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidItem(BAD_RECORD, f"not msgpack: {type(exc).__name__} ({len(value)} B starting "
                          f"{value[:12]!r})", stage="semantic_id") from None


def _is_digit(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class DigitStore:
    """The digits of the ``items.coded`` partitions this worker owns; used by the one thread of the publish
    stage (``streams.publish_stage``), whose consumer's rebalance callbacks call ``forget`` between batches."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._partitions: dict[int, dict[bytes, TupleDigits]] = {}

    def ensure_loaded(self, partition: int) -> list[Rejected]:
        """Read ``sid.digits[partition]`` to its end, once per assignment of the partition. Returns the
        records it could not read (skipped) when it read the partition now, else nothing."""
        if partition in self._partitions:
            return []
        t0 = time.perf_counter()
        state, rejected = self._read_retrying(partition)
        self._partitions[partition] = state
        log.info("collision digits of partition %d loaded: %d code tuples, %d items in %.2fs%s",
                 partition, len(state), sum(len(t.by_item) for t in state.values()),
                 time.perf_counter() - t0, f"; {len(rejected)} unreadable records skipped" if rejected else "")
        return rejected

    def forget(self, partitions: set[int]) -> None:
        """Drop partitions this worker no longer owns; whoever owns them next writes their digits."""
        for p in partitions:
            self._partitions.pop(p, None)

    def assign(self, partition: int, key: bytes, item_id: str) -> tuple[int, tuple[bytes, bytes] | None]:
        """The item's digit within its code tuple (first come, first numbered; an item seen before keeps its
        digit), and the ``sid.digits`` record to write before the input is acknowledged when it is new."""
        digits = self._partitions[partition].setdefault(key, TupleDigits())
        if item_id in digits.by_item:
            return digits.by_item[item_id], None
        digit = digits.next
        digits.give(item_id, digit)
        return digit, digit_record(key, item_id, digit)

    def assign_once(self, partition: int, key: bytes, item_id: str,
                    created_at: int) -> tuple[int, tuple[bytes, bytes] | None, bool]:
        """Exactly-once numbering: as ``assign``, and whether this version of the item (its ``created_at``) was
        numbered, and so published, before: a replay whose outputs are not sent again. The digit record is
        written with each new version."""
        digits = self._partitions[partition].setdefault(key, TupleDigits())
        if item_id in digits.by_item:
            digit = digits.by_item[item_id]
            if digits.created.get(item_id) == created_at:
                return digit, None, True
        else:
            digit = digits.next
        digits.give(item_id, digit, created_at)
        return digit, digit_record(key, item_id, digit, created_at), False

    def _read_retrying(self, partition: int, within_s: float = 120.0) -> tuple[dict[bytes, TupleDigits],
                                                                             list[Rejected]]:
        """``_read_partition``, read again while the broker cannot answer (a leader lost with its broker is
        elected again within seconds); numbering must wait for the whole partition, never start without it."""
        deadline = time.monotonic() + within_s
        delay = 0.5
        while True:
            try:
                return self._read_partition(partition)
            except (KafkaToolError, KafkaException) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("reading sid.digits[%d] failed (%s); reading it again in %.1fs", partition, exc, delay)
                time.sleep(delay)
                delay = min(5.0, delay * 2)

    def _read_partition(self, partition: int) -> tuple[dict[bytes, TupleDigits], list[Rejected]]:
        state: dict[bytes, TupleDigits] = {}
        rejected: list[Rejected] = []
        for r in read_to_end(self._settings, [TOPIC], partition=partition):
            try:
                apply_record(state, r.key, r.value)
            except InvalidItem as err:
                log.warning("skipping unreadable sid.digits record at %d@%d: %s", r.partition, r.offset, err)
                rejected.append(Rejected(r, err))
        return state, rejected
