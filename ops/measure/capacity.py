"""`enrich capacity`: what a deployment needs for R new items per second, from measured per-item costs.

The costs are what one item takes of each resource, measured, never assumed:

- ``worker_cpu_s``: CPU seconds of a worker process per item (decode, media, tokenising, vocabulary,
  tag prior, semantic IDs, Kafka), from a live worker's ``process_cpu_seconds_total`` and
  ``enrich_items_in_total`` (``--metrics URL``) or from a measured run (``--costs FILE``);
- ``model_s``: seconds of one model server per item (a GPU with its Triton instances on a cluster;
  the CPU of this machine's Triton in the local validation);
- bytes per item into ``items.new`` and out over every output topic.

From those: workers = R x worker_cpu_s / (cores per worker x target utilisation); Triton GPUs =
R x model_s / target utilisation; partitions = twice the workers (room to scale out); broker
throughput in and out, the outputs counted once per replica.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from enrich.errors import EnrichError


@dataclass(frozen=True)
class ItemCosts:
    worker_cpu_s: float
    model_s: float
    in_bytes: float
    out_bytes: float
    source: str

    def __post_init__(self) -> None:
        if self.worker_cpu_s <= 0 or self.model_s <= 0:
            raise EnrichError(f"costs must be positive (worker {self.worker_cpu_s} s, model {self.model_s} s per "
                              f"item, from {self.source}): measure more items")


@dataclass(frozen=True)
class Plan:
    rate: float
    workers: int
    partitions: int
    gpus: int
    instances_per_gpu: int
    broker_in_mb_s: float
    broker_out_mb_s: float
    chart_values: dict[str, Any]
    costs: ItemCosts


def plan(rate: float, costs: ItemCosts, cores_per_worker: float = 1.0, utilisation: float = 0.7,
         replication: int = 3, instances_per_gpu: int = 2) -> Plan:
    if rate <= 0:
        raise EnrichError("--rate must be a positive number of new items per second")
    if not 0 < utilisation <= 1:
        raise EnrichError("--utilisation must be in (0, 1]")
    workers = max(1, math.ceil(rate * costs.worker_cpu_s / (cores_per_worker * utilisation)))
    gpus = max(1, math.ceil(rate * costs.model_s / utilisation))
    partitions = max(4, 2 * workers)
    values = {"kafka.partitions": partitions, "worker.autoscaling.minReplicas": workers,
              "worker.autoscaling.maxReplicas": partitions,
              "worker.resources.requests.cpu": f"{cores_per_worker:g}",
              "triton.replicas": gpus, "triton.gpu.count": 1}
    return Plan(rate, workers, partitions, gpus, instances_per_gpu, round(rate * costs.in_bytes / 1e6, 3),
                round(rate * costs.out_bytes * replication / 1e6, 3), values, costs)


def throughput(workers: int, costs: ItemCosts, cores: float, others_s: float = 0.0) -> float:
    """Items/s of ``workers`` workers sharing ``cores`` with the model server and ``others_s`` CPU seconds per
    item of other processes (this machine's local stack: the broker and the load generator): each worker
    runs on one core at most, and all of them fit in ``cores``."""
    return min(workers / costs.worker_cpu_s, cores / (costs.worker_cpu_s + costs.model_s + others_s))


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format summed by metric name (labels folded)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def costs_from_metrics(text: str, source: str) -> ItemCosts:
    """Per-item costs over a worker's life so far, from its /metrics page."""
    m = parse_metrics(text)
    items = m.get("enrich_items_in_total", 0.0)
    if items < 50:
        raise EnrichError(f"{source} has taken {items:.0f} items; costs need at least 50 (run load through it first)")
    return ItemCosts(worker_cpu_s=m.get("process_cpu_seconds_total", 0.0) / items,
                     model_s=m.get("enrich_model_request_seconds_sum", 0.0) / items,
                     in_bytes=m.get("enrich_input_bytes_total", 0.0) / items,
                     out_bytes=m.get("enrich_output_bytes_total", 0.0) / items, source=source)


# What `benchmarks/gpu_run.sh` measured on a GPU, when a run was committed: the served graphs' items/s.
GPU_RESULT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gpu" / "gpu_speed.json"


@dataclass(frozen=True)
class GpuFigure:
    items_per_s: float
    batch: int
    device: str
    source: str

    def describe(self) -> str:
        return (f"model: {self.items_per_s:g} items/s per GPU, served embed + tag at {self.batch} items per batch on "
                f"{self.device} ({self.source})")


def gpu_figure(path: Path = GPU_RESULT) -> GpuFigure | None:
    """The served embed + tag rate of a committed GPU run: at the batch size that gave the most items/s
    without running out of memory. None when no run was committed."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        rows = [r for r in data["results"] if r["path"] == "served_embed+tag" and "items_per_s" in r]
        best = max(rows, key=lambda r: r["items_per_s"])
        return GpuFigure(float(best["items_per_s"]), int(best["items"]), str(data["device"]), str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EnrichError(f"{path}: not a gpu_bench result ({exc}); run benchmarks/gpu_run.sh again or pass "
                          "--model-items-per-s") from None


def load_costs(path: Path) -> ItemCosts:
    try:
        data = json.loads(path.read_text())
        return ItemCosts(**{k: data["costs"][k] for k in ("worker_cpu_s", "model_s", "in_bytes", "out_bytes")},
                         source=str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EnrichError(f"{path}: expected the JSON `enrich capacity --validate` writes, with costs.worker_cpu_s, "
                          f"model_s, in_bytes and out_bytes: {exc}") from None


def format_plan(p: Plan) -> str:
    c = p.costs
    lines = [
        f"for {p.rate:g} new items/s (costs from {c.source}: worker {c.worker_cpu_s * 1e3:.2f} CPU-ms, model "
        f"{c.model_s * 1e3:.2f} ms, {c.in_bytes / 1e3:.1f} KB in and {c.out_bytes / 1e3:.1f} KB out per item):",
        f"  workers             {p.workers} (1 core each at 70% busy)",
        f"  partitions          {p.partitions} of items.new and every other topic (room to scale out twice)",
        f"  Triton GPUs         {p.gpus}, {p.instances_per_gpu} instances of each graph per GPU",
        f"  broker in           {p.broker_in_mb_s:g} MB/s produced to items.new",
        f"  broker out          {p.broker_out_mb_s:g} MB/s written over all outputs, replicas counted",
        "  chart values        " + " ".join(f"--set {k}={v}" for k, v in p.chart_values.items()),
    ]
    return "\n".join(lines)


def as_json(p: Plan) -> dict[str, Any]:
    return asdict(p)


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, from /proc."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def _own_cpu_s() -> float:
    import resource

    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def validate(settings: Any, items: int = 400, out: Path | None = None, say: Any = print) -> dict[str, Any]:
    """Measure one worker, derive the per-item costs, predict one and two workers, measure two, on a
    private local stack (the model server is this machine's CPU Triton, sharing its cores)."""
    import os
    import platform

    from ops.local.harness import private_stack
    from ops.measure.bench import StreamHarness, stream_items

    cores = float(os.cpu_count() or 1)
    runs: list[dict[str, Any]] = []
    costs: ItemCosts | None = None
    others = 0.0
    with private_stack(settings, say, "capacity", backend="triton") as private:
        s, stack, logs = private.settings, private.stack, private.logs
        assert stack.triton is not None
        for workers in (1, 2):
            h = StreamHarness(s, workers, logs)
            try:
                h.warm_up()
                before = [parse_metrics(m) for m in h.pages()]
                server_before = _tree_cpu_s(stack.triton.pid)
                others_before = _tree_cpu_s(stack.broker.pid) + _own_cpu_s()
                batch = stream_items(items, f"{h.tag}-c")
                t0 = time.perf_counter()
                for item in batch:
                    h.send(item)
                h.flush()
                h.collect({i["id"] for i in batch}, 600)
                seconds = time.perf_counter() - t0
                after = [parse_metrics(m) for m in h.pages()]
                server_s = _tree_cpu_s(stack.triton.pid) - server_before
                others_s = _tree_cpu_s(stack.broker.pid) + _own_cpu_s() - others_before

                def delta(name: str, b: list[dict[str, float]] = before, a: list[dict[str, float]] = after) -> float:
                    return sum(x.get(name, 0.0) - y.get(name, 0.0) for x, y in zip(a, b, strict=True))

                n = delta("enrich_items_in_total")
                measured = ItemCosts(worker_cpu_s=delta("process_cpu_seconds_total") / n, model_s=server_s / n,
                                     in_bytes=delta("enrich_input_bytes_total") / n,
                                     out_bytes=delta("enrich_output_bytes_total") / n,
                                     source=f"{workers} worker(s), {int(n)} items on this machine")
                if costs is None:  # the prediction rests on the one-worker run only
                    costs, others = measured, others_s / n
                runs.append({"workers": workers, "items": int(n), "seconds": round(seconds, 2),
                             "measured_items_per_s": round(len(batch) / seconds, 2),
                             "predicted_items_per_s": round(throughput(workers, costs, cores, others), 2),
                             # what `enrich capacity` plans with: every resource at most 70% busy
                             "predicted_at_70pct_items_per_s": round(0.7 * throughput(workers, costs, cores,
                                                                                      others), 2),
                             "costs_measured_in_this_run": asdict(measured),
                             "broker_and_load_generator_cpu_s_per_item": round(others_s / n, 5)})
                say(f"{workers} worker(s): measured {runs[-1]['measured_items_per_s']} items/s, predicted "
                    f"{runs[-1]['predicted_items_per_s']} at full use of the cores, "
                    f"{runs[-1]['predicted_at_70pct_items_per_s']} at the planned 70%, from the one-worker costs")
            finally:
                h.stop()
    assert costs is not None
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "model_preset": settings.model_preset},
              "model": "items/s(N) = min(N / worker_cpu_s, cores / (worker_cpu_s + model_s + others_s)): each "
                       "worker on at most one core; workers, the CPU model server, the broker and the load "
                       "generator (others_s, not part of a deployment's costs) sharing the machine's cores",
              "others_cpu_s_per_item": round(others, 5),
              "costs": asdict(costs), "runs": runs}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result
