"""The chart's documented install, end to end: `enrich models bundle`, then the worker environment that
`helm install` with the default values renders, started as the pod starts it (`enrich worker`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_runs import http_get, rendered_worker_env, wait_for

from ops.local.harness import settings_env
from ops.local.process import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.helm]

CHART = Path(__file__).resolve().parents[2] / "helm" / "mm-enrich"


def pod_env(rendered: dict[str, str], stack, bundle: Path, state: Path) -> dict[str, str]:
    """``rendered`` with only what differs between a cluster and this machine replaced: the addresses of the
    broker and Triton, where the bundle is mounted, and the topics of this test (one broker: no replicas)."""
    tag = f"t{time.time_ns()}."
    here = {"ENRICH_BROKER": stack.broker, "ENRICH_TRITON_URL": stack.triton_url,
            "ENRICH_MODEL_DIR": str(bundle / "models"), "ENRICH_CODEBOOK": str(bundle / "codebook.npz"),
            "ENRICH_STATE_DIR": str(state), "ENRICH_WEB_PORT": str(free_port()), "ENRICH_TOPIC_PREFIX": tag,
            "ENRICH_REPLICATION_FACTOR": "1", "ENRICH_MIN_INSYNC_REPLICAS": "1", "ENRICH_LOG_JSON": "false"}
    assert here.keys() <= rendered.keys()
    base = {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")}
    return base | rendered | here


@pytest.fixture(scope="module")
def bundle(small_stack, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    res = subprocess.run([sys.executable, "-m", "ops.cli", "models", "bundle", "--out", str(out)],
                         env=settings_env(small_stack), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return out


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "ops.cli", "worker"], env=env, stdout=f,
                                stderr=subprocess.STDOUT)


def test_default_chart_values_start_a_ready_worker_on_the_default_bundle(small_stack, bundle, tmp_path):
    env = pod_env(rendered_worker_env(), small_stack, bundle, tmp_path)
    res = subprocess.run([sys.executable, "-m", "ops.cli", "topics", "create"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    log = tmp_path / "worker.log"
    proc = start(env, log)
    try:
        port = int(env["ENRICH_WEB_PORT"])
        wait_for(lambda: proc.poll() is not None or http_get(port, "/readyz")[0] == 200, 180,
                 "the worker ready (or exited)", log)
        assert proc.poll() is None, f"the worker exited at start:\n{log.read_text()[-3000:]}"
        assert http_get(port, "/readyz")[0] == 200
    finally:
        proc.terminate()
        proc.wait(60)
    assert "ModelConfigError" not in log.read_text()


def test_a_setting_that_contradicts_the_bundle_is_refused_before_install(bundle, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")} | {"ENRICH_STATE_DIR": str(tmp_path)}
    check = [sys.executable, "-m", "ops.cli", "models", "check", "--bundle", str(bundle),
             "--values", str(CHART / "values.yaml")]
    ok = subprocess.run(check, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "8 candidate tags per item" in ok.stdout, ok.stderr

    # What the chart shipped before: 32 candidates beside a prior fitted with 8 crash-looped every worker.
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"worker": {"config": {"ENRICH_CANDIDATE_TAGS": "32"}}}))
    bad = subprocess.run([*check, "--values", str(mine)], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "set ENRICH_CANDIDATE_TAGS=8" in bad.stderr, bad.stdout + bad.stderr

    mine.write_text(yaml.safe_dump({"worker": {"config": {"ENRICH_MAX_TEXT_CHARS": "9000"}}}))
    renamed = subprocess.run([*check, "--values", str(mine)], env=env, capture_output=True, text=True, timeout=120)
    assert renamed.returncode == 1 and "renamed ENRICH_MODEL_TEXT_CHARS" in renamed.stderr, renamed.stderr
