"""The worker's two stages, written down once: which topic each agent reads and which it writes.

::

    items.new ──enrich_items──> items.coded ──assign_semantic_ids──> items.enriched
        │                            │                                recall.tags, recall.neighbors
        └──> items.dlq <─────────────┘                                sid.digits (the digits' changelog)
    tags.vocab ──(every worker reads all of it: streams.vocab_feed)

``items.coded`` is keyed by code tuple, so one worker owns a tuple and numbers its collisions
(``streams.collision_digits``); the first stage may run on any worker. The app's agents and topics are
built from ``STAGES`` (``streams.agents``), and a test holds the two to each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    agent: str
    reads: str
    writes: tuple[str, ...]


STAGES = (
    Stage("enrich_items", reads="items.new", writes=("items.coded", "items.dlq")),
    Stage("assign_semantic_ids", reads="items.coded",
          writes=("items.enriched", "recall.neighbors", "recall.tags", "items.dlq", "sid.digits")),
)
VOCABULARY = "tags.vocab"  # read whole by every worker, outside the consumer group
STREAM_TOPICS = tuple(dict.fromkeys(t for s in STAGES for t in (s.reads, *s.writes)))
