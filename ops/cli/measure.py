"""`enrich bench`, `enrich eval`, `enrich capacity`: speed, quality and capacity, measured here."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from enrich.errors import EnrichError
from ops.cli.console import say
from ops.settings import ToolSettings

EVAL_OUT = Path("benchmarks/results/eval_small.json")
BENCH_OUT = Path("benchmarks/results/stream.json")
BACKLOG_OUT = Path("benchmarks/results/backlog.json")
DELIVERY_OUT = Path("benchmarks/results/delivery_modes.json")


def _numbers(text: str, kind: type, flag: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise EnrichError(f"{flag} expects a comma-separated list of positive numbers, e.g. 4,16,32 (got {text!r})")
    return values


def cmd_bench(s: ToolSettings, a: argparse.Namespace) -> int:
    from ops.measure.bench import BenchConfig, run_bench

    if a.delivery_modes:
        from ops.measure.bench import bench_delivery_modes

        bench_delivery_modes(s, a.items, a.out if a.out != BENCH_OUT else DELIVERY_OUT, say=say)
        return 0
    if a.backlog:
        from ops.measure.backlog import run_backlog

        run_backlog(s, a.backlog, a.out if a.out != BENCH_OUT else BACKLOG_OUT, say=say)
        return 0
    if a.items < 20:
        raise EnrichError("--items must be at least 20 for percentiles to mean anything")
    cfg = BenchConfig(items=a.items, batch_sizes=_numbers(a.batch_sizes, int, "--batch-sizes"),
                      waits_s=_numbers(a.waits, float, "--waits"), inflight=_numbers(a.inflight, int, "--inflight"),
                      steady_s=a.steady_s, out=a.out)
    run_bench(s, cfg, say=say)
    return 0


def cmd_eval(s: ToolSettings, a: argparse.Namespace) -> int:
    from ops.measure.evaluate import run_eval

    if a.emoji is not None:
        from ops.measure.evaluate_emoji import run_emoji_eval

        report = run_emoji_eval(s, a.emoji, say=say, limit=a.limit)
        out = a.out.with_name("eval_emoji.json") if a.out == EVAL_OUT else a.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        return 0
    run_eval(s, limit=a.limit, top_n=a.top, out_json=a.out, say=say, catalogue_limit=a.catalogue_limit,
             kinds=not a.no_kinds, languages=not a.no_languages)
    return 0


def cmd_capacity(s: ToolSettings, a: argparse.Namespace) -> int:
    import dataclasses
    import urllib.request

    from ops.measure import capacity

    if a.validate:
        out = a.out or Path("benchmarks/results/capacity.json")
        result = capacity.validate(s, items=a.items, out=out, say=say)
        say(f"costs per item: {json.dumps(result['costs'])}; written to {out}")
        return 0
    if a.rate is None:
        raise EnrichError("pass --rate R (new items per second), or --validate to measure the costs here")
    if a.metrics:
        try:
            with urllib.request.urlopen(a.metrics, timeout=10) as resp:
                costs = capacity.costs_from_metrics(resp.read().decode(), a.metrics)
        except OSError as exc:
            raise EnrichError(f"cannot read {a.metrics}: {exc}; point --metrics at a running worker's /metrics") \
                from None
    elif a.costs:
        costs = capacity.load_costs(a.costs)
    else:
        raise EnrichError("pass --costs FILE (from `enrich capacity --validate`) or --metrics URL of a live worker")
    if a.model_items_per_s:
        costs = dataclasses.replace(costs, model_s=1.0 / a.model_items_per_s,
                                    source=f"{costs.source}; model: {a.model_items_per_s:g} items/s per GPU "
                                           "(--model-items-per-s)")
    elif (gpu := capacity.gpu_figure(a.gpu_result)) is not None:
        costs = dataclasses.replace(costs, model_s=1.0 / gpu.items_per_s, source=f"{costs.source}; {gpu.describe()}")
    else:
        say(f"no GPU measurement at {a.gpu_result} (benchmarks/gpu_run.sh writes one): the model cost is the one "
            f"measured with the costs ({costs.source}), which on a CPU model server says nothing of a GPU's; pass "
            "--model-items-per-s to plan GPUs")
    p = capacity.plan(a.rate, costs, cores_per_worker=a.cores_per_worker, utilisation=a.utilisation,
                      replication=s.replication_factor)
    say(json.dumps(capacity.as_json(p), indent=2) if a.json else capacity.format_plan(p))
    return 0


def capacity_result_path() -> Path:
    from ops.measure.capacity import GPU_RESULT

    return GPU_RESULT


def add_commands(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="measure items/s and latency: pipeline in-process, via Triton, full stream")
    b.add_argument("--items", type=int, default=400, help="items per measured run")
    b.add_argument("--batch-sizes", default="4,16,32", help="micro-batch sizes to sweep")
    b.add_argument("--waits", default="0.005,0.05", help="micro-batch waits (s) to sweep in the stream")
    b.add_argument("--inflight", default="1,2,3,4", help="in-flight batches to sweep at the best batch size/wait")
    b.add_argument("--steady-s", type=float, default=20.0, help="length of the steady half-load run (s)")
    b.add_argument("--backlog", type=int, default=0, metavar="N",
                   help="instead: N real apps with icons, then N text only, each published as one burst; every "
                        "output timed per stage (results: benchmarks/results/backlog.json)")
    b.add_argument("--delivery-modes", action="store_true",
                   help="instead: at-least-once beside exactly-once on Apache Kafka, --items per burst, alternated "
                        "twice (results: benchmarks/results/delivery_modes.json)")
    b.add_argument("--out", type=Path, default=BENCH_OUT, help="results JSON")
    b.set_defaults(fn=cmd_bench)
    ev = sub.add_parser("eval", help="tagging and neighbour quality of the small presets on the debtags test split")
    ev.add_argument("--limit", type=int, default=0, help="only the first N test items (0: all), and apps")
    ev.add_argument("--no-languages", action="store_true",
                    help="skip the per-language run (the held-out packages in Chinese beside English)")
    ev.add_argument("--no-kinds", action="store_true",
                    help="skip the per-kind run (AppStream test apps as listing, name + summary and icon alone, "
                         "each with and without the icon)")
    ev.add_argument("--catalogue-limit", type=int, default=0,
                    help="only the first N catalogue items (0: all; smaller numbers are for smoke runs)")
    ev.add_argument("--top", type=int, default=3, help="tags the baselines predict per item")
    ev.add_argument("--emoji", type=Path,
                    help="instead: image-only items with a vocabulary of their own, the held-out emoji of this "
                         "unpacked emoji-datasource-google package (results to eval_emoji.json)")
    ev.add_argument("--out", type=Path, default=EVAL_OUT, help="results JSON")
    ev.set_defaults(fn=cmd_eval)
    cp = sub.add_parser("capacity", help="partitions, workers, GPUs and broker throughput for a rate of new items, "
                                         "from measured per-item costs")
    cp.add_argument("--rate", type=float, help="new items per second to plan for")
    cp.add_argument("--costs", type=Path, help="per-item costs measured by `enrich capacity --validate`")
    cp.add_argument("--metrics", help="a live worker's /metrics URL to read the per-item costs from")
    cp.add_argument("--model-items-per-s", type=float, default=0.0,
                    help="items/s one GPU serves (both models), instead of the measured model cost")
    cp.add_argument("--gpu-result", type=Path, default=capacity_result_path(),
                    help="a benchmarks/gpu_run.sh result whose served embed + tag rate plans the GPUs (default: the "
                         "committed one, when there is one)")
    cp.add_argument("--cores-per-worker", type=float, default=1.0, help="CPU cores per worker pod (default 1)")
    cp.add_argument("--utilisation", type=float, default=0.7, help="target busy share of each resource")
    cp.add_argument("--json", action="store_true", help="print the plan as JSON")
    cp.add_argument("--validate", action="store_true", help="measure one worker on a private local stack, "
                                                            "predict one and two workers, measure two")
    cp.add_argument("--items", type=int, default=400, help="items per measured run (--validate)")
    cp.add_argument("--out", type=Path, help="where --validate writes its JSON (default "
                                             "benchmarks/results/capacity.json)")
    cp.set_defaults(fn=cmd_capacity)
