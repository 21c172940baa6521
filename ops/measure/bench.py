"""`enrich bench`: how many items per second the service sustains, measured side by side in one run.

On a private local stack (broker + Triton on free ports) with the tiny models:

(a) ``in-process``: the pipeline alone, ONNX Runtime in this process, fed micro-batches;
(b) ``triton``: the same pipeline calling the local Triton;
(c) ``stream``: the full service: items published to ``items.new``, Faust worker
    subprocesses, Triton, outputs read back from ``items.enriched``.

(c) is swept over micro-batch size and wait, then over in-flight batches at the best
of those, then run with two workers, then at a steady load of half the best measured
throughput, with the configured fetch wait and with faust-streaming's own 1500 ms. Latency in (a) and (b) is the
batch's wall time (every item is there at its start); in (c) it is end to end: the
item's ``created_at`` (set when it is published) to the ``items.enriched`` record's
timestamp (set by the worker when it sends it, acknowledged before the input is).
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from corpora import samples
from enrich.assembly import make_pipeline
from enrich.errors import EnrichError
from enrich.models.inference import OnnxRuntimeBackend, TritonBackend
from enrich.pipeline import RawEvent, SourceRef
from enrich.schemas import encode, encode_item, now_ms
from ops.kafka.clients import TopicReader, create_topics, publish
from ops.local.harness import private_stack, read_until, start_worker
from ops.local.process import free_port, stop_pid
from ops.settings import ToolSettings
from streams.kafka_tools import producer
from streams.topology import ITEMS_ENRICHED, ITEMS_NEW, TAGS_VOCAB

Say = Callable[[str], None]


@dataclass
class Run:
    mode: str
    batch_size: int
    batch_wait_s: float | None
    inflight: int
    workers: int
    load: str
    items: int
    seconds: float
    items_per_s: float
    p50_ms: float
    p99_ms: float
    stage_ms_per_item: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    items: int = 400
    batch_sizes: tuple[int, ...] = (4, 16, 32)
    waits_s: tuple[float, ...] = (0.005, 0.05)
    inflight: tuple[int, ...] = (1, 2, 3, 4)
    steady_s: float = 20.0
    out: Path = Path("benchmarks/results/stream.json")


def _percentiles(latencies_ms: list[float]) -> tuple[float, float]:
    a = np.asarray(latencies_ms, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def stream_items(n: int, tag: str, seed: int = 7) -> list[dict]:
    """Sample items under ids unique to one run (the stream keeps collision digits per id)."""
    pool = samples.sample_items(min(n, 120), seed=seed)
    return [pool[k % len(pool)] | {"id": f"{tag}-{k:05d}"} for k in range(n)]


def bench_pipeline(settings: ToolSettings, mode: str, items: list[dict], batch_size: int) -> Run:
    """(a) or (b): the pipeline alone over ``items`` in micro-batches."""
    backend = OnnxRuntimeBackend(settings.models_path) if mode == "in-process" else TritonBackend(settings.triton_url)
    pipeline = make_pipeline(settings, backend)
    for entry in samples.vocab_entries():
        pipeline.vocabulary.apply(entry)
    events = [RawEvent(i["id"].encode(), encode_item(i), SourceRef("bench", 0, k))
              for k, i in enumerate(items)]
    pipeline.run(events[:batch_size])  # warm-up: first-call allocations, gRPC channel
    latencies, stages = [], {}
    t_start = time.perf_counter()
    for k in range(0, len(events), batch_size):
        t0 = time.perf_counter()
        batch = events[k:k + batch_size]
        pipeline.run(batch)
        latencies += [(time.perf_counter() - t0) * 1e3] * len(batch)
        for name, dt in pipeline.last_timings.items():
            stages[name] = stages.get(name, 0.0) + dt
    seconds = time.perf_counter() - t_start
    backend.close()
    p50, p99 = _percentiles(latencies)
    return Run(mode, batch_size, None, 1, 1, "all queued", len(items), seconds, len(items) / seconds, p50, p99,
               {k: round(v * 1e3 / len(items), 2) for k, v in stages.items()})


class StreamHarness:
    """One consumer group of worker subprocesses on fresh topics of the local stack."""

    def __init__(self, settings: ToolSettings, workers: int, logs: Path) -> None:
        tag = f"b{time.time_ns()}"
        self.settings = settings.updated(**{"topic_prefix": f"{tag}.", "group_id": f"g-{tag}"})
        self.tag = tag
        create_topics(self.settings)
        publish(self.settings, TAGS_VOCAB, [(v.tag.encode(), encode(v)) for v in samples.vocab_entries()])
        self.ports = [free_port() for _ in range(workers)]
        self.procs = [start_worker(self.settings.updated(web_port=port), logs / f"{tag}-w{n}.log")
                      for n, port in enumerate(self.ports)]
        self.reader = TopicReader(self.settings, [ITEMS_ENRICHED])
        self._producer = producer(self.settings)

    def send(self, item: dict) -> None:
        item = item | {"created_at": now_ms()}
        self._producer.produce(self.settings.topic(ITEMS_NEW), key=item["id"].encode(),
                               value=encode_item(item))
        self._producer.poll(0)

    def flush(self) -> None:
        self._producer.flush(30)

    def collect(self, ids: set[str], timeout_s: float, into: dict[str, int] | None = None) -> dict[str, int]:
        """Output timestamps (ms) by item id, until every id in ``ids`` has one."""
        got: dict[str, int] = {} if into is None else into
        read_until(self.reader, lambda rec: got.setdefault(rec.key.decode(), rec.timestamp_ms),
                   lambda: ids <= got.keys(), timeout_s, self.procs,
                   lambda: f"{len(ids - got.keys())} of {len(ids)} items not enriched (logs {self.tag}-w*.log)",
                   poll_s=0.2)
        return got

    def pages(self) -> list[str]:
        """Each worker's ``/metrics`` page."""
        return [urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                for port in self.ports]

    def _scrape(self, prefix: str) -> list[dict[str, float]]:
        """Per worker, the samples of ``/metrics`` whose line starts with ``prefix``."""
        return [{ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in page.splitlines()
                 if ln.startswith(prefix)} for page in self.pages()]

    def items_in(self) -> list[float]:
        """Each worker's ``enrich_items_in_total``: all of them must have taken work before timing starts."""
        return [w.get("enrich_items_in_total", 0.0) for w in self._scrape("enrich_items_in_total ")]

    def stage_seconds(self) -> dict[str, float]:
        """Busy seconds per stage, summed over the workers."""
        total: dict[str, float] = {}
        for worker in self._scrape("enrich_stage_seconds_sum{"):
            for series, value in worker.items():
                stage = series.split('stage="', 1)[1].split('"', 1)[0]
                total[stage] = total.get(stage, 0.0) + value
        return total

    def warm_up(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        round_ = 0
        while True:
            batch = stream_items(4 * self.settings.partitions, f"{self.tag}-warm{round_}")
            for item in batch:
                self.send(item)
            self.flush()
            self.collect({i["id"] for i in batch}, max(1.0, deadline - time.monotonic()))
            if all(c > 0 for c in self.items_in()):
                return
            if time.monotonic() > deadline:
                raise EnrichError("not every worker got partitions during warm-up")
            round_ += 1
            time.sleep(1.0)

    def stop(self) -> None:
        self.reader.close()
        for p in self.procs:
            stop_pid(p.pid, 60, p)


def bench_stream(settings: ToolSettings, items: list[dict], batch_size: int, wait_s: float, inflight: int,
                 workers: int, logs: Path, rate: float | None = None, duration_s: float = 0.0) -> Run:
    """(c): a burst of ``items`` (``rate`` None) or a steady ``rate`` items/s for ``duration_s``."""
    s = settings.updated(batch_size=batch_size, batch_wait_s=wait_s, inflight_batches=inflight)
    h = StreamHarness(s, workers, logs)
    try:
        h.warm_up()
        timed = stream_items(len(items) if rate is None else int(rate * duration_s), f"{h.tag}-t")
        busy_before = h.stage_seconds()
        created: dict[str, int] = {}
        got: dict[str, int] = {}
        if rate is None:
            t0 = now_ms()
            for item in timed:
                created[item["id"]] = now_ms()
                h.send(item)
            h.flush()
        else:
            t0 = now_ms()

            def pace() -> None:
                start = time.perf_counter()
                for k, item in enumerate(timed):
                    delay = start + k / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    created[item["id"]] = now_ms()
                    h.send(item)
                h.flush()

            publisher = threading.Thread(target=pace, daemon=True)
            publisher.start()
            h.collect({i["id"] for i in timed[: max(1, len(timed) // 2)]}, duration_s + 120, into=got)
            publisher.join()
        h.collect({i["id"] for i in timed}, 300, into=got)
        latencies = [got[i] - created[i] for i in created]
        seconds = (max(got.values()) - t0) / 1000
        p50, p99 = _percentiles(latencies)
        busy = {k: round((v - busy_before.get(k, 0.0)) * 1e3 / len(timed), 2) for k, v in h.stage_seconds().items()}
        load = "burst" if rate is None else f"steady {rate:.0f}/s"
        if s.fetch_max_wait_ms != settings.fetch_max_wait_ms or s.fetch_max_wait_ms >= 1000:
            load += f" fw{s.fetch_max_wait_ms}"
        return Run("stream", batch_size, wait_s, inflight, workers, load, len(timed), seconds,
                   len(timed) / seconds, p50, p99, busy)
    finally:
        h.stop()


def table(runs: list[Run]) -> str:
    head = f"{'mode':<11} {'batch':>5} {'wait s':>6} {'inflight':>8} {'workers':>7} {'load':<20} {'items':>5} " \
           f"{'items/s':>8} {'p50 ms':>8} {'p99 ms':>8}  busy ms/item by stage"
    rows = [head, "-" * len(head)]
    for r in runs:
        wait = f"{r.batch_wait_s:g}" if r.batch_wait_s is not None else "-"
        stages = " ".join(f"{k}={v:g}" for k, v in r.stage_ms_per_item.items())
        rows.append(f"{r.mode:<11} {r.batch_size:>5} {wait:>6} {r.inflight:>8} {r.workers:>7} {r.load:<20} "
                    f"{r.items:>5} {r.items_per_s:>8.1f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f}  {stages}")
    return "\n".join(rows)


def run_bench(settings: ToolSettings, cfg: BenchConfig, say: Say = print) -> dict:
    runs: list[Run] = []

    def record(run: Run) -> Run:
        runs.append(run)
        say(table([run]).splitlines()[-1])
        return run

    with private_stack(settings, say, "bench", backend="triton") as private:
        settings, logs = private.settings, private.logs
        items = stream_items(cfg.items, "p")
        say(table([]))
        for b in cfg.batch_sizes:
            record(bench_pipeline(settings, "in-process", items, b))
            record(bench_pipeline(settings, "triton", items, b))
        default = settings.inflight_batches
        sweep = [record(bench_stream(settings, items, b, w, default, 1, logs))
                 for b in cfg.batch_sizes for w in cfg.waits_s]
        best = max(sweep, key=lambda r: r.items_per_s)
        b, w = best.batch_size, best.batch_wait_s or 0.0
        sweep += [record(bench_stream(settings, items, b, w, n, 1, logs)) for n in cfg.inflight if n != default]
        best = max(sweep, key=lambda r: r.items_per_s)
        b, w, n = best.batch_size, best.batch_wait_s or 0.0, best.inflight
        two = record(bench_stream(settings, items, b, w, n, 2, logs))
        steady_rate = best.items_per_s / 2
        steady = record(bench_stream(settings, items, b, w, n, 1, logs, rate=steady_rate, duration_s=cfg.steady_s))
        # The same load with faust-streaming's own fetch wait, to show what ENRICH_FETCH_MAX_WAIT_MS buys on Tansu.
        faust_wait = settings.updated(fetch_max_wait_ms=1500)
        legacy = record(bench_stream(faust_wait, items, b, w, n, 1, logs, rate=steady_rate, duration_s=cfg.steady_s))
    in_process = {r.batch_size: r for r in runs if r.mode == "in-process"}
    best_in_process = max(in_process.values(), key=lambda r: r.items_per_s)
    by_inflight = {r.inflight: r.items_per_s for r in sweep if (r.batch_size, r.batch_wait_s) == (b, w)}
    summary = {
        "best_stream": asdict(best),
        "stream_items_per_s_by_inflight": by_inflight,
        "stream_over_in_process_same_batch": best.items_per_s / in_process[best.batch_size].items_per_s,
        "stream_over_best_in_process": best.items_per_s / best_in_process.items_per_s,
        "two_workers_over_one": two.items_per_s / best.items_per_s,
        "steady_half_load": {"rate": steady_rate, "p50_ms": steady.p50_ms, "p99_ms": steady.p99_ms},
        "steady_half_load_fetch_wait_1500ms": {"p50_ms": legacy.p50_ms, "p99_ms": legacy.p99_ms},
    }
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
              "runs": [asdict(r) for r in runs], "summary": summary}
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(result, indent=2) + "\n")
    say("\n" + table(runs))
    say(f"\nfull stream / in-process (batch {best.batch_size}): "
        f"{summary['stream_over_in_process_same_batch']:.2f}x; / best in-process: "
        f"{summary['stream_over_best_in_process']:.2f}x; two workers / one: {summary['two_workers_over_one']:.2f}x; "
        f"steady {steady_rate:.0f}/s: p50 {steady.p50_ms:.0f} ms, p99 {steady.p99_ms:.0f} ms")
    say(f"results written to {cfg.out}")
    return result


def bench_delivery_modes(settings: ToolSettings, items: int, out: Path, rounds: int = 2, steady_s: float = 20.0,
                         say: Say = print) -> dict:
    """At-least-once beside exactly-once (ENRICH_EXACTLY_ONCE) on Apache Kafka, alternated ``rounds`` times in one
    run: a burst of ``items`` through one worker (items/s), then a steady load at half the first burst's rate for
    ``steady_s`` (end-to-end p50/p99: what a transaction per batch costs an item)."""
    runs: list[dict] = []
    with private_stack(settings, say, "bench", backend="triton", local_broker="kafka") as private:
        s, logs = private.settings, private.logs
        batch = stream_items(items, "d")
        say(table([]))
        rate = None
        for _ in range(rounds):
            for exactly_once in (False, True):
                mode = s.updated(exactly_once=exactly_once)
                name = "exactly-once" if exactly_once else "at-least-once"
                burst = bench_stream(mode, batch, s.batch_size, s.batch_wait_s, s.inflight_batches, 1, logs)
                rate = rate or burst.items_per_s / 2
                steady = bench_stream(mode, batch, s.batch_size, s.batch_wait_s, s.inflight_batches, 1, logs,
                                      rate=rate, duration_s=steady_s)
                for run, load in ((burst, f"{name} burst"), (steady, f"{name} steady {rate:.0f}/s")):
                    run.load = load
                    say(table([run]).splitlines()[-1])
                    runs.append(asdict(run) | {"mode": name})
    summary: dict = {}
    for name in ("at-least-once", "exactly-once"):
        bursts = [r for r in runs if r["mode"] == name and "burst" in r["load"]]
        steadies = [r for r in runs if r["mode"] == name and "steady" in r["load"]]
        summary[name] = {"burst_items_per_s": float(np.median([r["items_per_s"] for r in bursts])),
                         "steady_p50_ms": float(np.median([r["p50_ms"] for r in steadies])),
                         "steady_p99_ms": float(np.median([r["p99_ms"] for r in steadies]))}
    summary["steady_rate"] = rate
    summary["exactly_once_over_at_least_once_items_per_s"] = (summary["exactly-once"]["burst_items_per_s"]
                                                              / summary["at-least-once"]["burst_items_per_s"])
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "preset": settings.model_preset, "broker": "Apache Kafka (1 node)", "items": items,
              "runs": runs, "summary": summary}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    a, e = summary["at-least-once"], summary["exactly-once"]
    say(f"exactly-once / at-least-once: {summary['exactly_once_over_at_least_once_items_per_s']:.2f}x items/s in a "
        f"burst; steady {rate:.0f}/s p50 {e['steady_p50_ms']:.0f} ms against {a['steady_p50_ms']:.0f} ms, p99 "
        f"{e['steady_p99_ms']:.0f} ms against {a['steady_p99_ms']:.0f} ms; -> {out}")
    return result
