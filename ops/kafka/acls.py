"""Least privilege on an ACL'd Kafka: exactly what the worker's and the recall server's principals need.

The worker reads ``items.new``, ``tags.vocab``, ``items.coded`` and ``sid.digits``; writes ``items.coded``,
``sid.digits``, the three outputs and ``items.dlq``; reads the topics' configs at start (``enrich topics
check`` runs the same check); joins its two consumer groups (``<group>`` for the first stage, ``<group>.publish``
for the second); and, in exactly-once mode, writes transactions under the ``<group>.publish-`` prefix. The
recall server only reads the two recall feeds. Nothing else: no topic creation, no other group.

``enrich topics acls`` prints these as ``kafka-acls`` commands, or creates them with ``--apply`` (run it as an
administrator: ``ENRICH_SASL_USERNAME`` of a principal allowed to alter ACLs).
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.publish_stage import publish_group
from streams.settings import Settings
from streams.topology import (
    ITEMS_CODED,
    ITEMS_DLQ,
    ITEMS_ENRICHED,
    ITEMS_NEW,
    RECALL_NEIGHBORS,
    RECALL_TAGS,
    SID_DIGITS,
    TAGS_VOCAB,
)

WORKER_READS = (ITEMS_NEW, TAGS_VOCAB, ITEMS_CODED, SID_DIGITS)
WORKER_WRITES = (ITEMS_CODED, SID_DIGITS, ITEMS_ENRICHED, RECALL_TAGS, RECALL_NEIGHBORS, ITEMS_DLQ)
RECALL_READS = (RECALL_TAGS, RECALL_NEIGHBORS)


@dataclass(frozen=True)
class Grant:
    """One allow rule: ``principal`` may ``operation`` on the resource (``prefixed``: every name starting so)."""

    principal: str
    operation: str  # READ, WRITE, DESCRIBE_CONFIGS, DESCRIBE
    resource: str  # TOPIC, GROUP, TRANSACTIONAL_ID
    name: str
    prefixed: bool = False

    def command(self, bootstrap: str) -> str:
        kind = {"TOPIC": "--topic", "GROUP": "--group", "TRANSACTIONAL_ID": "--transactional-id"}[self.resource]
        op = self.operation.replace("_", "").title() if self.operation != "DESCRIBE_CONFIGS" else "DescribeConfigs"
        pattern = " --resource-pattern-type prefixed" if self.prefixed else ""
        return (f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config admin.properties --add "
                f"--allow-principal {self.principal} --operation {op} {kind} {self.name}{pattern}")


def worker_grants(settings: Settings, principal: str) -> list[Grant]:
    grants = [Grant(principal, "READ", "TOPIC", settings.topic(t)) for t in WORKER_READS]
    grants += [Grant(principal, "WRITE", "TOPIC", settings.topic(t)) for t in WORKER_WRITES]
    topics = dict.fromkeys(settings.topic(t) for t in (*WORKER_READS, *WORKER_WRITES))
    grants += [Grant(principal, "DESCRIBE_CONFIGS", "TOPIC", t) for t in topics]  # the start-up topic check
    grants += [Grant(principal, "READ", "GROUP", g) for g in (settings.group_id, publish_group(settings))]
    grants.append(Grant(principal, "WRITE", "TRANSACTIONAL_ID", publish_group(settings) + "-", prefixed=True))
    grants.append(Grant(principal, "DESCRIBE", "TRANSACTIONAL_ID", publish_group(settings) + "-", prefixed=True))
    return grants


def recall_grants(settings: Settings, principal: str) -> list[Grant]:
    return [Grant(principal, "READ", "TOPIC", settings.topic(t)) for t in RECALL_READS]


def apply(settings: Settings, grants: list[Grant], timeout_s: float = 30.0) -> None:
    """Create the grants as ACL bindings (the caller's principal must be allowed to alter ACLs)."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    from streams.kafka_tools import admin_client

    bindings = [AclBinding(getattr(ResourceType, g.resource), g.name,
                           ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
                           g.principal, "*", getattr(AclOperation, g.operation), AclPermissionType.ALLOW)
                for g in grants]
    admin = admin_client(settings)  # held until every result is in: a collected client cancels its requests
    for future in admin.create_acls(bindings, request_timeout=timeout_s).values():
        future.result(timeout=timeout_s)
