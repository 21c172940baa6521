"""Least privilege on Apache Kafka with SASL/SCRAM and ACLs (StandardAuthorizer, nothing allowed by default).

The worker runs from the environment the chart renders for SASL, with exactly the ACLs `enrich topics acls`
lists; the recall server's principal reads the recall feeds and nothing else; a principal without ACLs is
refused at start with a message that names the fix, not left hanging."""

from __future__ import annotations

import os
import signal
import time

import pytest
from cli_runs import cli, http_get, read_until, rendered_worker_env, wait_for
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from ops.kafka.acls import apply, recall_grants, worker_grants
from ops.kafka.clients import publish
from ops.local.harness import start_worker
from ops.local.kafka import SCRAM, Scram, start_kafka
from ops.local.process import free_port
from streams.kafka_tools import read_to_end

pytestmark = pytest.mark.e2e

USERS = {"enrich": "worker-secret", "recall": "recall-secret", "nobody": "nobody-secret"}


@pytest.fixture(scope="module")
def secured(local_stack, tmp_path_factory):
    """A SCRAM + ACL cluster with the three users, topics created and ACLs granted by the admin."""
    scram = Scram()
    cluster = start_kafka(local_stack.kafka_cache_dir, tmp_path_factory.mktemp("kafka-acl"), nodes=1, scram=scram)
    tag = f"a{time.time_ns()}."
    admin_settings = local_stack.updated(broker=cluster.bootstrap, security_protocol="SASL_PLAINTEXT",
                                         sasl_mechanism=SCRAM, sasl_username=scram.admin_user,
                                         sasl_password=scram.admin_password, topic_prefix=tag,
                                         group_id=f"g-{tag}", replication_factor=1, min_insync_replicas=1)
    admin = AdminClient(admin_settings.kafka_client_config())
    creds = [UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                          password.encode()) for user, password in USERS.items()]
    for f in admin.alter_user_scram_credentials(creds).values():
        f.result(30)
    assert cli(admin_settings, "topics", "create").returncode == 0
    assert cli(admin_settings, "vocab", "load").returncode == 0
    apply(admin_settings, worker_grants(admin_settings, "User:enrich") + recall_grants(admin_settings, "User:recall"))
    yield admin_settings
    cluster.stop()


def as_user(settings, user: str):  # noqa: ANN001, ANN201 - settings in, settings out
    return settings.updated(sasl_username=user, sasl_password=USERS[user])


def worker_env(secured, tmp_path) -> dict[str, str]:
    """The chart's rendering for SASL with the credentials Secret resolved; only the addresses are this machine's."""
    values = {"kafka": {"securityProtocol": "SASL_PLAINTEXT", "sasl": {"existingSecret": "kafka-enrich",
                                                                        "mechanism": SCRAM}}}
    rendered = rendered_worker_env(values, {("kafka-enrich", "username"): "enrich",
                                            ("kafka-enrich", "password"): USERS["enrich"]})
    assert rendered["ENRICH_SASL_MECHANISM"] == SCRAM and rendered["ENRICH_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    here = {"ENRICH_BROKER": secured.broker, "ENRICH_TRITON_URL": secured.triton_url,
            "ENRICH_MODEL_DIR": str(secured.models_path), "ENRICH_CODEBOOK": str(secured.codebook_path),
            "ENRICH_STATE_DIR": str(tmp_path), "ENRICH_WEB_PORT": str(free_port()),
            "ENRICH_TOPIC_PREFIX": secured.topic_prefix, "ENRICH_GROUP_ID": secured.group_id,
            "ENRICH_REPLICATION_FACTOR": "1", "ENRICH_MIN_INSYNC_REPLICAS": "1", "ENRICH_LOG_JSON": "false",
            "ENRICH_SESSION_TIMEOUT_S": "6", "ENRICH_FETCH_MAX_WAIT_MS": "100"}
    # the tiny models of this session are not the chart's default candidate count's: leave that to the bundle
    return {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")} | rendered | here


def test_the_worker_runs_with_exactly_its_acls_from_the_charts_sasl_values(secured, tmp_path):
    import subprocess
    import sys

    env = worker_env(secured, tmp_path)
    log = tmp_path / "worker.log"
    with open(log, "ab") as f:
        worker = subprocess.Popen([sys.executable, "-m", "ops.cli", "worker"], env=env, stdout=f,
                                  stderr=subprocess.STDOUT)
    try:
        port = int(env["ENRICH_WEB_PORT"])
        wait_for(lambda: worker.poll() is not None or http_get(port, "/readyz")[0] == 200, 120, "the worker ready",
                 log)
        assert worker.poll() is None, log.read_text()[-3000:]
        assert cli(secured, "publish", "--items", "12", "--seed", "41").returncode == 0  # as the admin
        got = read_until(secured, {"items.enriched": 12, "recall.neighbors": 12}, 120,
                         topics=["items.enriched", "recall.neighbors"])
        assert len({k for k, _ in got["items.enriched"]}) == 12, log.read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(90)
    assert code == 0, log.read_text()[-3000:]
    assert "AUTHORIZATION" not in log.read_text().upper().replace("NOT AUTHORISED", "")


def _metadata_error(settings, topic: str) -> KafkaError | None:
    md = AdminClient(settings.kafka_client_config()).list_topics(topic=settings.topic(topic), timeout=10)
    return md.topics[settings.topic(topic)].error


def test_the_recall_principal_reads_the_recall_feeds_and_nothing_else(secured):
    recall = as_user(secured, "recall")
    assert cli(secured, "publish", "--items", "2", "--seed", "42").returncode == 0
    for topic in ("items.new", "items.enriched", "items.coded", "tags.vocab"):
        denied = _metadata_error(recall, topic)
        assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, denied)
    assert _metadata_error(recall, "recall.tags") is None and _metadata_error(recall, "recall.neighbors") is None
    # what `enrich recall serve` does with these credentials: read the feeds to their end
    publish(secured, "recall.neighbors", [(b"probe", b"\x80")])  # as the admin
    assert b"probe" in {r.key for r in read_to_end(recall, ["recall.neighbors"])}


def test_a_principal_without_acls_is_refused_at_start_with_the_fix(secured, tmp_path):
    nobody = as_user(secured, "nobody").updated(web_port=free_port())
    log = tmp_path / "nobody.log"
    worker = start_worker(nobody, log)
    try:
        code = worker.wait(90)
    except Exception:
        worker.send_signal(signal.SIGKILL)
        raise AssertionError(f"the worker hung instead of refusing:\n{log.read_text()[-2000:]}") from None
    assert code != 0
    text = log.read_text()
    assert "not authorised" in text and "enrich topics acls" in text, text[-2000:]
