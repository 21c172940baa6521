"""Collision digits: the last element of a semantic ID, unique among items sharing a code tuple.

``items.coded`` is keyed by code tuple, so each tuple lives in one partition and
one worker owns it at a time. The owner keeps ``tuple -> {item id: digit}`` for
its partitions in memory and writes every change to the compacted ``sid.digits``
topic, into the partition of the same number, before the input is acknowledged.
A worker that is assigned a partition reads that ``sid.digits`` partition to its
end before it numbers anything there, so an item replayed after a restart or a
rebalance finds its digit again, and a newcomer gets the next free one.

This is what a Faust table with a changelog does. It is not one because
faust-streaming 0.15.3 starts its fetcher before it seeks the stream partitions
to their committed offsets when a table has a changelog to recover, and input
records fetched in that window were dropped (six items of sixty in the SIGKILL
end-to-end test); an app without tables never enters that path.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgpack

from enrich.settings import Settings
from enrich.vectors.semantic_ids import assign_digit
from streams.kafka_tools import read_to_end

log = logging.getLogger(__name__)

Digits = dict[str, int]


class DigitStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._partitions: dict[int, dict[bytes, Digits]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        # Bumped on every revocation: a batch numbered under an older generation must not be published,
        # because the partition's next owner (maybe this worker, reloaded) numbers it again.
        self.generation = 0

    async def ensure_loaded(self, partition: int) -> None:
        """Read ``sid.digits[partition]`` to its end, once per assignment of the partition."""
        if partition in self._partitions:
            return
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            if partition not in self._partitions:
                t0 = time.perf_counter()
                state = await asyncio.to_thread(self._read_partition, partition)
                self._partitions[partition] = state
                log.info("collision digits of partition %d loaded: %d code tuples in %.2fs",
                         partition, len(state), time.perf_counter() - t0)

    def forget(self, partitions: set[int]) -> None:
        """Drop partitions this worker no longer owns; whoever owns them next writes their digits."""
        self.generation += 1
        for p in partitions:
            self._partitions.pop(p, None)

    def assign(self, partition: int, key: bytes, item_id: str) -> tuple[int, Digits | None]:
        """The item's digit within its code tuple, and the tuple's new mapping when it changed
        (to be written with :func:`encode_digits` before the input is acknowledged)."""
        tuples = self._partitions[partition]
        assigned = tuples.setdefault(key, {})
        digit, changed = assign_digit(assigned, item_id)
        return digit, assigned if changed else None

    def _read_partition(self, partition: int) -> dict[bytes, Digits]:
        state: dict[bytes, Digits] = {}
        for r in read_to_end(self._settings, ["sid.digits"], partition=partition):
            if r.value is None:
                state.pop(r.key, None)
            else:
                state[r.key] = decode_digits(r.value)
        return state


def encode_digits(assigned: Digits) -> bytes:
    return msgpack.packb(assigned, use_bin_type=True)


def decode_digits(raw: bytes) -> Digits:
    return msgpack.unpackb(raw, raw=False)
