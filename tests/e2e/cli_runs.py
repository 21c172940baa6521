"""Running the CLI as a user does, for the end-to-end tests."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from enrich.schemas import decode
from ops.kafka.clients import TopicReader
from ops.local.harness import settings_env
from streams.settings import Settings


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of a GET on localhost; (0, "") while nothing listens there."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=timeout)


def run_demo(exported: Settings, state_dir: Path, items: int = 8) -> str:
    """``enrich demo`` in a fresh state dir, reusing ``exported``'s models and codebook instead of exporting
    again, on the embedded broker as `make demo` runs it; returns its output after checking it succeeded."""
    s = exported.updated(state_dir=state_dir, model_dir=exported.models_path, codebook=exported.codebook_path,
                         local_broker="tansu")
    res = cli(s, "demo", "--items", str(items), "--no-wait", timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    published = int(re.search(r"published (\d+) items", res.stdout).group(1))
    assert published >= items and f"\n{published} items enriched" in res.stdout and "8 dead letters" in res.stdout
    assert "inspector page: http://127.0.0.1:" in res.stdout
    return res.stdout


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, log_path: Path | None = None) -> object:
    """The predicate's first truthy value, polled; fails with ``what`` (and the log's tail) after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what} not seen within {timeout_s:.0f}s" +
                         (f"\n{log_path.read_text()[-3000:]}" if log_path else ""))


def re_enrich_in_shadow(live: Settings, tmp_path: Path, n_items: int, vocab_args: tuple[str, ...] = ()) -> dict:
    """The rollout of a new codebook as the README describes it: a shadow prefix with its own group and a
    new codebook, ``enrich backfill`` of the live input into it, a shadow worker, and the shadow's audit.
    ``live`` holds ``n_items`` items in ``items.new``; returns the shadow's enriched records by item id."""
    import signal

    from enrich.schemas import decode
    from ops.kafka.clients import TopicReader
    from ops.local.harness import start_worker
    from ops.local.process import free_port

    shadow = live.updated(**{"topic_prefix": f"shadow.{live.topic_prefix}", "web_port": free_port(),
                                     "group_id": f"shadow-{live.group_id}", "codebook": tmp_path / "codebook-v2.npz"})
    res = cli(shadow, "codebook", "fit", "--levels", "2", "--codes", "8", "--epochs", "5",
              "--out", str(tmp_path / "codebook-v2.npz"), timeout=300)
    assert res.returncode == 0, res.stderr
    for args in (("topics", "create"), ("vocab", "load", *vocab_args)):
        res = cli(shadow, *args)
        assert res.returncode == 0, res.stderr
    res = cli(live, "backfill", "--to-prefix", shadow.topic_prefix, "--rate", "50", "--batch", "4", "--quiet")
    assert res.returncode == 0 and f"copied {n_items} records" in res.stdout, res.stdout + res.stderr
    worker = start_worker(shadow, tmp_path / "shadow.log")
    enriched: dict[str, dict] = {}
    try:
        reader = TopicReader(shadow, ["items.enriched"])
        deadline = time.monotonic() + 180
        while len(enriched) < n_items and time.monotonic() < deadline:
            enriched |= {r.key.decode(): decode(r.value) for r in reader.poll(0.5)}
        reader.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, (tmp_path / "shadow.log").read_text()[-3000:]
    assert all(r["versions"]["codebook"].startswith("rqvae-L2K8-") and len(r["semantic_id"]) == 3
               for r in enriched.values())
    res = cli(shadow, "audit")
    assert res.returncode == 0 and f"enriched {n_items}, dead-lettered 0" in res.stdout, res.stdout + res.stderr
    again = cli(live, "backfill", "--to-prefix", shadow.topic_prefix, "--quiet")
    assert again.returncode == 0 and "copied 0 records" in again.stdout, again.stdout + again.stderr
    assert f"{n_items} copied by earlier runs" in again.stdout
    return enriched


def read_until(settings, counts: dict[str, int], timeout_s: float, topics=None,
               records: bool = False) -> dict[str, list]:
    """Read until each topic has ``counts`` distinct keys (``records``: that many records; recall.tags always)."""
    topics = topics or ["items.enriched", "recall.tags", "recall.neighbors", "items.dlq"]
    reader = TopicReader(settings, topics)
    got: dict[str, list] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for r in reader.poll(0.5):
            got[r.topic].append((r.key, decode(r.value)))
        if all(len({k for k, _ in got[t]}) >= n if t != "recall.tags" and not records else len(got[t]) >= n
               for t, n in counts.items()):
            break
    reader.close()
    return got


CHART = Path(__file__).resolve().parents[2] / "helm" / "mm-enrich"


def rendered_worker_env(values: dict | None = None, secrets: dict[tuple[str, str], str] | None = None
                        ) -> dict[str, str]:
    """The worker container's environment as the chart renders it: its ConfigMap, then its own env entries, a
    Secret's key taken from ``secrets`` by (secret name, key), as the kubelet would resolve it."""
    import helm_python as helm
    import yaml

    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="rel", namespace="enrich")
    docs = [d for path, text in manifests.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker")["data"]
    worker = next(d for d in docs if d["kind"] == "Deployment"
                  and d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker")
    container = next(c for c in worker["spec"]["template"]["spec"]["containers"] if c["name"] == "worker")
    assert container["command"] == ["enrich", "worker"]
    env = dict(config)
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = (secrets or {})[(ref["name"], ref["key"])]
    return env
