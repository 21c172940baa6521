"""Apache Kafka on this machine: the broker our users run, for the tests, the demo, the eval and the bench.

The jars come from Maven Central through Maven (`kafka_dist/pom.xml`, once; Maven caches them in ~/.m2 and
this module copies them into ``<cache>/kafka-<version>/libs``). A cluster is one node, or several, each a
combined KRaft broker and controller on loopback ports, with its storage formatted under a directory of its
own. Optionally the client listener takes SASL/SCRAM and the brokers authorise by ACLs (StandardAuthorizer),
with ``admin`` as the one super user.
"""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ops.local.process import LaunchError, ManagedProcess, free_port, tail

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).with_name("kafka_dist") / "pom.xml"
SCRAM = "SCRAM-SHA-512"
# Small heaps and few threads: a test cluster of three shares two cores with the worker, Triton and pytest.
JAVA_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""
Progress = Callable[[str], None]


def _need(tool: str, fix: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LaunchError(f"Apache Kafka needs `{tool}`, which is not on PATH: {fix}")
    return path


def java() -> str:
    return _need("java", "install a JDK 17 or later (Debian: apt-get install openjdk-17-jre-headless), or use the "
                         "embedded broker (ENRICH_LOCAL_BROKER=tansu)")


def kafka_libs(cache_dir: Path, progress: Progress = lambda _m: None) -> Path:
    """The directory of Kafka's jars, fetched from Maven Central on first use (about 90 jars, 60 MB)."""
    home = cache_dir.expanduser() / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    done = home / ".complete"
    if done.exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = _need("mvn", "install Maven (Debian: apt-get install maven), or use the embedded broker "
                       "(ENRICH_LOCAL_BROKER=tansu)")
    java()
    progress(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central (once) -> {libs}")
    home.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(libs, ignore_errors=True)
    res = subprocess.run([mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                          f"-DoutputDirectory={libs}", "-DincludeScope=runtime"], capture_output=True, text=True,
                         timeout=900)
    if res.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        out = (res.stdout + res.stderr)[-2000:]
        raise LaunchError(f"Maven could not fetch Apache Kafka {KAFKA_VERSION} (exit {res.returncode}); Maven "
                          f"Central must be reachable (a proxy in ~/.m2/settings.xml):\n{out}")
    done.write_text(KAFKA_VERSION + "\n")
    return libs


def cluster_id() -> str:
    """A random KRaft cluster id; never one starting with '-', which the storage tool would read as an option
    (Kafka's own ids avoid it the same way)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True)
class Scram:
    """SASL/SCRAM on the client listener, ACLs enforced; ``admin`` is the super user the cluster is formatted with."""

    admin_user: str = "admin"
    admin_password: str = "admin-secret"

    def client_config(self, user: str | None = None, password: str | None = None) -> dict[str, str]:
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": SCRAM,
                "sasl.username": user or self.admin_user, "sasl.password": password or self.admin_password}


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class KafkaCluster:
    """``nodes`` combined broker+controller nodes of Apache Kafka on loopback; the first takes ``port``."""

    def __init__(self, libs: Path, root: Path, nodes: int = 1, port: int | None = None, scram: Scram | None = None,
                 detach: bool = False) -> None:
        if nodes < 1:
            raise LaunchError("a Kafka cluster needs at least one node")
        self.libs = libs
        self.root = root
        self.scram = scram
        self.detach = detach
        self.nodes = [KafkaNode(i + 1, port if (i == 0 and port) else free_port(), free_port(), root / f"node{i + 1}")
                      for i in range(nodes)]
        self.cluster_id = cluster_id()

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def pid(self) -> int | None:
        return self.nodes[0].process.pid if self.nodes[0].process else None

    def pids(self) -> list[int]:
        return [n.process.pid for n in self.nodes if n.process and n.process.pid]

    def client_config(self) -> dict[str, str]:
        """librdkafka settings of a super-user client (what the tools' admin needs on an ACL'd cluster)."""
        return {"bootstrap.servers": self.bootstrap} | (self.scram.client_config() if self.scram else {})

    def _properties(self, node: KafkaNode) -> str:
        n = len(self.nodes)
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.controller_port}" for m in self.nodes)
        client = "SASL_PLAINTEXT" if self.scram else "PLAINTEXT"
        lines = [
            "process.roles=broker,controller", f"node.id={node.node_id}", f"controller.quorum.voters={voters}",
            f"listeners=CLIENT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners=CLIENT://127.0.0.1:{node.port}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=CLIENT",
            f"listener.security.protocol.map=CLIENT:{client},CONTROLLER:PLAINTEXT",
            f"log.dirs={node.directory / 'data'}",
            # internal topics as a production cluster would have them, within the nodes there are
            f"offsets.topic.replication.factor={min(3, n)}", f"transaction.state.log.replication.factor={min(3, n)}",
            f"transaction.state.log.min.isr={min(2, n)}",
            f"share.coordinator.state.topic.replication.factor={min(3, n)}",
            f"share.coordinator.state.topic.min.isr={min(2, n)}",
            "offsets.topic.num.partitions=4", "transaction.state.log.num.partitions=4",
            "group.initial.rebalance.delay.ms=0", "num.network.threads=2", "num.io.threads=2",
            "num.recovery.threads.per.data.dir=1", "log.cleaner.threads=1", "log.cleaner.backoff.ms=1000",
            "auto.create.topics.enable=false",
            # a killed node comes back as a follower that catches up; leaders move back to it
            "unclean.leader.election.enable=false", "controlled.shutdown.enable=true",
        ]
        if self.scram:
            jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
                    f'username="{self.scram.admin_user}" password="{self.scram.admin_password}";')
            lines += [f"sasl.enabled.mechanisms={SCRAM}", f"sasl.mechanism.inter.broker.protocol={SCRAM}",
                      f"listener.name.client.{SCRAM.lower()}.sasl.jaas.config={jaas}",
                      "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                      # ANONYMOUS: the controllers' own PLAINTEXT listener, on loopback
                      f"super.users=User:{self.scram.admin_user};User:ANONYMOUS",
                      "allow.everyone.if.no.acl.found=false"]
        return "\n".join(lines) + "\n"

    def _java(self, main: str, *args: str) -> list[str]:
        return [java(), *JAVA_OPTS, f"-Dlog4j2.configurationFile={self.root / 'log4j2.yaml'}", "-cp",
                f"{self.libs}/*", main, *args]

    def format(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log4j2.yaml").write_text(LOG4J2)
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            props = node.directory / "server.properties"
            props.write_text(self._properties(node))
            extra = ["--add-scram", f"{SCRAM}=[name={self.scram.admin_user},password={self.scram.admin_password}]"] \
                if self.scram else []
            res = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c",
                                            str(props), *extra), capture_output=True, text=True, timeout=120)
            if res.returncode != 0:
                raise LaunchError(f"formatting Kafka storage of node {node.node_id} failed:\n"
                                  f"{(res.stdout + res.stderr)[-2000:]}")

    def start_node(self, node: KafkaNode) -> None:
        node.process = ManagedProcess(f"kafka node {node.node_id}",
                                      self._java("kafka.Kafka", str(node.directory / "server.properties")),
                                      node.directory / "kafka.log",
                                      ports=[("kafka", node.port), ("controller", node.controller_port)],
                                      detach=self.detach)
        node.process.start()

    def start_and_wait(self, timeout_s: float = 90.0) -> KafkaCluster:
        self.format()
        try:
            for node in self.nodes:
                self.start_node(node)
            self.wait_brokers(len(self.nodes), timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_brokers(self, count: int, timeout_s: float = 90.0) -> None:
        """Until ``count`` brokers are registered and serve metadata (a node's log tail if one died)."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout_s
        admin = AdminClient(self.client_config() | {"log_level": 0})
        while True:
            for node in self.nodes:
                if node.process is not None and node.process.proc is not None and node.process.proc.poll() is not None \
                        and node.process.proc.returncode not in (-signal.SIGKILL, -signal.SIGTERM):
                    raise LaunchError(f"kafka node {node.node_id} exited with code {node.process.proc.returncode}; "
                                      f"log tail ({node.process.log_path}):\n{tail(node.process.log_path)}")
            try:
                if len(admin.list_topics(timeout=2).brokers) >= count:
                    return
            except Exception:  # noqa: BLE001 - not serving yet
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(f"node {n.node_id}:\n{tail(n.directory / 'kafka.log', 15)}" for n in self.nodes)
                raise LaunchError(f"Kafka: {count} brokers not up after {timeout_s:.0f}s\n{logs}")
            time.sleep(0.3)

    def kill(self, node: KafkaNode) -> None:
        """SIGKILL: a crash, no controlled shutdown."""
        if node.process is not None and node.process.proc is not None and node.process.proc.poll() is None:
            node.process.proc.send_signal(signal.SIGKILL)
            node.process.proc.wait()

    def restart(self, node: KafkaNode) -> None:
        self.start_node(node)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to every node at once (one by one, the last nodes wait for a quorum that has left), then
        SIGKILL to any still running after ``timeout_s``."""
        procs = [n.process.proc for n in self.nodes if n.process and n.process.proc and n.process.proc.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def tool(self, main: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """A Kafka command-line tool by its main class, run with this cluster's jars."""
        return kafka_tool(self.libs, main, *args, timeout_s=timeout_s)

    def tool_properties(self) -> Path:
        """A client properties file for the tools (``--command-config``): the super user's credentials."""
        path = self.root / "admin.properties"
        lines = []
        if self.scram:
            lines = ["security.protocol=SASL_PLAINTEXT", f"sasl.mechanism={SCRAM}",
                     "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                     f'username="{self.scram.admin_user}" password="{self.scram.admin_password}";']
        path.write_text("\n".join(lines) + "\n")
        return path


CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"  # kafka-consumer-groups.sh


def kafka_tool(libs: Path, main: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """One of Kafka's command-line tools by its main class (``CONSUMER_GROUPS``, ...), with the cached jars."""
    return subprocess.run([java(), "-Xmx256m", "-cp", f"{libs}/*", main, *args], capture_output=True, text=True,
                          timeout=timeout_s)


def consumer_group_lag(libs: Path, bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """Lag per (topic, partition) as ``kafka-consumer-groups --describe`` reports it (partitions without a
    committed offset are left out)."""
    res = kafka_tool(libs, CONSUMER_GROUPS, "--bootstrap-server", bootstrap, "--describe", "--group", group)
    if res.returncode != 0:
        raise LaunchError(f"kafka-consumer-groups failed: {(res.stdout + res.stderr)[-1000:]}")
    out: dict[tuple[str, int], int] = {}
    for line in res.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[0] == group and cols[3].isdigit() and cols[5].isdigit():
            out[(cols[1], int(cols[2]))] = int(cols[5])  # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END LAG
    return out


def start_kafka(cache_dir: Path, root: Path, nodes: int = 1, port: int | None = None, scram: Scram | None = None,
                detach: bool = False, progress: Progress = lambda _m: None) -> KafkaCluster:
    libs = kafka_libs(cache_dir, progress)
    shutil.rmtree(root, ignore_errors=True)  # a fresh cluster each time, as the embedded broker is
    cluster = KafkaCluster(libs, root, nodes, port, scram, detach).start_and_wait()
    progress(f"Apache Kafka {KAFKA_VERSION}: {nodes} node(s) ready on {cluster.bootstrap}")
    return cluster

