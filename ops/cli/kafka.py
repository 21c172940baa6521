"""`enrich topics`, `publish`, `tail`, `backfill`, `audit`: the topics, what is on them, and replaying them."""

from __future__ import annotations

import argparse
from pathlib import Path

from enrich.errors import EnrichError
from enrich.schemas import encode_item
from ops.cli.console import say
from ops.settings import ToolSettings
from streams.topology import ITEMS_NEW


def cmd_topics(s: ToolSettings, a: argparse.Namespace) -> int:
    from ops.kafka.clients import create_topics
    from streams.kafka_tools import topic_drift
    from streams.topology import topic_specs

    if a.action == "acls":
        from ops.kafka.acls import apply, recall_grants, worker_grants

        if not a.principal:
            raise EnrichError("acls needs --principal User:NAME (the workers' principal); --recall-principal adds "
                              "the recall server's")
        grants = worker_grants(s, a.principal)
        grants += recall_grants(s, a.recall_principal) if a.recall_principal else []
        if a.apply:
            apply(s, grants)
            say(f"created {len(grants)} ACLs")
        else:
            for g in grants:
                say(g.command(s.broker))
        return 0
    if a.action == "create":
        created = create_topics(s)
        say(f"created: {', '.join(created) or 'nothing (all exist)'}")
        return 0
    if a.action == "spec":
        for t in topic_specs(s):
            configs = ", ".join(f"{k}={v}" for k, v in t.configs().items())
            say(f"{s.topic(t.name)}: {t.partitions} partitions, replication {t.replication_factor}, {configs}  "
                 f"# {t.what}")
        return 0
    drift = topic_drift(s)
    for line in drift:
        say(f"drift: {line}")
    say(f"{len(drift)} differences from the topic specification" if drift else
         "every topic matches the specification")
    return 1 if drift else 0


def cmd_publish(s: ToolSettings, a: argparse.Namespace) -> int:

    from corpora import samples
    from ops.kafka.clients import publish

    items = samples.sample_items(a.items, seed=a.seed)
    records = [(i["id"].encode(), encode_item(i)) for i in items]
    if a.malformed:
        records += [(f"bad-{n}".encode(), raw) for n, (_, raw) in enumerate(samples.malformed_events())]
    if a.fuzz:
        records += [(f"fuzz-{n}".encode(), raw) for n, (_, raw) in enumerate(samples.fuzz_events(a.fuzz, a.seed))]
    n = publish(s, ITEMS_NEW, records)
    say(f"published {n} events to {s.topic(ITEMS_NEW)}")
    return 0


def cmd_tail(s: ToolSettings, a: argparse.Namespace) -> int:
    import time

    from ops.kafka.clients import TopicReader
    from ops.kafka.tail import known_topic, tail

    try:
        topic = known_topic(a.topic)
    except ValueError as exc:
        raise EnrichError(str(exc)) from None
    reader = TopicReader(s, [topic], from_beginning=a.from_beginning)
    deadline = time.monotonic() + a.idle_s if a.idle_s else None

    def records():  # noqa: ANN202 - a generator of Records
        nonlocal deadline
        while deadline is None or time.monotonic() < deadline:
            got = reader.poll(0.5)
            if got and a.idle_s:
                deadline = time.monotonic() + a.idle_s
            yield from got

    try:
        shown = tail(records(), a.key, a.max, say, a.json)
    finally:
        reader.close()
    if not a.json:
        say(f"-- {shown} records of {s.topic(topic)}")
    return 0


def cmd_backfill(s: ToolSettings, a: argparse.Namespace) -> int:
    from ops.kafka.backfill import backfill

    r = backfill(s, a.to_prefix, source=a.source, rate=a.rate, batch=a.batch, max_items=a.max_items,
                 progress=not a.quiet)
    done = "up to the end the topic had when this run began" if not a.max_items or r.copied < a.max_items else \
        "stopped at --max-items; rerun to resume"
    say(f"copied {r.copied} records in {r.seconds:.1f}s ({r.already_done} copied by earlier runs; {done})")
    return 0


def cmd_audit(s: ToolSettings, a: argparse.Namespace) -> int:
    from ops.kafka.audit import run_audit

    report = run_audit(s, timeout_s=a.timeout)
    say(report.summary())
    if a.json:
        a.json.write_text(report.to_json() + "\n")
    return 0 if report.ok else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("topics", help="create the topics, print their specification, check the cluster against it "
                                      "(exit 1 on drift), or list the ACLs the workers need")
    t.add_argument("action", choices=["create", "spec", "check", "acls"])
    t.add_argument("--principal", help="acls: the workers' principal, e.g. User:enrich")
    t.add_argument("--recall-principal", help="acls: the recall server's principal (reads the recall feeds only)")
    t.add_argument("--apply", action="store_true", help="acls: create them (as an administrator) instead of "
                                                        "printing kafka-acls commands")
    t.set_defaults(fn=cmd_topics)
    pb = sub.add_parser("publish", help="publish sample items to items.new")
    pb.add_argument("--items", type=int, default=30)
    pb.add_argument("--seed", type=int, default=0)
    pb.add_argument("--malformed", action="store_true", help="also publish one malformed event of each kind")
    pb.add_argument("--fuzz", type=int, default=0, metavar="N", help="also publish N randomly malformed events")
    pb.set_defaults(fn=cmd_publish)
    tl = sub.add_parser("tail", help="print the decoded records of one of the service's topics (msgpack decoded, "
                                     "vectors summarised, images as format and size)")
    tl.add_argument("topic", help="items.new, items.enriched, recall.tags, recall.neighbors, items.dlq, tags.vocab, "
                                  "items.coded or sid.digits (under ENRICH_TOPIC_PREFIX)")
    tl.add_argument("--from-beginning", action="store_true", help="from the oldest record (default: new ones only)")
    tl.add_argument("--key", help="only the records of this key (an item id; a tag on tags.vocab)")
    tl.add_argument("--json", action="store_true", help="one JSON object per line")
    tl.add_argument("--max", type=int, default=0, help="stop after this many records (default: follow for ever)")
    tl.add_argument("--idle-s", type=float, default=0.0, help="stop after this many seconds without a record")
    tl.set_defaults(fn=cmd_tail)
    bf = sub.add_parser("backfill", help="replay an input topic into a shadow deployment (rate-limited, resumable)")
    bf.add_argument("--to-prefix", required=True, help="topic prefix of the shadow deployment, e.g. 'shadow-v2.'")
    bf.add_argument("--source", default=ITEMS_NEW, help="topic to replay (under ENRICH_TOPIC_PREFIX)")
    bf.add_argument("--rate", type=float, default=0.0, help="items per second at most (0: unlimited)")
    bf.add_argument("--batch", type=int, default=500, help="records per acknowledged, committed step")
    bf.add_argument("--max-items", type=int, default=0, help="stop after this many (0: to the end); rerun resumes")
    bf.add_argument("--quiet", action="store_true", help="no progress bar")
    bf.set_defaults(fn=cmd_backfill)
    au = sub.add_parser("audit", help="check every input has exactly one effect (enriched or dead-lettered)")
    au.add_argument("--json", type=Path, help="also write the report as JSON")
    au.add_argument("--timeout", type=float, default=120.0, help="seconds to read the topics to their end")
    au.set_defaults(fn=cmd_audit)
