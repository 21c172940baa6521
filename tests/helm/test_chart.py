"""The Helm chart, rendered by a real Helm (the Helm v4 SDK through helm-python-sdk) and
validated against the Kubernetes 1.30 schemas (kubernetes-validate, strict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate as kv
import pytest
import yaml

from ops.cli import build_parser
from streams.settings import Settings
from streams.web import LIVE_PATH, METRICS_PATH, READY_PATH

pytestmark = pytest.mark.helm

CHART = Path(__file__).resolve().parents[2] / "helm" / "mm-enrich"
KUBE_VERSION = "1.30"
# Custom resources have no schema in kubernetes-validate; everything else must have one.
CRD_GROUPS = {"keda.sh", "monitoring.coreos.com"}

Doc = dict[str, Any]


def all_features() -> dict[str, Any]:
    return helm.values_from_yaml((CHART / "ci" / "all-features-values.yaml").read_text())


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-features": all_features(),
    "sasl-plaintext": {"kafka": {"securityProtocol": "SASL_PLAINTEXT", "sasl": {"existingSecret": "kafka-user",
                                                                                 "mechanism": "PLAIN"}},
                       "worker": {"keda": {"enabled": True}}},
    "tls-only-fixed-replicas": {"kafka": {"securityProtocol": "SSL", "tls": {"existingSecret": "kafka-ca"}},
                                "worker": {"autoscaling": {"enabled": False}, "replicas": 3, "podAntiAffinity": "none"},
                                "triton": {"pdb": {"enabled": False}}},
    "external-triton": {"triton": {"enabled": False}, "worker": {"externalTritonUrl": "triton.ml:8001"},
                        "networkPolicy": {"enabled": True, "kafka": {"cidrs": ["10.0.0.0/8"]},
                                          "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}],
                                                           "ports": [{"port": 8001, "protocol": "TCP"}]}]},
                        "metrics": {"serviceMonitor": {"enabled": True}}},
}


def render(values: dict[str, Any] | None = None, release: str = "rel") -> list[Doc]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=release, namespace="enrich")
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def find(docs: list[Doc], kind: str, component: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (
        component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component)]


def one(docs: list[Doc], kind: str, component: str | None = None) -> Doc:
    found = find(docs, kind, component)
    assert len(found) == 1, f"expected one {kind} ({component}), found {len(found)}"
    return found[0]


def container(deployment: Doc, name: str) -> Doc:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict_passes(variant):
    report = helm.lint(CHART, VARIANTS[variant] or None, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_validates_against_kubernetes_1_30(variant):
    docs = render(VARIANTS[variant] or None)
    assert docs
    for doc in docs:
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if group in CRD_GROUPS:
            assert doc["spec"], f"{doc['kind']} without a spec"
            continue
        try:
            kv.validate(doc, KUBE_VERSION, strict=True)
        except kv.SchemaNotFoundError as exc:  # an unknown or removed API version is a failure, not a warning
            pytest.fail(exc.message)
        except kv.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_the_validator_catches_a_misspelt_field():
    # Guards the test above: strict validation must reject fields Kubernetes does not know.
    deployment = one(render(), "Deployment", "worker")
    container(deployment, "worker")["livenesProbe"] = {"httpGet": {"path": "/", "port": 1}}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBE_VERSION, strict=True)
    with pytest.raises(kv.SchemaNotFoundError):
        kv.validate({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"},
                     "spec": {}}, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values, where", [
    ({"worker": {"replicas": "two"}}, "/worker/replicas"),
    ({"replicaCount": 3}, "replicaCount"),
    ({"kafka": {"securityProtocol": "TLS"}}, "/kafka/securityProtocol"),
    ({"kafka": {"bootstrapServers": "kafka"}}, "/kafka/bootstrapServers"),
    ({"worker": {"config": {"BATCH_SIZE": "8"}}}, "BATCH_SIZE"),
    ({"worker": {"podAntiAffinity": "always"}}, "/worker/podAntiAffinity"),
    ({"triton": {"gpu": {"count": 0}}}, "/triton/gpu/count"),
    ({"triton": {"extraArgs": ["log-verbose=1"]}}, "/triton/extraArgs/0"),
    ({"bundle": {"source": "s3"}}, "/bundle/source"),
    ({"triton": {"modelRepository": {"objectStore": {"uri": "ftp://x"}}}}, "/triton/modelRepository/objectStore/uri"),
    ({"networkPolicy": {"kafka": {"ports": []}}}, "/networkPolicy/kafka/ports"),
])
def test_schema_rejects_bad_values(values, where):
    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    assert where in str(err.value)


@pytest.mark.parametrize("values, message", [
    ({"worker": {"autoscaling": {"maxReplicas": 13}}}, "exceeds kafka.partitions (12)"),
    ({"worker": {"autoscaling": {"enabled": False}, "replicas": 5}, "kafka": {"partitions": 4}},
     "worker.replicas (5) exceeds kafka.partitions (4)"),
    ({"worker": {"keda": {"enabled": True, "maxReplicas": 30}}}, "worker.keda.maxReplicas (30) exceeds"),
    ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.sasl.existingSecret is required"),
    ({"triton": {"enabled": False}}, "worker.externalTritonUrl is required"),
    ({"triton": {"modelRepository": {"source": "objectStore"}}}, "objectStore.uri is required"),
    ({"bundle": {"source": "pvc"}}, "bundle.pvc.claimName is required"),
    ({"kafka": {"replicationFactor": 1}}, "kafka.minInsyncReplicas (2) exceeds kafka.replicationFactor (1)"),
])
def test_inconsistent_values_refuse_to_render(values, message):
    with pytest.raises(helm.HelmRenderError) as err:
        render(values)
    assert message in str(err.value)


def test_workers_call_triton_through_its_service():
    docs = render()
    config = one(docs, "ConfigMap", "worker")["data"]
    service = one(docs, "Service", "triton")
    triton = one(docs, "Deployment", "triton")
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert config["ENRICH_TRITON_URL"] == f"{service['metadata']['name']}:{grpc['port']}"
    assert config["ENRICH_BACKEND"] == "triton"
    pod_labels = triton["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert grpc["targetPort"] in {p["name"] for p in container(triton, "triton")["ports"]}
    # The worker Service must not select Triton pods or the other way round.
    worker_pod = one(docs, "Deployment", "worker")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_pod.items()


def test_external_triton_is_used_when_the_chart_runs_none():
    docs = render(VARIANTS["external-triton"])
    assert not find(docs, "Deployment", "triton") and not find(docs, "Service", "triton")
    assert one(docs, "ConfigMap", "worker")["data"]["ENRICH_TRITON_URL"] == "triton.ml:8001"
    assert [m["metadata"]["name"] for m in find(docs, "ServiceMonitor")] == ["rel-mm-enrich-worker"]


def test_triton_requests_gpus_and_lands_on_gpu_nodes():
    default = container(one(render(), "Deployment", "triton"), "triton")
    assert default["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert default["resources"]["requests"]["nvidia.com/gpu"] == 1
    docs = render(all_features())
    triton = one(docs, "Deployment", "triton")
    spec = triton["spec"]["template"]["spec"]
    c = container(triton, "triton")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "--model-repository=s3://models/enrich/repository" in c["args"]
    assert c["envFrom"] == [{"secretRef": {"name": "triton-s3"}}]
    assert "initContainers" not in spec  # the object store needs no bundle copy
    assert c["image"] == "nvcr.io/nvidia/tritonserver:25.01-py3"


def test_keda_objects_only_when_enabled():
    default = render()
    assert not [d for d in default if d["apiVersion"].startswith("keda.sh/")]
    hpa = one(default, "HorizontalPodAutoscaler", "worker")
    assert hpa["spec"]["maxReplicas"] <= 12 and hpa["spec"]["scaleTargetRef"]["name"] == "rel-mm-enrich-worker"
    assert "replicas" not in one(default, "Deployment", "worker")["spec"]  # the HPA owns it

    docs = render(all_features())
    assert not find(docs, "HorizontalPodAutoscaler")  # KEDA makes its own
    worker_so = next(d for d in find(docs, "ScaledObject", "worker"))
    trigger = worker_so["spec"]["triggers"][0]
    config = one(docs, "ConfigMap", "worker")["data"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["ENRICH_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["ENRICH_TOPIC_PREFIX"] + "items.new"
    assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
    assert worker_so["spec"]["maxReplicaCount"] <= int(config["ENRICH_PARTITIONS"])
    auth = one(docs, "TriggerAuthentication", "worker")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert {p["parameter"] for p in auth["spec"]["secretTargetRef"]} == {"username", "password", "ca", "cert", "key"}
    assert one(docs, "ScaledObject", "triton")["spec"]["triggers"][0]["type"] == "prometheus"

    fixed = render(VARIANTS["tls-only-fixed-replicas"])
    assert one(fixed, "Deployment", "worker")["spec"]["replicas"] == 3
    assert not find(fixed, "HorizontalPodAutoscaler")


def test_worker_configuration_is_valid_settings(monkeypatch):
    docs = render(all_features())
    worker = one(docs, "Deployment", "worker")
    env = one(docs, "ConfigMap", "worker")["data"] | {
        e["name"]: e.get("value", "from-secret") for e in container(worker, "worker")["env"]}
    unknown = [k for k in env if k.removeprefix("ENRICH_").lower() not in Settings.model_fields]
    assert not unknown, f"the chart sets settings the worker does not have: {unknown}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.security_protocol == "SASL_SSL" and s.sasl_username == "from-secret"
    assert s.batch_size == 32 and s.min_grade == 2 and s.topic("items.new") == "prod.items.new"
    assert str(s.models_path) == "/bundle/models" and str(s.codebook_path) == "/bundle/codebook.npz"
    tls = {m["mountPath"] for m in container(worker, "worker")["volumeMounts"] if m["name"] == "kafka-tls"}
    assert s.ssl_ca_file is not None and s.ssl_ca_file.parent.as_posix() in tls
    assert s.kafka_client_config()["ssl.certificate.location"] == "/etc/enrich/kafka-tls/tls.crt"


def test_worker_pod_runs_the_worker_with_probes_on_its_routes():
    docs = render()
    worker = one(docs, "Deployment", "worker")
    c = container(worker, "worker")
    assert build_parser().parse_args(c["command"][1:]).command == "worker"
    assert c["livenessProbe"]["httpGet"]["path"] == LIVE_PATH
    assert c["startupProbe"]["httpGet"]["path"] == LIVE_PATH
    assert c["readinessProbe"]["httpGet"]["path"] == READY_PATH
    assert c["ports"][0]["containerPort"] == int(one(docs, "ConfigMap", "worker")["data"]["ENRICH_WEB_PORT"])
    spec = worker["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert "checksum/config" in worker["spec"]["template"]["metadata"]["annotations"]
    # The bundle image's files are copied without the ONNX weights, which only Triton needs.
    init = spec["initContainers"][0]
    assert "--exclude='*.onnx'" in init["command"][-1] and "codebook.npz" in init["command"][-1]
    monitors = find(render(all_features()), "ServiceMonitor")
    assert {m["spec"]["endpoints"][0]["path"] for m in monitors} == {METRICS_PATH}


def test_network_policy_lets_workers_reach_only_kafka_triton_and_dns():
    docs = render(all_features())
    policy = one(docs, "NetworkPolicy", "worker")
    egress = policy["spec"]["egress"]
    kafka = next(r for r in egress if any("ipBlock" in t for t in r.get("to", [])))
    assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in kafka["to"]
    assert kafka["ports"] == [{"port": 9093, "protocol": "TCP"}]
    triton_rule = next(r for r in egress if any("podSelector" in t and "namespaceSelector" not in t
                                                for t in r.get("to", [])))
    triton_pods = one(docs, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
    assert triton_rule["to"][0]["podSelector"]["matchLabels"].items() <= triton_pods.items()
    assert len(egress) == 3  # DNS, Kafka, Triton
    assert [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]] == ["http"]
    # on by default: with Kafka's place unknown, workers reach its ports on any address and nothing else
    default = one(render(), "NetworkPolicy", "worker")["spec"]["egress"]
    assert {"ports": [{"port": 9092, "protocol": "TCP"}]} in default and len(default) == 3
    assert not find(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_triton_runs_non_root_read_only_with_its_admin_apis_behind_a_key():
    docs = render()
    triton = one(docs, "Deployment", "triton")
    pod = triton["spec"]["template"]["spec"]
    c = container(triton, "triton")
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # the TensorRT engine cache
    restricted = "model-repository,model-config,shared-memory,statistics,trace,logging"
    assert f"--http-restricted-api={restricted}:triton-admin-key=$(TRITON_ADMIN_KEY)" in c["args"]
    assert f"--grpc-restricted-protocol={restricted}:triton-admin-key=$(TRITON_ADMIN_KEY)" in c["args"]
    ref = c["env"][0]["valueFrom"]["secretKeyRef"]
    secret = next(d for d in find(docs, "Secret") if d["metadata"]["name"] == ref["name"])
    assert len(secret["data"][ref["key"]]) >= 40
    own = render({"triton": {"adminKey": {"existingSecret": "mine"}}})
    env = container(one(own, "Deployment", "triton"), "triton")["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    assert not [d for d in find(own, "Secret") if d["metadata"]["name"].endswith("-admin")]


def test_topics_job_runs_the_project_cli_before_install():
    assert not find(render(), "Job")
    job = one(render(all_features()), "Job", "topics")
    assert "pre-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    c = job["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(c["command"][1:])
    assert (args.command, args.action) == ("topics", "create")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ENRICH_PARTITIONS"] == "24" and env["ENRICH_TOPIC_PREFIX"] == "prod."
    assert "ENRICH_SASL_PASSWORD" in env
    # the job and the workers build the same topic specification from the same values
    config = one(render(all_features()), "ConfigMap", "worker")["data"]
    for key in ("ENRICH_PARTITIONS", "ENRICH_REPLICATION_FACTOR", "ENRICH_MIN_INSYNC_REPLICAS", "ENRICH_RETENTION_MS"):
        assert env[key] == config[key], key
    assert (env["ENRICH_REPLICATION_FACTOR"], env["ENRICH_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    assert env["ENRICH_RETENTION_MS"] == "2592000000"


DASHBOARD = CHART / "dashboards" / "mm-enrich.json"


def dashboard_exprs() -> list[str]:
    import json

    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def test_dashboard_queries_only_metrics_the_worker_exports():
    import re

    from prometheus_client import REGISTRY

    from enrich import metrics  # noqa: F401  (registers the worker's metrics)

    exported = {s.name for m in REGISTRY.collect() for s in m.samples}
    used = {name for e in dashboard_exprs() for name in re.findall(r"\benrich_\w+", e)}
    assert {"enrich_consumer_lag", "enrich_paused_partitions", "enrich_model_request_seconds_bucket",
            "enrich_end_to_end_seconds_bucket", "enrich_stage_seconds_bucket", "enrich_dlq_total"} <= used
    # Labelled series appear only once observed; their family names are registered from the start.
    families = {m.name for m in REGISTRY.collect()}
    unknown = {n for n in used if n not in exported and re.sub(r"_(bucket|sum|count|total)$", "", n) not in families}
    assert not unknown, f"dashboard queries metrics the worker does not export: {unknown}"


def test_dashboard_configmap_ships_the_dashboard_file_when_enabled():
    import json

    assert not [d for d in render() if d["metadata"]["name"].endswith("-dashboard")]
    cm = next(d for d in render(all_features()) if d["kind"] == "ConfigMap"
              and d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["mm-enrich.json"]) == json.loads(DASHBOARD.read_text())


def test_worker_config_names_are_exactly_the_worker_settings():
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    names = schema["properties"]["worker"]["properties"]["config"]["propertyNames"]["enum"]
    assert sorted(names) == sorted(f"ENRICH_{n.upper()}" for n in Settings.model_fields), \
        "regenerate worker.config's propertyNames in values.schema.json from streams.settings.Settings"


def test_helm_refuses_a_worker_setting_that_does_not_exist():
    with pytest.raises(Exception, match="ENRICH_MAX_TEXT_CHARS"):
        render({"worker": {"config": {"ENRICH_MAX_TEXT_CHARS": "9000"}}})


def test_default_values_leave_the_candidate_count_to_the_bundle():
    # The default bundle's tag prior fixes the count; a chart default beside it made every worker refuse to start.
    assert "ENRICH_CANDIDATE_TAGS" not in one(render(), "ConfigMap", "worker")["data"]


def test_the_freshness_alerts_watch_metrics_the_worker_exports():
    import re

    from enrich import metrics as worker_metrics

    rule = one(render(all_features()), "PrometheusRule", "worker")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == {
        "EnrichOutputsStalled", "EnrichNoOutputsWithBacklog", "EnrichBrokerWaiting"}
    exported = {m._name for m in vars(worker_metrics).values() if hasattr(m, "_name")}  # noqa: SLF001
    for expr in exprs:
        for name in re.findall(r"\b(enrich_[a-z_]+?)(?:_bucket|_total)?\{", expr):
            assert name in exported, f"{name} in an alert is not a worker metric"
        assert 'service="rel-mm-enrich-worker"' in expr or "service=" in expr
    assert 'stage="published"' in exprs[0]
    assert not find(render(), "PrometheusRule")
