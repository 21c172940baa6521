"""`enrich eval`: quality of the small presets on the debtags test split, through the real stream.

One run, on a private local stack (broker + Triton + a worker subprocess):

1. the catalogue (train + validation items) is embedded in-process with the same exported
   graphs and loaded into the neighbour index, as a backfill would;
2. the tag vocabulary and the test items go through the stream; the recall indexes are fed
   from ``recall.tags`` / ``recall.neighbors`` as the records arrive;
3. tags: the stream's grades against gold debtags, beside two baselines computed in this
   run from the same vectors: zero-shot (cosine between item and tag-name vectors, top N)
   and kNN propagation (similarity-weighted tag votes of the 10 nearest catalogue items,
   top N), N = ``--top`` (3: the mean gold count is 3.2);
4. the tagger alone: 3-class accuracy on held-out (item, tag) pairs built like the training
   pairs (gold, hard candidates from neighbour votes and zero-shot, a random tag);
5. neighbours: recall@10 and nDCG@10 against gold related packages for the ANN index and
   for semantic-ID prefix matching;
6. throughput: test items per second from the first publish to the last output read back.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from corpora import debtags
from corpora.debtags import DebtagsItem
from enrich.assembly import in_process_models
from enrich.schemas import decode, encode, encode_item, vector_from_bytes
from enrich.tagging.vocabulary import readable_tag
from enrich.vectors.cf_adapter import CfAdapter
from ops.kafka.clients import TopicReader, publish
from ops.local.harness import private_stack, read_until, start_worker
from ops.local.process import stop_pid
from ops.local.stack import debtags_vocabulary, ensure_codebook, ensure_models
from ops.measure import evaluate_kinds, evaluate_languages
from ops.measure.quality import K, prf, recall_ndcg, top_tags
from ops.recall.server import RecallIndexes
from ops.settings import ToolSettings
from streams.kafka_tools import Record
from streams.topology import ITEMS_ENRICHED, ITEMS_NEW, RECALL_NEIGHBORS, RECALL_TAGS, TAGS_VOCAB


def _grade(settings: ToolSettings, texts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Grades (0/1/2) of each text's candidate tags by the exported tagger (in-process ONNX Runtime, same graph)."""
    from enrich.preprocess import PreparedItem
    from enrich.schemas import Item

    items = [PreparedItem(Item(id=str(n), kind="article", title="", text=t, images=[], created_at=0), t, [])
             for n, t in enumerate(texts)]
    with in_process_models(settings) as (_, tagger):
        scores = tagger.score(items, candidates)
    return [sc.probs.argmax(axis=1) for sc in scores]


def _votes_alone(settings: ToolSettings, vecs: np.ndarray, vocab: list[str]) -> tuple[dict, list[set[str]]] | None:
    """The workers' tag prior (if they run one): its fit figures, and the tags whose neighbour votes alone
    reach the threshold fitted for them on validation (the ablation that shows what the tagger adds)."""
    from enrich.tagging.prior import TagPrior

    path = settings.tag_prior_file()
    if path is None:
        return None
    prior = TagPrior.load(path)
    t = prior.info["votes_alone_threshold"]
    votes = prior.votes(vecs, vocab)
    return ({"version": prior.version} | prior.info,
            [{vocab[j] for j in np.nonzero(row >= t)[0]} for row in votes])


def _tagger_pairs(settings: ToolSettings, test: list[DebtagsItem], vecs: np.ndarray, tag_vecs: np.ndarray,
                  vocab: list[str], catalogue: list[DebtagsItem], cat_vecs: np.ndarray) -> dict:
    """3-class accuracy of the tagger on held-out pairs built like the training pairs (hard negatives from
    the catalogue neighbours' votes and from the zero-shot retriever)."""
    from training.pairwise_tagger import TrainConfig, make_pairs, neighbour_candidates

    cfg = TrainConfig()
    near = neighbour_candidates(vecs, cat_vecs, [it.tags for it in catalogue], cfg.neighbour_candidates)
    zero = top_tags(vecs @ tag_vecs.T, vocab, cfg.hard_candidates)
    cands = [list(dict.fromkeys([*n, *z])) for n, z in zip(near, zero, strict=True)]
    pairs = make_pairs(test, vocab, cands, seed=1234, hard_per_item=cfg.hard_per_item)
    by_text: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_text.setdefault(p.text, []).append(i)
    texts = list(by_text)
    grades = _grade(settings, texts, [[pairs[i].tag for i in by_text[t]] for t in texts])
    predicted = np.zeros(len(pairs), np.int64)
    for t, g in zip(texts, grades, strict=True):
        predicted[by_text[t]] = g
    gold = np.array([p.grade for p in pairs])
    counts = np.bincount(gold, minlength=3)
    return {"pairs": len(pairs), "accuracy": round(float((predicted == gold).mean()), 4),
            "majority_class_accuracy": round(float(counts.max() / counts.sum()), 4),
            "per_grade_recall": {str(g): round(float((predicted[gold == g] == g).mean()), 4) for g in range(3)
                                 if counts[g]}}


def embed_debtags(settings: ToolSettings, items: Sequence[DebtagsItem],
                  say: Callable[[str], None] = print) -> tuple[np.ndarray, str]:
    """Content vectors of ``items`` from the exported embedder, in-process (as a backfill would), and
    the embedder's version; cached under the state dir per embedder version and item list, since
    the whole snapshot takes minutes on a small CPU."""
    import hashlib

    with in_process_models(settings) as (embedder, _):
        # an item is its text, not only its id: a package in Chinese has its English twin's id
        ids = [f"{it.id}#{hashlib.sha256(f'{it.title}{chr(10)}{it.text}'.encode()).hexdigest()[:12]}"
               for it in items]
        cached = settings.state_dir / "vectors" / f"{embedder.version}-{debtags.SNAPSHOT_VERSION}"
        whole = cached / "all.npz"  # the whole snapshot, when some run embedded it: any subset is a slice
        cache = cached / f"{hashlib.sha256(chr(10).join(ids).encode()).hexdigest()[:12]}.npy"
        if whole.exists():
            with np.load(whole) as z:
                row = {i: n for n, i in enumerate(z["ids"])}
                if all(i in row for i in ids):
                    say(f"content vectors of {len(items)} items from {whole}")
                    return z["vectors"][[row[i] for i in ids]], embedder.version
        if cache.exists():
            say(f"content vectors of {len(items)} items from {cache}")
            return np.load(cache), embedder.version
        t0 = time.perf_counter()
        vecs = embedder.embed_texts([f"{it.title}\n{it.text}" for it in items])
        say(f"{len(items)} items embedded in-process in {time.perf_counter() - t0:.0f}s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    if len(ids) == len(debtags.load_snapshot()):
        np.savez(whole, ids=np.array(ids), vectors=vecs)
    else:
        np.save(cache, vecs)
    return vecs, embedder.version


def run_eval(settings: ToolSettings, limit: int = 0, top_n: int = 3, out_json: Path | None = None,
             say: Callable[[str], None] = print, catalogue_limit: int = 0, kinds: bool = True,
             languages: bool = True) -> dict:
    """The report of the settings' small preset (the English one for a random-weight preset)."""
    from enrich.vectors.semantic_ids import SemanticIdCodebook
    from triton_models.export_small import small_preset

    t_start = time.perf_counter()
    settings = settings.updated(model_preset=small_preset(settings.model_preset).name)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_models(settings, progress=say)
    ensure_codebook(settings, progress=say)
    items = debtags.load_snapshot()
    vocab = debtags.tag_vocabulary(items)
    catalogue = [it for it in items if it.split != "test"]
    test = [it for it in items if it.split == "test"]
    if limit:
        test = test[:limit]
    if catalogue_limit:  # a smaller catalogue (smoke tests): neighbour and kNN numbers are not comparable then
        catalogue = catalogue[:catalogue_limit]
    say(f"dataset {debtags.SNAPSHOT_VERSION}: {len(catalogue)} catalogue items, {len(test)} test items, "
        f"{len(vocab)} tags")

    cat_vecs, _ = embed_debtags(settings, catalogue, say)  # the backfill of the catalogue
    if kinds:
        apps = evaluate_kinds.select_apps(limit, catalogue_limit)
        app_catalogue = evaluate_kinds.embed_catalogue(settings, apps, say)
    with in_process_models(settings) as (embedder, _):
        tag_vecs = embedder.embed_texts([readable_tag(t) for t in vocab])
    book = SemanticIdCodebook.load(settings.codebook_path)
    indexes = RecallIndexes()
    cat_codes = book.quantize(cat_vecs)
    cf_path = settings.cf_adapter_file()  # the workers' CF adapter: the catalogue gets the same CF vectors
    cat_cf = CfAdapter.load(cf_path).apply(cat_vecs) if cf_path is not None else [None] * len(catalogue)
    for it, vec, code, cf in zip(catalogue, cat_vecs, cat_codes, cat_cf, strict=True):
        record = {"item_id": it.id, "vector": vec.astype(np.float32).tobytes(),
                  "semantic_id": [int(c) for c in code], "enriched_at": 0,
                  "cf_vector": cf.astype(np.float32).tobytes() if cf is not None else None}
        indexes.neighbors.apply(record)
        indexes.cf_neighbors.apply(record)

    with private_stack(settings, say) as private:
        settings = private.settings
        worker = None
        try:
            entries = debtags_vocabulary(settings)
            # what the workers rank candidates by: the prototype where an entry has one, else the name
            cand_vecs = np.stack([vector_from_bytes(e.prototype) if e.prototype else tag_vecs[vocab.index(e.tag)]
                                  for e in entries])
            assert [e.tag for e in entries] == vocab
            publish(settings, TAGS_VOCAB, [(e.tag.encode(), encode(e)) for e in entries])
            worker = start_worker(settings, private.logs / "eval-worker.log")
            reader = TopicReader(settings, (ITEMS_ENRICHED, RECALL_TAGS, RECALL_NEIGHBORS))
            # A warm-up item, so model loading and the consumer-group join are not billed to throughput.
            warm = debtags.as_event(catalogue[0])
            warm["id"] = "warmup"
            publish(settings, ITEMS_NEW, [(b"warmup", encode_item(warm))])
            _wait(reader, indexes, {"warmup"}, {}, 300, worker)
            events = [debtags.as_event(it) for it in test]
            t_pub = time.perf_counter()
            publish(settings, ITEMS_NEW, [(e["id"].encode(), encode_item(e)) for e in events])
            records: dict[str, dict] = {}
            _wait(reader, indexes, {it.id for it in test}, records, 600, worker)
            stream_s = time.perf_counter() - t_pub
            if kinds:  # after the timed run: the per-kind items are not billed to throughput
                app_events = evaluate_kinds.held_out_events(apps)
                publish(settings, ITEMS_NEW, [(e["id"].encode(), encode_item(e))
                                                for e in app_events])
                _wait(reader, RecallIndexes(), {e["id"] for e in app_events}, records, 1200, worker)
            pairs = evaluate_languages.held_out_pairs(test) if languages else []
            if pairs:  # the same packages in Chinese, after the timed run too
                zh_events = [evaluate_languages.chinese_event(zh) for _, zh in pairs]
                publish(settings, ITEMS_NEW, [(e["id"].encode(), encode_item(e))
                                                for e in zh_events])
                _wait(reader, RecallIndexes(), {e["id"] for e in zh_events}, records, 600, worker)
            reader.close()
        finally:
            if worker is not None:
                stop_pid(worker.pid, 30, worker)
    say(f"{len(test)} test items through the stream in {stream_s:.1f}s")

    gold = [set(it.tags) for it in test]
    vecs = np.stack([vector_from_bytes(records[it.id]["embedding"]) for it in test])
    pred_any = [{t["tag"] for t in records[it.id]["tags"] if t["grade"] >= 1} for it in test]
    pred_strong = [{t["tag"] for t in records[it.id]["tags"] if t["grade"] == 2} for it in test]
    zero = top_tags(vecs @ tag_vecs.T, vocab, max(top_n, 5))
    from training.pairwise_tagger import neighbour_candidates  # the one kNN tag vote of the project

    knn = neighbour_candidates(vecs, cat_vecs, [it.tags for it in catalogue], top_n, k=K)
    prior = _votes_alone(settings, vecs, vocab)
    candidates = settings.candidate_count()
    report = {
        "preset": settings.model_preset, "dataset": debtags.SNAPSHOT_VERSION, "test_items": len(test),
        "catalogue_items": len(catalogue),
        "tags": len(vocab), "versions": records[test[0].id]["versions"],
        "candidate_tags": candidates, "baseline_top_n": top_n,
        "tagging": {
            "tagger_grade>=1": prf(pred_any, gold),
            "tagger_grade=2": prf(pred_strong, gold),
            f"zero_shot_top{top_n}": prf([set(z[:top_n]) for z in zero], gold),
            f"knn_propagation_top{top_n}": prf([set(k) for k in knn], gold),
            "zero_shot_recall@5": prf([set(z[:5]) for z in zero], gold)["recall"],
            f"candidate_recall@{candidates}": prf(
                [set(z) for z in top_tags(vecs @ cand_vecs.T, vocab, candidates)], gold)["recall"],
            f"name_candidate_recall@{candidates}": prf(
                [set(z) for z in top_tags(vecs @ tag_vecs.T, vocab, candidates)], gold)["recall"],
            f"prototype_top{top_n}": prf([set(z) for z in top_tags(vecs @ cand_vecs.T, vocab, top_n)], gold),
        },
        "tag_prior": prior and prior[0],
        "tagger_pairs": _tagger_pairs(settings, test, vecs, tag_vecs, vocab, catalogue, cat_vecs),
        "neighbours": _neighbours(indexes, test, items),
        "throughput": {"items": len(test), "seconds": round(stream_s, 2),
                       "items_per_s": round(len(test) / stream_s, 2),
                       # per stage, as `enrich bench --backlog` reports it: the test split is one burst
                       "stages": stage_figures(records, [it.id for it in test])},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    if prior:
        report["tagging"]["neighbour_votes_alone"] = prf(prior[1], gold)
    if pairs:
        report["per_language"] = evaluate_languages.languages_report(records, pairs, catalogue, cat_vecs,
                                                                     {it.id for it in items})
    if kinds:
        report["per_kind"] = evaluate_kinds.kinds_report(records, app_catalogue, cat_vecs,
                                                         [it.tags for it in catalogue], cand_vecs, vocab)
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    say(format_report(report))
    return report


def stage_figures(records: dict[str, dict], ids: list[str]) -> dict:
    """Per-stage latency and outputs per 10 s of the items ``ids`` (``ops.measure.backlog.summarise``)."""
    from ops.measure.backlog import summarise

    got = [records[i] for i in ids if i in records and records[i].get("enriched_at")]
    if not got:
        return {}
    return summarise({r["item_id"]: int(r["created_at"]) for r in got},
                     {r["item_id"]: int(r["enriched_at"]) for r in got},
                     {r["item_id"]: int(r["published_at"]) for r in got})


def _wait(reader: TopicReader, indexes: RecallIndexes, want: set[str], records: dict[str, dict],
          timeout_s: float, worker: subprocess.Popen[bytes]) -> None:
    """Read the outputs, feeding the indexes, until every wanted item has its record and neighbour entry."""
    pending_rec, pending_nb = set(want), set(want)

    def take(rec: Record) -> None:
        if rec.topic == ITEMS_ENRICHED:
            value = decode(rec.value)
            records[value["item_id"]] = value | {"published_at": rec.timestamp_ms}  # the record's timestamp
            pending_rec.discard(value["item_id"])
        else:
            indexes.apply(rec)
            if rec.topic == RECALL_NEIGHBORS:
                pending_nb.discard(decode(rec.value)["item_id"])

    read_until(reader, take, lambda: not (pending_rec or pending_nb), timeout_s, [worker],
               lambda: f"{len(pending_rec)} items not enriched, {len(pending_nb)} without a neighbour entry")


def _neighbours(indexes: RecallIndexes, test: list[DebtagsItem], items: list[DebtagsItem]) -> dict:
    known = {it.id for it in items}
    queries = [it for it in test if set(it.related) & known]
    gold = [set(it.related) & known for it in queries]
    index = indexes.neighbors
    ann = [[h.item_id for h in index.by_item(it.id, K)] for it in queries]
    sid = [[h.item_id for h in index.by_semantic_id(it.id, K)] for it in queries]
    out = {"queries": len(queries), "mean_gold_related": round(float(np.mean([len(g) for g in gold])), 2),
           "ann_index": recall_ndcg(ann, gold), "semantic_id_prefix": recall_ndcg(sid, gold)}
    if len(indexes.cf_neighbors):
        cf = [[h.item_id for h in indexes.cf_neighbors.by_item(it.id, K)] for it in queries]
        out["cf_ann_index"] = recall_ndcg(cf, gold)
    return out


def format_report(r: dict) -> str:
    t = r["tagging"]
    rows = [("tagger (stream), grade >= 1", t["tagger_grade>=1"]), ("tagger (stream), grade = 2", t["tagger_grade=2"]),
            (f"zero-shot cosine, top {r['baseline_top_n']}", t[f"zero_shot_top{r['baseline_top_n']}"]),
            (f"kNN propagation, top {r['baseline_top_n']}", t[f"knn_propagation_top{r['baseline_top_n']}"]),
            (f"prototype cosine, top {r['baseline_top_n']}", t[f"prototype_top{r['baseline_top_n']}"])]
    if "neighbour_votes_alone" in t:
        rows.append(("neighbour votes alone *", t["neighbour_votes_alone"]))
    lines = [f"\n== tags vs gold debtags ({r['test_items']} test items, {r['tags']} tags) ==",
             f"{'':<34}{'precision':>10}{'recall':>10}{'F1':>8}"]
    lines += [f"{name:<34}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>8.3f}" for name, m in rows]
    m = r["candidate_tags"]
    lines.append(f"zero-shot recall@5 {t['zero_shot_recall@5']:.3f}; candidate recall@{m}: "
                 f"{t[f'candidate_recall@{m}']:.3f} with the workers' tag vectors (prototypes where shipped), "
                 f"{t[f'name_candidate_recall@{m}']:.3f} with tag names")
    if r.get("tag_prior"):
        pr = r["tag_prior"]
        lines.append(f"workers' tag prior {pr['version']}: {pr['exemplars']} exemplars, decision threshold "
                     f"{pr['threshold']} (validation F1 {pr['validation_f1']})")
        lines.append(f"* the prior's exemplar votes >= {pr['votes_alone_threshold']} (fitted on validation), "
                     "no tagger: what the tagger adds is the gap to the stream's grade-2 row")
    tp = r["tagger_pairs"]
    lines.append(f"\n== tagger on {tp['pairs']} held-out (item, tag) pairs ==\n3-class accuracy {tp['accuracy']:.3f} "
                 f"(majority class {tp['majority_class_accuracy']:.3f}); recall per grade {tp['per_grade_recall']}")
    nb = r["neighbours"]
    lines.append(f"\n== neighbours vs gold related packages ({nb['queries']} queries, "
                 f"{nb['mean_gold_related']} related each) ==")
    for name, key in (("ANN index (usearch HNSW)", "ann_index"), ("ANN over CF-tuned vectors", "cf_ann_index"),
                      ("semantic-ID prefix", "semantic_id_prefix")):
        if key not in nb:
            continue
        lines.append(f"{name:<34}recall@10 {nb[key]['recall@10']:.3f}   nDCG@10 {nb[key]['ndcg@10']:.3f}")
    th = r["throughput"]
    lines.append(f"\nthroughput: {th['items']} items in {th['seconds']}s through the stream "
                 f"= {th['items_per_s']} items/s")
    if th.get("stages"):
        st = th["stages"]
        lines.append(f"  first stage {st['first_stage_items_per_s']} items/s; created -> enriched p50 "
                     f"{st['created_to_enriched']['p50_s']} s; enriched -> published p50 "
                     f"{st['enriched_to_published']['p50_s']} s, p99 {st['enriched_to_published']['p99_s']} s; "
                     f"{st['stalled_windows']} stalled 10 s windows")
        lines.append(f"  enriched per 10 s {st['enriched_per_10s']}; published per 10 s {st['published_per_10s']}")
    if "per_kind" in r:
        lines.append(evaluate_kinds.format_kinds(r["per_kind"]))
    if "per_language" in r:
        lines.append(evaluate_languages.format_languages(r["per_language"]))
    return "\n".join(lines)
