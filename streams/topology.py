"""The worker's two stages, written down once: which topic each agent reads and which it writes.

::

    items.new ──enrich_items──> items.coded ──assign_semantic_ids──> items.enriched
        │                            │                                recall.tags, recall.neighbors
        └──> items.dlq <─────────────┘                                sid.digits (the digits' changelog)
    tags.vocab ──(every worker reads all of it: streams.vocab_feed)

``items.coded`` is keyed by code tuple, so one worker owns a tuple and numbers its collisions
(``streams.collision_digits``); the first stage may run on any worker. The app's agents and topics are
built from ``STAGES`` (``streams.agents``), and a test holds the two to each other.

The topics themselves, specified once (``TOPIC_SPEC``): the worker, the tools, the backfill and the chart
use this list. Durability is the cluster's default: replication 3 with ``min.insync.replicas`` 2, so the
workers' ``acks=all`` survives a broker loss (the local stack sets 1 and 1). Topics the service reads from
their beginning are compacted (latest record per key) or keep records for ``ENRICH_RETENTION_MS``, which
bounds how far back a backfill can replay ``items.new``.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.settings import Settings

# Every topic's name (without the deployment's prefix): the code names topics by these.
ITEMS_NEW = "items.new"
ITEMS_CODED = "items.coded"
ITEMS_ENRICHED = "items.enriched"
ITEMS_DLQ = "items.dlq"
RECALL_TAGS = "recall.tags"
RECALL_NEIGHBORS = "recall.neighbors"
TAGS_VOCAB = "tags.vocab"  # read whole by every worker, outside the consumer group
SID_DIGITS = "sid.digits"


@dataclass(frozen=True)
class Stage:
    agent: str
    reads: str
    writes: tuple[str, ...]


STAGES = (
    Stage("enrich_items", reads=ITEMS_NEW, writes=(ITEMS_CODED, ITEMS_DLQ)),
    Stage("assign_semantic_ids", reads=ITEMS_CODED,
          writes=(ITEMS_ENRICHED, RECALL_NEIGHBORS, RECALL_TAGS, ITEMS_DLQ, SID_DIGITS)),
)

STREAM_TOPICS = tuple(dict.fromkeys(t for s in STAGES for t in (s.reads, *s.writes)))


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the deployment's prefix
    what: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    compacted: bool
    retention_ms: int  # -1: for ever (compacted topics keep the latest record per key for ever)
    max_message_bytes: int

    def configs(self) -> dict[str, str]:
        """The topic configs this service sets (and `enrich topics check` compares)."""
        out = {"cleanup.policy": "compact" if self.compacted else "delete",
               "min.insync.replicas": str(self.min_insync_replicas),
               "max.message.bytes": str(self.max_message_bytes)}
        if not self.compacted:
            out["retention.ms"] = str(self.retention_ms)
        return out


# name, what it holds, compacted, one partition
_TOPICS = (
    (ITEMS_NEW, "input: new items, keyed by item id", False, False),
    (ITEMS_ENRICHED, "output: the full enrichment of each item", True, False),
    (RECALL_TAGS, "output: (tag, item) edges for the tag index, keyed by item id", False, False),
    (RECALL_NEIGHBORS, "output: vectors and semantic IDs for the neighbour index", True, False),
    (ITEMS_DLQ, "dead letters: inputs that could not be enriched, with the reason", False, False),
    (TAGS_VOCAB, "control: the open tag vocabulary, keyed by tag (every worker reads all of it)", True, True),
    (ITEMS_CODED, "internal: enriched items keyed by code tuple, on their way to the digit stage", False, False),
    (SID_DIGITS, "internal: changelog of the collision digits, one partition per items.coded partition",
     True, False),
)
TOPIC_NAMES = tuple(name for name, *_ in _TOPICS)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    return [TopicSpec(name=name, what=what, partitions=1 if single else settings.partitions,
                      replication_factor=settings.replication_factor,
                      min_insync_replicas=settings.min_insync_replicas, compacted=compacted,
                      retention_ms=-1 if compacted else settings.retention_ms,
                      max_message_bytes=settings.max_message_bytes)
            for name, what, compacted, single in _TOPICS]
