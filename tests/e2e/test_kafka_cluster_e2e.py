"""A worker on a three-node Apache Kafka cluster (replication 3, min.insync.replicas 2, as the chart's defaults)
while brokers fail: a SIGKILLed broker that leads the input and output partitions, then two brokers down at
once (no controller quorum: writes must wait, not be lost or reported as done). Nothing is lost, nothing
conflicts, the worker says what it waits for, and `enrich audit` is clean."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_runs import cli, http_get, read_until, wait_for
from confluent_kafka.admin import AdminClient

from corpora import samples
from ops.local.harness import start_worker
from ops.local.kafka import KafkaCluster, start_kafka
from ops.local.process import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # broker restarts and fault waves take minutes


@pytest.fixture(scope="module")
def cluster(local_stack, tmp_path_factory) -> KafkaCluster:
    c = start_kafka(local_stack.kafka_cache_dir, tmp_path_factory.mktemp("kafka3"), nodes=3)
    yield c
    c.stop()


@pytest.fixture
def on_cluster(cluster, local_stack):
    """The session's Triton, this cluster, fresh topics with the production replication."""
    tag = f"k{time.time_ns()}."
    s = local_stack.updated(broker=cluster.bootstrap, replication_factor=3, min_insync_replicas=2,
                            topic_prefix=tag, group_id=f"g-{tag}", web_port=free_port(), batch_size=4,
                            lag_interval_s=0.5)
    assert cli(s, "topics", "create").returncode == 0
    assert cli(s, "vocab", "load").returncode == 0
    return s


def leaders(settings, topics: list[str]) -> Counter:
    md = AdminClient(settings.kafka_client_config()).list_topics(timeout=10)
    return Counter(p.leader for t in topics for p in md.topics[settings.topic(t)].partitions.values())


def ids(seed: int, n: int) -> set[str]:
    return {i["id"] for i in samples.sample_items(n, seed=seed)}


class Worker:
    """One worker, started again if it exits (each start counted): what a Deployment does."""

    def __init__(self, settings, log: Path) -> None:
        self.settings, self.log, self.starts = settings, log, 0
        self.proc: subprocess.Popen | None = None
        self.ensure()

    def ensure(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = start_worker(self.settings, self.log)
            self.starts += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(90)


def test_broker_failures_lose_nothing_and_writes_wait_for_a_quorum(cluster, on_cluster, tmp_path):
    s = on_cluster
    worker = Worker(s, tmp_path / "worker.log")
    faults: Counter = Counter()
    waited: list[str] = []
    try:
        wait_for(lambda: http_get(s.web_port, "/readyz")[0] == 200, 120, "the worker ready", worker.log)
        # 1. The node leading most input and output partitions dies while items flow, and comes back.
        assert cli(s, "publish", "--items", "40", "--seed", "301").returncode == 0
        lead = leaders(s, ["items.new", "items.enriched", "items.coded"]).most_common(1)[0][0]
        node = next(n for n in cluster.nodes if n.node_id == lead)
        cluster.kill(node)
        faults["broker_sigkill"] += 1
        assert cli(s, "publish", "--items", "40", "--seed", "302").returncode == 0  # two of three take writes
        expected = ids(301, 40) | ids(302, 40)
        got = read_until(s, {"items.enriched": len(expected)}, 180, topics=["items.enriched"])
        assert {k.decode() for k, _ in got["items.enriched"]} == expected, worker.log.read_text()[-3000:]
        cluster.restart(node)
        cluster.wait_brokers(3)

        # 2. Two of three down: no quorum, no ISR change, so no write is acknowledged until they return.
        assert cli(s, "publish", "--items", "40", "--seed", "303").returncode == 0
        down = [n for n in cluster.nodes if n.node_id != lead][:2]
        for n in down:
            cluster.kill(n)
            faults["broker_sigkill"] += 1
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            worker.ensure()
            status, body = http_get(s.web_port, "/readyz")
            if status:
                waited += [w for w in json.loads(body).get("waiting_for", []) if "broker" in w]
            time.sleep(1)
        for n in down:
            cluster.restart(n)
        cluster.wait_brokers(3)
        expected |= ids(303, 40)
        deadline = time.monotonic() + 240
        seen: set[str] = set()
        while time.monotonic() < deadline and seen != expected:
            worker.ensure()
            got = read_until(s, {"items.enriched": len(expected)}, 20, topics=["items.enriched"])
            seen = {k.decode() for k, _ in got["items.enriched"]}
        assert seen == expected, f"{len(expected - seen)} missing\n{worker.log.read_text()[-3000:]}"
    finally:
        worker.stop()
    res = cli(s, "audit", "--json", str(tmp_path / "audit.json"))
    report = json.loads((tmp_path / "audit.json").read_text())
    summary = {"items": len(expected), "faults": dict(faults), "worker_starts": worker.starts,
               "broker_waits_reported": len(waited), "rewrites": report["rewrites"],
               "missing": len(report["missing"]), "conflicts": len(report["conflicts"])}
    (tmp_path.parent / "broker-failures-summary.json").write_text(json.dumps(summary))
    print("broker failures:", json.dumps(summary))
    assert res.returncode == 0 and report["missing"] == [] and report["conflicts"] == [], res.stdout
    assert report["enriched"] == len(expected)
    assert waited, "the worker never said it was waiting for the broker while two brokers were down"


def test_exactly_once_chaos_on_three_brokers_gives_each_item_once(cluster, on_cluster, tmp_path, request):
    """Three workers in exactly-once mode while workers are SIGKILLed, SIGTERMed, added and removed and brokers
    are SIGKILLed and restarted: read_committed consumers of the three outputs see every item exactly once.
    `--soak` runs 12 waves (24 faults); `make test` runs 5 (10 faults)."""
    soak = request.config.getoption("--soak")
    waves, per_wave = (12, 60) if soak else (5, 40)
    s = on_cluster.updated(exactly_once=True)
    workers: list[subprocess.Popen] = []
    faults: Counter = Counter()

    def start() -> None:
        workers.append(start_worker(s.updated(web_port=free_port()), tmp_path / f"w{len(workers)}.log"))

    def alive() -> list[subprocess.Popen]:
        return [w for w in workers if w.poll() is None]

    for _ in range(3):
        start()
    worker_faults = ["sigkill", "scale_out", "sigterm", "scale_in", "sigkill", "scale_out"]
    expected: set[str] = set()
    try:
        for wave in range(waves):
            assert cli(s, "publish", "--items", str(per_wave), "--seed", str(500 + wave)).returncode == 0
            expected |= ids(500 + wave, per_wave)
            time.sleep(3)
            action = worker_faults[wave % len(worker_faults)]
            running = alive()
            if action in ("scale_out",) or len(running) < 2:
                start()
            elif action == "sigkill":
                running[-1].kill()
                running[-1].wait(10)
            else:  # sigterm, scale_in: a graceful stop
                running[0].send_signal(signal.SIGTERM)
                running[0].wait(90)
            faults[action] += 1
            node = cluster.nodes[wave % len(cluster.nodes)]
            cluster.kill(node)  # a broker crash on every wave, alternating nodes
            faults["broker_sigkill"] += 1
            time.sleep(2)
            cluster.restart(node)
            cluster.wait_brokers(3)
            if not alive():
                start()
        got = read_until(s, {"items.enriched": len(expected)}, 300,
                         topics=["items.enriched", "recall.neighbors", "recall.tags"], records=True)
    finally:
        for w in alive():
            w.send_signal(signal.SIGTERM)
            w.wait(90)
    enriched = Counter(k.decode() for k, _ in got["items.enriched"])
    neighbours = Counter(k.decode() for k, _ in got["recall.neighbors"])
    edges = Counter((k.decode(), v["tag"]) for k, v in got["recall.tags"])
    duplicates = {"items.enriched": sum(n - 1 for n in enriched.values()),
                  "recall.neighbors": sum(n - 1 for n in neighbours.values()),
                  "recall.tags": sum(n - 1 for n in edges.values())}
    res = cli(s, "audit", "--json", str(tmp_path / "audit.json"))
    report = json.loads((tmp_path / "audit.json").read_text())
    summary = {"items": len(expected), "faults": dict(faults), "fault_count": sum(faults.values()),
               "read_committed_duplicates": duplicates, "missing": len(report["missing"]),
               "conflicts": len(report["conflicts"]), "rewrites": report["rewrites"]}
    (tmp_path.parent / "exactly-once-chaos-summary.json").write_text(json.dumps(summary))
    print("exactly-once chaos:", json.dumps(summary))
    assert set(enriched) == expected, f"{len(expected - set(enriched))} missing"
    assert duplicates == {"items.enriched": 0, "recall.neighbors": 0, "recall.tags": 0}, summary
    assert res.returncode == 0 and report["missing"] == [] and report["conflicts"] == [], res.stdout
    assert sum(faults.values()) >= (24 if soak else 10)


def _lag_metric(port: int, topic: str) -> dict[tuple[str, int], int]:
    status, page = http_get(port, "/metrics")
    out = {}
    for line in page.splitlines():
        if line.startswith("enrich_consumer_lag{") and f'topic="{topic}"' in line:
            labels, value = line.rsplit(" ", 1)
            partition = int(labels.split('partition="', 1)[1].split('"', 1)[0])
            out[(topic, partition)] = int(float(value))
    return out


def test_the_lag_metric_agrees_with_kafka_consumer_groups(cluster, on_cluster, tmp_path):
    """On a running worker with a backlog, enrich_consumer_lag (what dashboards and alerts read) brackets what
    Kafka's own kafka-consumer-groups --describe reports for the worker's group at the same moment."""
    from ops.local.kafka import consumer_group_lag

    s = on_cluster.updated(batch_size=2, inflight_batches=1, lag_interval_s=0.5)
    worker = start_worker(s, tmp_path / "worker.log")
    topic = s.topic("items.new")
    try:
        wait_for(lambda: http_get(s.web_port, "/readyz")[0] == 200, 120, "the worker ready", tmp_path / "worker.log")
        assert cli(s, "publish", "--items", "30", "--seed", "601").returncode == 0
        wait_for(lambda: len(consumer_group_lag(cluster.libs, cluster.bootstrap, s.group_id)) > 0, 60,
                 "committed offsets")
        assert cli(s, "publish", "--items", "400", "--seed", "602").returncode == 0
        time.sleep(2)
        checks = []
        for _ in range(3):
            before = sum(_lag_metric(s.web_port, topic).values())
            tool = consumer_group_lag(cluster.libs, cluster.bootstrap, s.group_id)
            time.sleep(1.0)  # one refresh of the metric (ENRICH_LAG_INTERVAL_S) and of the commit interval
            after = sum(_lag_metric(s.web_port, topic).values())
            tool_total = sum(v for (t, _), v in tool.items() if t == topic)
            checks.append((before, tool_total, after))
            if tool_total == 0:
                break
        assert any(t > 0 for _, t, _ in checks), f"no backlog was seen: {checks}"
        for before, tool_total, after in checks:
            # the backlog shrinks while the tool runs: the metric before and after bracket Kafka's figure
            assert after - 2 * s.batch_size <= tool_total <= before + 2 * s.batch_size, checks
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(90)
