"""`enrich demo`: the whole path on the embedded local stack, printed for a person.

Starts broker + Triton on free ports, a worker subprocess, publishes the
sample vocabulary, sample items and malformed events, reads every output
topic back, prints per item its tags, semantic ID and nearest neighbours so
far, the DLQ with reasons, and the timings; then stops everything.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from corpora import samples
from enrich.schemas import VocabEntry, decode, encode, encode_item, vector_from_bytes
from ops.kafka.clients import TopicReader, publish
from ops.local.harness import private_stack, read_until, start_worker
from ops.local.process import free_port, stop_pid
from ops.local.stack import debtags_vocabulary
from ops.settings import ToolSettings
from streams.topology import ITEMS_DLQ, ITEMS_ENRICHED, ITEMS_NEW, RECALL_NEIGHBORS, RECALL_TAGS, TAGS_VOCAB

OUTPUTS = (ITEMS_ENRICHED, RECALL_TAGS, RECALL_NEIGHBORS, ITEMS_DLQ)


@dataclass
class Collected:
    by_topic: dict[str, list] = field(default_factory=lambda: {t: [] for t in OUTPUTS})

    def count(self, topic: str) -> int:
        return len(self.by_topic[topic])


def collect(reader: TopicReader, until: dict[str, int], timeout_s: float,
            worker: subprocess.Popen[bytes]) -> Collected:
    got = Collected()
    read_until(reader, lambda rec: got.by_topic[rec.topic].append(decode(rec.value)),
               lambda: all(got.count(t) >= n for t, n in until.items()), timeout_s, [worker],
               lambda: ", ".join(f"{t} {got.count(t)}/{n}" for t, n in until.items()))
    return got


def _serve_page(settings: ToolSettings, out: callable) -> threading.Event:
    """The recall server with its inspector page, in this process, fed from the demo's topics."""
    from ops.recall.server import serve

    port, ready, stop = free_port(), threading.Event(), threading.Event()
    threading.Thread(target=serve, args=(settings, port, ready, stop), name="demo-recall", daemon=True).start()
    ready.wait(30)
    out(f"inspector page: http://{settings.recall_bind}:{port}/ (items, images, tags and neighbours)")
    return stop


def run_demo(settings: ToolSettings, n_items: int = 30, out: callable = print, wait: bool = False) -> int:
    t_start = time.perf_counter()
    with private_stack(settings, out) as private:
        _demo_on(private.settings, n_items, out, wait)
    out(f"demo wall time {time.perf_counter() - t_start:.1f}s")
    return 0


def _demo_on(settings: ToolSettings, n_items: int, out: callable, wait: bool) -> None:
    worker = None
    try:
        content = demo_content(settings, n_items)
        items = content.items
        publish(settings, TAGS_VOCAB, [(v.tag.encode(), encode(v)) for v in content.vocab])
        out(f"published {len(content.vocab)} tags to tags.vocab")
        worker_log = settings.state_dir / "logs" / "worker.log"
        worker = start_worker(settings, worker_log)
        out(f"worker started (pid {worker.pid}, log {worker_log}, metrics http://127.0.0.1:{settings.web_port}/metrics)")
        bad = samples.malformed_events()
        t_pub = time.perf_counter()
        publish(settings, ITEMS_NEW, [(i["id"].encode(), encode_item(i)) for i in items] +
                [(f"bad-{n}".encode(), raw) for n, (_, raw) in enumerate(bad)])
        alone = sum(1 for i in items if i["images"] and not i["title"] and not i["text"])
        out(f"published {len(items)} items ({sum(1 for i in items if i['images'])} with images, {alone} of them "
            f"an image alone; {len(content.twins)} twins without the image) and {len(bad)} malformed events "
            "to items.new")
        reader = TopicReader(settings, OUTPUTS)
        got = collect(reader, {ITEMS_ENRICHED: len(items), RECALL_NEIGHBORS: len(items),
                               ITEMS_DLQ: len(bad)}, 180, worker)
        t_done = time.perf_counter()
        reader.close()
        report(got, content, out)
        if content.chinese:
            from triton_models.export_small import small_preset

            out(f"\nthe {settings.model_preset} preset reads {small_preset(settings.model_preset).languages}"
                + ("" if small_preset(settings.model_preset).tower == "use" else
                   ": the Chinese items' tags and neighbours are guesses (ENRICH_MODEL_PRESET=multilingual reads "
                   "Chinese)"))
        page = _serve_page(settings, out)
        enriched = got.by_topic[ITEMS_ENRICHED]
        span = (max(r["enriched_at"] for r in enriched) - min(i["created_at"] for i in items)) / 1000
        out(f"\n{len(enriched)} items enriched, {got.count(RECALL_TAGS)} tag edges, "
            f"{got.count(ITEMS_DLQ)} dead letters; all outputs read back {t_done - t_pub:.2f}s after publishing "
            f"({len(items) / max(span, 1e-9):.1f} items/s from first publish to last enrichment)")
        if wait:
            input("\nthe stack and the inspector page stay up: press Enter to stop ")
        page.set()
    finally:
        if worker is not None:
            stop_pid(worker.pid, 30, worker)
            out(f"worker stopped (exit code {worker.returncode})")


@dataclass
class DemoContent:
    vocab: list[VocabEntry]
    items: list[dict]
    gold: dict[str, list[str]] = field(default_factory=dict)  # item id -> known tags
    chinese: set[str] = field(default_factory=set)  # items whose text is Chinese
    twins: dict[str, str] = field(default_factory=dict)  # item with an image -> the same item without it


CHINESE_ITEMS = 3


def demo_content(settings: ToolSettings, n_items: int) -> DemoContent:
    """What the demo publishes. Small presets: held-out AppStream apps (real listings and their icons, with
    debtags as gold), two thirds as the listing with its icon, each beside its twin without the icon so the
    report can say what the image changed, a third as the icon alone; then a few held-out apps' Chinese
    listings (which only the multilingual preset reads). Tiny preset: generated samples."""
    from ops.local.stack import is_small

    if not is_small(settings):
        return DemoContent(samples.vocab_entries(), samples.sample_items(n_items))
    from corpora import appstream, appstream_zh
    from corpora.appstream import app_event

    test = [it for it in appstream.load_snapshot() if it.split == "test" and it.tags]
    picked = test[:: max(1, len(test) // n_items)][:n_items]
    icons = appstream.load_icons()
    content = DemoContent(debtags_vocabulary(settings), [])
    for n, it in enumerate(picked):
        if n % 3 == 2:
            item = app_event(it, "image_only", icons[it.id])
        else:
            item = app_event(it, "long_text_image", icons[it.id])
            twin = app_event(it, "long_text", icons[it.id])
            content.items.append(twin)
            content.twins[item["id"]] = twin["id"]
        content.items.append(item)
        content.gold[item["id"]] = it.tags
    chinese = [it for it in appstream_zh.load_snapshot() if it.split == "test" and it.text and it.tags]
    for it in chinese[:CHINESE_ITEMS]:
        item = app_event(it, "long_text_image", icons[it.id]) | {"id": f"{it.id}#zh_CN"}
        content.items.append(item)
        content.gold[item["id"]] = it.tags
        content.chinese.add(item["id"])
    return content


def _image_change(record: dict, twin: dict, vec: np.ndarray, twin_vec: np.ndarray) -> str:
    strong = {t["tag"] for t in record["tags"] if t["grade"] == 2}
    before = {t["tag"] for t in twin["tags"] if t["grade"] == 2}
    gained = ", ".join(f"+{t}" for t in sorted(strong - before))
    lost = ", ".join(f"-{t}" for t in sorted(before - strong))
    tags = "; ".join(x for x in (gained, lost) if x) or "no strong tag changed"
    return f"the icon changed: {tags}; vector cosine to the text alone {float(vec @ twin_vec):.3f}"


def _nearest(vecs: np.ndarray, k: int, ids: list[str], n: int = 3) -> str:
    """Item ``k``'s nearest among the items before it."""
    sims = vecs[:k] @ vecs[k]
    return "; ".join(f"{ids[j]} ({sims[j]:.3f})" for j in np.argsort(-sims)[:n])


def report(got: Collected, content: DemoContent, out: callable) -> None:
    titles = {i["id"]: i["title"] or "(an image alone)" for i in content.items}
    twin_ids = set(content.twins.values())
    all_vecs = {n["item_id"]: vector_from_bytes(n["vector"]) for n in got.by_topic[RECALL_NEIGHBORS]}
    neighbors = [n for n in got.by_topic[RECALL_NEIGHBORS] if n["item_id"] not in twin_ids]
    ids = [n["item_id"] for n in neighbors]
    vecs = np.stack([vector_from_bytes(n["vector"]) for n in neighbors])
    cf_vecs = (np.stack([vector_from_bytes(n["cf_vector"]) for n in neighbors])
               if neighbors and all(n.get("cf_vector") for n in neighbors) else None)
    out("\n== enriched items (tags: grade/prob; semantic id; nearest neighbours among earlier items) ==")
    by_id = {r["item_id"]: r for r in got.by_topic[ITEMS_ENRICHED]}
    for k, item_id in enumerate(ids):
        r = by_id[item_id]
        tags = ", ".join(f"{t['tag']} {t['grade']}/{t['prob']:.2f}" for t in r["tags"][:4]) or "(none >= grade 1)"
        near = cf_near = ""
        if k:
            near = _nearest(vecs, k, ids)
            if cf_vecs is not None:
                cf_near = _nearest(cf_vecs, k, ids)
        sid = "-".join(str(c) for c in r["semantic_id"])
        out(f"{item_id:<24} {r['kind']:<10} {titles[item_id][:40]:<40} sid {sid:<9} tags: {tags}")
        if item_id in content.chinese:
            out(f"{'':<35} text in Chinese (zh_CN): {titles[item_id][:60]}")
        if item_id in content.gold:
            out(f"{'':<35} gold (debtags): {', '.join(content.gold[item_id])}")
        if item_id in content.twins:
            twin = content.twins[item_id]
            out(f"{'':<35} {_image_change(r, by_id[twin], all_vecs[item_id], all_vecs[twin])}")
        if near:
            out(f"{'':<35} neighbours: {near}")
        if cf_near:
            out(f"{'':<35} CF-tuned neighbours: {cf_near}")
        if r.get("caption"):
            out(f"{'':<35} caption: {r['caption'][:90]} -> {len(r['caption_features'])} feature ids")
    out("\n== dead letters ==")
    for d in got.by_topic[ITEMS_DLQ]:
        out(f"{d['source_topic']}[{d['source_partition']}]@{d['source_offset']:<4} {d['stage']:<10} "
            f"{d['reason']:<18} {d['detail'][:70]}")
    versions = got.by_topic[ITEMS_ENRICHED][0]["versions"]
    out(f"\nmodel versions: embedder {versions['embedder']}, tagger {versions['tagger']}, "
        f"codebook {versions['codebook']}, CF adapter {versions.get('cf_adapter') or 'none'}, "
        f"tag prior {versions.get('tag_prior') or 'none'}, captions {versions.get('captions') or 'off'}")
