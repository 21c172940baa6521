"""The Apache Kafka cluster's configuration, without starting it."""

from __future__ import annotations

from pathlib import Path

from ops.local.kafka import KafkaCluster, Scram, cluster_id


def test_cluster_ids_never_start_with_a_dash():
    assert all(not cluster_id().startswith("-") for _ in range(2000))


def test_three_nodes_are_combined_brokers_and_controllers_with_production_replication(tmp_path):
    c = KafkaCluster(Path("libs"), tmp_path, nodes=3)
    props = dict(line.split("=", 1) for line in c._properties(c.nodes[1]).splitlines())  # noqa: SLF001
    assert props["process.roles"] == "broker,controller" and props["node.id"] == "2"
    assert props["controller.quorum.voters"].count("@127.0.0.1:") == 3
    assert props["offsets.topic.replication.factor"] == "3" and props["transaction.state.log.min.isr"] == "2"
    assert props["auto.create.topics.enable"] == "false" and props["unclean.leader.election.enable"] == "false"
    assert c.bootstrap.count(",") == 2


def test_scram_turns_on_sasl_and_acls_with_nothing_allowed_by_default(tmp_path):
    c = KafkaCluster(Path("libs"), tmp_path, nodes=1, scram=Scram())
    props = dict(line.split("=", 1) for line in c._properties(c.nodes[0]).splitlines())  # noqa: SLF001
    assert props["listener.security.protocol.map"].startswith("CLIENT:SASL_PLAINTEXT")
    assert props["allow.everyone.if.no.acl.found"] == "false" and "User:admin" in props["super.users"]
    assert c.client_config()["sasl.mechanism"] == "SCRAM-SHA-512"
