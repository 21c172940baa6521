"""`enrich bench --backlog N`: real items published as one burst, each output timed per stage.

A backlog is when "within seconds" is tested: after a producer catches up, a deploy, a Triton outage. Real
AppStream apps (their listings, with their icons or without) are published at once to one worker on a private
local stack; every ``items.enriched`` record gives three times of its item:

- ``created_at``: when it was published;
- ``enriched_at``: when the first stage finished it (enriched, handed to ``items.coded``);
- the record's timestamp: when the second stage published it.

Per burst: the first stage's latency (``enriched_at - created_at``) and rate, the hand-off between the stages
(record timestamp - ``enriched_at``), and per 10 s window how many items each stage finished, with the count of
windows in which the first stage finished items and the second published none (a stall).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import msgpack
import numpy as np

from corpora.appstream import app_event, load_icons, load_snapshot
from enrich.errors import EnrichError
from ops.local.harness import private_stack, read_until
from ops.measure.bench import StreamHarness
from ops.settings import ToolSettings

Say = Callable[[str], None]
WINDOW_S = 10.0


@dataclass(frozen=True)
class Burst:
    name: str
    items: int
    images: bool


def burst_items(n: int, images: bool, tag: str) -> list[dict]:
    """``n`` real apps (cycled, under ids unique to the burst): the listing with its icon, or the listing alone."""
    apps, icons = load_snapshot(), load_icons()
    kind = "long_text_image" if images else "long_text"
    return [app_event(apps[k % len(apps)], kind, icons.get(apps[k % len(apps)].id, b"")) | {"id": f"{tag}-{k:05d}"}
            for k in range(n)]


def _dist(values_ms: list[float]) -> dict[str, float]:
    a = np.asarray(values_ms, np.float64) / 1000
    return {"p50_s": round(float(np.percentile(a, 50)), 3), "p90_s": round(float(np.percentile(a, 90)), 3),
            "p99_s": round(float(np.percentile(a, 99)), 3), "max_s": round(float(a.max()), 3)}


def _windows(times_ms: list[int], start_ms: int, end_ms: int) -> list[int]:
    n = int((end_ms - start_ms) // (WINDOW_S * 1000)) + 1
    counts = [0] * n
    for t in times_ms:
        counts[min(n - 1, max(0, int((t - start_ms) // (WINDOW_S * 1000))))] += 1
    return counts


def summarise(created: dict[str, int], enriched: dict[str, int], published: dict[str, int]) -> dict:
    """The per-stage figures of one burst from each item's three times (ms)."""
    ids = sorted(created)
    start = min(created.values())
    end = max(max(published.values()), max(enriched.values()))
    by_enriched = _windows([enriched[i] for i in ids], start, end)
    by_published = _windows([published[i] for i in ids], start, end)
    first_done = max(enriched[i] for i in ids)
    stalls = [k for k, (e, p) in enumerate(zip(by_enriched, by_published, strict=True))
              if e > 0 and p == 0 and (k + 1) * WINDOW_S * 1000 + start <= first_done]
    return {
        "items": len(ids),
        "first_stage_items_per_s": round(len(ids) / max(1e-3, (first_done - start) / 1000), 2),
        "created_to_enriched": _dist([enriched[i] - created[i] for i in ids]),
        "enriched_to_published": _dist([published[i] - enriched[i] for i in ids]),
        "created_to_published": _dist([published[i] - created[i] for i in ids]),
        "enriched_per_10s": by_enriched,
        "published_per_10s": by_published,
        "stalled_windows": len(stalls),
    }


def run_burst(settings: ToolSettings, burst: Burst, logs: Path, say: Say) -> dict:
    h = StreamHarness(settings, 1, logs)
    try:
        h.warm_up()
        items = burst_items(burst.items, burst.images, f"{h.tag}-{burst.name}")
        ids = {i["id"] for i in items}
        created: dict[str, int] = {}  # the three times of each item, read back from its items.enriched record
        enriched: dict[str, int] = {}
        published: dict[str, int] = {}
        for item in items:
            h.send(item)  # stamps created_at as it publishes
        h.flush()
        say(f"{burst.name}: {len(items)} items published at once")

        def take(rec) -> None:  # noqa: ANN001 - a Record
            item_id = rec.key.decode()
            if item_id in ids and item_id not in published:
                value = msgpack.unpackb(rec.value, raw=False)
                created[item_id] = int(value["created_at"])
                enriched[item_id] = int(value["enriched_at"])
                published[item_id] = rec.timestamp_ms

        t0 = time.monotonic()
        read_until(h.reader, take, lambda: len(published) == len(ids), 60 + burst.items * 2.0, h.procs,
                   lambda: f"{len(ids) - len(published)} of {len(ids)} items not out", poll_s=0.2)
        result = {"burst": asdict(burst)} | summarise(created, enriched, published)
        say(f"{burst.name}: done in {time.monotonic() - t0:.0f}s; first stage {result['first_stage_items_per_s']} "
            f"items/s; enriched -> published p50 {result['enriched_to_published']['p50_s']} s, p99 "
            f"{result['enriched_to_published']['p99_s']} s, max {result['enriched_to_published']['max_s']} s; "
            f"{result['stalled_windows']} stalled 10 s windows")
        return result
    finally:
        h.stop()


def run_backlog(settings: ToolSettings, items: int, out: Path, say: Say = print,
                bursts: tuple[Burst, ...] | None = None) -> dict:
    """The bursts (``items`` apps with icons, then the same number text only) on one private stack."""
    if items < 20:
        raise EnrichError("--backlog must be at least 20 items")
    bursts = bursts or (Burst("apps_with_icons", items, True), Burst("apps_text_only", items, False))
    with private_stack(settings, say, "backlog", backend="triton") as private:
        results = [run_burst(private.settings, b, private.logs, say) for b in bursts]
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "preset": settings.model_preset, "broker": getattr(settings, "local_broker", "tansu"),
              "settings": {"batch_size": settings.batch_size, "batch_wait_s": settings.batch_wait_s,
                           "inflight_batches": settings.inflight_batches},
              "window_s": WINDOW_S, "bursts": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    say(f"results written to {out}")
    return report
