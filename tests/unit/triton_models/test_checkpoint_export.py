"""Exporting from a Hugging Face checkpoint directory, the way the real 3B tagger and 7B embedder are exported.

The checkpoint is a tiny random-weight Qwen2.5-VL / Qwen2-VL saved with ``save_pretrained``, with a real
byte-level BPE tokenizer trained here (no download), whose special tokens the model config points at.
"""

from __future__ import annotations

import subprocess
import sys

import msgpack
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from corpora import samples
from enrich.models.inference import OnnxRuntimeBackend
from enrich.models.loading import load_models
from enrich.preprocess import prepare
from enrich.schemas import decode_item
from ops.local.harness import settings_env
from triton_models.export import export_model
from triton_models.graphs import build_random_model
from triton_models.presets import Preset, get_preset

SPECIALS = ["<|endoftext|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [f"{i['title']} {i['text']}" for i in samples.sample_items(40)] + ["Tag: Relevance: 0 1 2"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    tok = _tokenizer()
    ids = {name: tok.convert_tokens_to_ids(name) for name in SPECIALS}
    out = {}
    for role in ("embedder", "tagger"):
        tiny = get_preset(role, "tiny")
        cfg = {**tiny.config, "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
               "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}
        cfg["text_config"] = {**cfg["text_config"], "bos_token_id": ids["<|endoftext|>"],
                              "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]}
        model = build_random_model(Preset(tiny.name, tiny.arch, role, cfg, tiny.min_pixels, tiny.max_pixels), seed=7)
        model.save_pretrained(root / role)
        tok.save_pretrained(root / role)
        out[role] = root / role
    return out, tok


def test_checkpoint_exports_with_its_own_tokenizer_and_serves(checkpoints, tmp_path):
    dirs, tok = checkpoints
    for role in ("embedder", "tagger"):
        r = export_model(role, tmp_path / role, checkpoint=dirs[role], max_pixels=112 * 112)
        assert max(r.max_abs_diff.values()) < 1e-4
        assert r.meta.tokenizer == "hf" and (tmp_path / role / "tokenizer" / "tokenizer.json").exists()
        assert r.meta.special["image_pad"] == tok.convert_tokens_to_ids("<|image_pad|>")
    tagger_meta = r.meta
    assert tagger_meta.label_token_ids == [tok.convert_tokens_to_ids(c) for c in "012"]

    embedder, tagger = load_models(tmp_path, OnnxRuntimeBackend(tmp_path), max_text_tokens=64, max_batch=4)
    assert embedder.tokenizer.encode("Tag: cats") == tok.encode("Tag: cats", add_special_tokens=False)
    items = [prepare(decode_item(msgpack.packb(i)), 8000) for i in samples.sample_items(3)]
    vectors = embedder.embed(items)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    scores = tagger.score(items, [["cats", "cooking"]] * 3)
    assert all(s.probs.shape == (2, 3) for s in scores)


def test_cli_refuses_a_directory_that_is_no_checkpoint(tmp_path, model_settings):
    res = subprocess.run([sys.executable, "-m", "ops.cli", "models", "export", "--role", "tagger",
                          "--tagger-checkpoint", str(tmp_path), "--out", str(tmp_path / "out")],
                         env=settings_env(model_settings), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "no config.json there" in res.stderr, res.stderr
