"""Capacity planning from measured per-item costs: the arithmetic, the costs read from a worker's real
/metrics text, and the command."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from enrich.errors import EnrichError
from ops.measure.capacity import ItemCosts, costs_from_metrics, plan, throughput

COSTS = ItemCosts(worker_cpu_s=0.004, model_s=1 / 45, in_bytes=3_000, out_bytes=6_000, source="test")


def test_the_plan_scales_every_resource_with_the_rate():
    small, big = plan(1_000, COSTS), plan(20_000, COSTS)
    assert small.workers == math.ceil(1_000 * 0.004 / 0.7) == 6
    assert small.gpus == math.ceil(1_000 / 45 / 0.7) == 32
    assert small.partitions == 12 and small.chart_values["kafka.partitions"] == 12
    assert small.broker_in_mb_s == 3.0 and small.broker_out_mb_s == 18.0  # 6 KB out, three replicas
    assert big.workers == math.ceil(20_000 * 0.004 / 0.7) and big.gpus == math.ceil(20_000 / 45 / 0.7)
    assert big.chart_values["worker.autoscaling.maxReplicas"] == big.partitions >= 2 * big.workers
    with pytest.raises(EnrichError):
        plan(0, COSTS)


def test_throughput_on_shared_cores_is_bounded_by_the_workers_and_by_the_machine():
    c = ItemCosts(worker_cpu_s=0.01, model_s=0.02, in_bytes=1, out_bytes=1, source="t")
    assert throughput(1, c, cores=2) == pytest.approx(min(100, 2 / 0.03))
    assert throughput(4, c, cores=2) == pytest.approx(2 / 0.03)  # the machine, not the workers, binds


def test_costs_come_from_a_workers_metrics_page():
    reg = CollectorRegistry()
    items = Counter("enrich_items_in_total", "", registry=reg)
    cpu = Counter("process_cpu_seconds_total", "", registry=reg)
    model = Histogram("enrich_model_request_seconds", "", ["model", "backend"], registry=reg)
    bytes_in = Counter("enrich_input_bytes", "", registry=reg)
    bytes_out = Counter("enrich_output_bytes", "", registry=reg)
    items.inc(200)
    cpu.inc(1.0)
    model.labels("embedder_text", "triton").observe(2.0)
    model.labels("tagger_text", "triton").observe(2.0)
    bytes_in.inc(400_000)
    bytes_out.inc(800_000)
    c = costs_from_metrics(generate_latest(reg).decode(), "http://w/metrics")
    assert c.worker_cpu_s == pytest.approx(0.005) and c.model_s == pytest.approx(0.02)
    assert c.in_bytes == pytest.approx(2_000) and c.out_bytes == pytest.approx(4_000)
    few = CollectorRegistry()
    Counter("enrich_items_in_total", "", registry=few).inc(3)
    with pytest.raises(EnrichError, match="at least 50"):
        costs_from_metrics(generate_latest(few).decode(), "x")


def test_the_command_plans_from_a_costs_file(tmp_path, capsys):
    from ops.cli import main

    (tmp_path / "costs.json").write_text(json.dumps({"costs": {"worker_cpu_s": 0.004, "model_s": 0.01,
                                                               "in_bytes": 3000, "out_bytes": 6000}}))
    assert main(["capacity", "--rate", "1000", "--costs", str(tmp_path / "costs.json"),
                 "--model-items-per-s", "45", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["workers"] == 6 and out["gpus"] == 32 and "45 items/s per GPU" in out["costs"]["source"]
    assert main(["capacity", "--rate", "1000"]) == 1
    assert "--costs FILE" in capsys.readouterr().err
