"""`enrich audit`: did every input produce exactly one effect?

Reads ``items.new``, ``items.enriched`` and ``items.dlq`` from the beginning and
accounts for every input record: it is *enriched* (an ``items.enriched`` record
with its item id) or *dead-lettered* (a DLQ record pointing at its offset), else
it is *missing*. Outputs are at-least-once: a replay writes the same record
again under the same key, which compaction folds into one. Such identical
rewrites are counted, not failed. Two records for one item and one set of model
versions that disagree (different semantic ID, tags or embedding) are a
*conflict*: the replay did not rewrite the same thing. Missing inputs and
conflicts make the audit fail.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from enrich.schemas import claimed_id, decode
from ops.settings import ToolSettings
from streams.kafka_tools import Record, read_to_end
from streams.topology import ITEMS_DLQ, ITEMS_ENRICHED, ITEMS_NEW

# The fields a replay must reproduce exactly; enriched_at is a wall-clock stamp and may differ.
EFFECT_FIELDS = ("tags", "embedding", "semantic_id", "kind", "created_at")


@dataclass
class AuditReport:
    inputs: int = 0
    items: int = 0
    enriched: int = 0
    dead_lettered: int = 0
    rewrites: int = 0
    dlq_rewrites: int = 0
    missing: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    dlq_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.conflicts

    def summary(self) -> str:
        lines = [f"inputs {self.inputs} ({self.items} distinct item ids), enriched {self.enriched}, "
                 f"dead-lettered {self.dead_lettered}, identical rewrites {self.rewrites} "
                 f"(+{self.dlq_rewrites} dead letters)",
                 f"dead letters by reason: {json.dumps(self.dlq_by_reason, sort_keys=True)}",
                 f"missing: {len(self.missing)}, conflicting duplicates: {len(self.conflicts)}"]
        lines += [f"  missing {m}" for m in self.missing[:20]]
        lines += [f"  conflict {c}" for c in self.conflicts[:20]]
        lines.append("OK: every input has exactly one effect" if self.ok else "FAILED")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"ok": self.ok}, indent=2, sort_keys=True)


def audit(inputs: list[Record], enriched: list[Record], dlq: list[Record], input_topic: str) -> AuditReport:
    """``input_topic``: the full name of the input topic, as DLQ records name their source."""
    report = AuditReport(inputs=len(inputs))
    first: dict[tuple[str, str], dict] = {}
    copies: Counter[tuple[str, str]] = Counter()
    differing: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in enriched:
        rec = decode(r.value)
        key = (rec["item_id"], json.dumps(rec["versions"], sort_keys=True))
        copies[key] += 1
        seen = first.setdefault(key, rec)
        differing[key] |= {f for f in EFFECT_FIELDS if rec.get(f) != seen.get(f)}
    enriched_ids = {item_id for item_id, _ in first}
    report.enriched = len(first)
    report.rewrites = sum(n - 1 for key, n in copies.items() if not differing[key])
    report.conflicts = sorted(f"{item_id} {versions}: {copies[item_id, versions]} outputs that differ in "
                              f"{', '.join(sorted(fields))}"
                              for (item_id, versions), fields in differing.items() if fields)

    # A replayed bad record is dead-lettered again: one dead letter per source record counts, the rest are rewrites.
    letters: dict[tuple[str, int, int], str] = {}
    for r in dlq:
        d = decode(r.value)
        letters.setdefault((d["source_topic"], d["source_partition"], d["source_offset"]), d["reason"])
    dead = {(p, o) for t, p, o in letters if t == input_topic}
    report.dead_lettered = len(letters)
    report.dlq_rewrites = len(dlq) - len(letters)
    report.dlq_by_reason = dict(sorted(Counter(letters.values()).items()))

    ids = set()
    for r in inputs:
        item_id = claimed_id(r.value)
        if item_id is not None:
            ids.add(item_id)
        if (item_id is not None and item_id in enriched_ids) or (r.partition, r.offset) in dead:
            continue
        report.missing.append(f"{item_id or '(undecodable)'} at {r.topic}[{r.partition}]@{r.offset}")
    report.items = len(ids)
    return report


def run_audit(settings: ToolSettings, timeout_s: float = 120.0) -> AuditReport:
    records = read_to_end(settings, [ITEMS_NEW, ITEMS_ENRICHED, ITEMS_DLQ], timeout_s)
    by_topic: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_topic[r.topic].append(r)
    return audit(by_topic[ITEMS_NEW], by_topic[ITEMS_ENRICHED], by_topic[ITEMS_DLQ],
                 settings.topic(ITEMS_NEW))
