"""The real small presets: real weights load and behave, exports equal the PyTorch models, training runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from emoji_package import write_emoji_package
from PIL import Image

from corpora.debtags import DebtagsItem, build
from enrich.models.inference import OnnxRuntimeBackend
from enrich.models.loading import load_models
from enrich.preprocess import PreparedItem
from enrich.schemas import Item
from enrich.tagging.vocabulary import readable_tag
from triton_models.export_small import DEFAULT_FUSION, PAIRWISE_TAGGER
from triton_models.small_models import (
    CrossEncoderTagger,
    EfficientNetLite0,
    LoRALinear,
    embed_texts,
    image_pixels,
    load_fusion_head,
    load_minilm,
    load_tagger,
    minilm_tokenizer,
)

FIXTURE = Path(__file__).parents[2] / "fixtures" / "debian"


def fixture_items() -> list[DebtagsItem]:
    return build((FIXTURE / "Packages").read_text().splitlines(), (FIXTURE / "Translation-en").read_text().splitlines())


def prepared(text: str, images: list[Image.Image] | None = None) -> PreparedItem:
    return PreparedItem(Item(id="x", kind="article", title="", text=text, created_at=0), text, images or [])


@pytest.fixture(scope="module")
def small(small_model_settings):
    backend = OnnxRuntimeBackend(small_model_settings.models_path)
    embedder, tagger = load_models(small_model_settings.models_path, backend, max_text_tokens=128, max_batch=8)
    yield embedder, tagger
    backend.close()


def test_efficientnet_lite0_weights_recognise_real_photos() -> None:
    from sklearn.datasets import load_sample_image

    net = EfficientNetLite0.pretrained()
    photos = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    with torch.no_grad():
        top = net(image_pixels(photos)).argmax(-1).tolist()
    assert top == [698, 985]  # ImageNet "palace" (a Chinese temple roof) and "daisy"


def test_small_text_path_is_all_minilm_mean_pooling(small) -> None:
    embedder, _ = small
    texts = ["an audio CD ripper and encoder", "real-time strategy game of ancient warfare"]
    got = embedder.embed_texts(texts)
    ref = embed_texts(load_minilm(), minilm_tokenizer(), texts).numpy()
    assert np.allclose(got, ref, atol=1e-5)
    assert float(got[0] @ got[1]) < 0.5  # unrelated texts are far apart
    # a text-only item and the same text through embed_texts are one vector
    assert np.allclose(embedder.embed([prepared(texts[0])])[0], got[0], atol=1e-6)


def test_images_move_the_vector_through_the_trained_gate(small) -> None:
    from sklearn.datasets import load_sample_image

    embedder, _ = small
    text = "photos from my weekend trip"
    photo = Image.fromarray(load_sample_image("china.jpg"))
    flower = Image.fromarray(load_sample_image("flower.jpg"))
    v_text, v_photo, v_flower, v_both = embedder.embed(
        [prepared(text), prepared(text, [photo]), prepared(text, [flower]), prepared(text, [photo, flower])])
    assert float(v_photo @ v_flower) < 0.99 and float(v_text @ v_photo) < 0.99
    # the same computation by hand in PyTorch: projected image vector(s), mean, gate, L2
    head, _ = load_fusion_head(DEFAULT_FUSION)
    net = EfficientNetLite0.pretrained()
    t = embed_texts(load_minilm(), minilm_tokenizer(), [text])
    with torch.no_grad():
        v = head.project(net.features(image_pixels([photo, flower])))
        ref_photo = head.fuse(v[:1], t, torch.ones(1))[0].numpy()
        mean = torch.nn.functional.normalize(v.mean(0, keepdim=True), dim=-1)  # the item's images, averaged
        ref_both = head.fuse(mean, t, torch.ones(1))[0].numpy()
    assert np.allclose(v_photo, ref_photo, atol=1e-4) and np.allclose(v_both, ref_both, atol=1e-4)
    assert all(abs(float(np.linalg.norm(v)) - 1) < 1e-5 for v in (v_text, v_photo, v_both))


def test_served_pairwise_tagger_equals_the_trained_lora_model(small_model_settings, tmp_path) -> None:
    """The baseline tagger (ENRICH_SMALL_TAGGER=pairwise): its export grades as the trained model does."""
    import shutil

    from enrich.models.encoders import EncoderTagger
    from triton_models.export_small import export_small

    shutil.copytree(small_model_settings.models_path / "embedder", tmp_path / "embedder")
    export_small("tagger", tmp_path / "tagger", PAIRWISE_TAGGER, progress=lambda _: None)
    backend = OnnxRuntimeBackend(tmp_path)
    _, tagger = load_models(tmp_path, backend, max_text_tokens=128, max_batch=8)
    assert isinstance(tagger, EncoderTagger) and tagger.graphs == ["tagger_text"]
    flac = next(it for it in fixture_items() if it.id == "flac")
    text = f"{flac.title}\n{flac.text}"
    tags = ["works-with::audio", "game::strategy", "use::converting", "hardware::storage:cd"]
    served = tagger.score([prepared(text)], [tags])[0].probs
    backend.close()
    model, info = load_tagger(PAIRWISE_TAGGER)  # adapters not merged: a different computation
    tok = minilm_tokenizer()
    enc = tok([text] * len(tags), [readable_tag(t) for t in tags], padding=True, truncation="only_first",
              max_length=info["max_tokens"], return_tensors="pt")  # the row length it was trained on
    with torch.no_grad():
        ref = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).softmax(-1).numpy()
    assert np.allclose(served, ref, atol=1e-4)
    assert info["version"] == "tagger-minilm-debtags-v2" and info["val_accuracy"] > 0.5
    grades = served.argmax(1)
    assert grades[0] == 2 and grades[1] == 0  # an audio codec works with audio; it is no strategy game


def test_lora_merge_folds_the_adapters_exactly() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    lora = LoRALinear(lin, rank=4, alpha=8)
    torch.nn.init.normal_(lora.lora_b)
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.allclose(lora(x), lora.merged()(x), atol=1e-5)
        assert not torch.allclose(lora(x), lin(x), atol=1e-3)


@pytest.mark.slow
def test_tagger_training_runs_and_writes_a_loadable_artifact(tmp_path: Path) -> None:
    from training.pairwise_tagger import TrainConfig, train_tagger

    items = fixture_items()
    # the fixture has one validation item; make two more so accuracy is measured on something
    items = [DebtagsItem(**{**it.__dict__, "split": "val" if it.id in ("flac", "lame", "cdparanoia") else "train"})
             for it in items]
    out = tmp_path / "tagger.pt"
    info = train_tagger(items, out, TrainConfig(max_steps=2, batch=8, max_tokens=48), "fixture", progress=False)
    assert info["steps"] == 2 and info["pairs_seen"] == 16 and info["val_pairs"] > 0
    assert json.loads(out.with_suffix(".json").read_text())["dataset"] == "fixture"
    model, loaded = load_tagger(out)
    assert loaded["steps"] == 2 and isinstance(model, CrossEncoderTagger)
    assert out.stat().st_size < 1_000_000  # adapters and head only, never the base weights


@pytest.mark.slow
def test_fusion_training_runs_on_an_emoji_shaped_package(tmp_path: Path) -> None:
    from training.fusion_emoji import train_fusion

    pkg = write_emoji_package(tmp_path / "emoji", 104)
    out = tmp_path / "fusion.pt"
    info = train_fusion(pkg, out, epochs=2, batch=32)
    assert info["emoji"] == 104 and info["train"] + info["held_out"] == 104
    assert set(info["recall_at_10_same_subcategory"]) == {"text_only", "image_only", "fused"}
    head, loaded = load_fusion_head(out)
    assert loaded["epochs"] == 2 and head.projection.weight.shape == (384, 1280)


def test_cli_names_what_training_the_fusion_needs(tmp_path: Path) -> None:
    from ops.cli import main

    assert main(["models", "train-fusion"]) == 1
    assert main(["models", "train-fusion", "--emoji", str(tmp_path)]) == 1  # no emoji.json there


def test_small_production_repository_batches_every_graph_and_its_warmup_runs(small_model_settings, tmp_path):
    import onnxruntime as ort
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from triton_models.repository import build_repository

    names = build_repository(small_model_settings.models_path, tmp_path / "repo", "production")
    assert names == ["embedder_vision", "embedder_text", "tagger_vision", "tagger_text"]  # the tagger sees images
    dtypes = {mc.TYPE_FP32: np.float32, mc.TYPE_INT64: np.int64}
    for name in names:
        cfg = text_format.Parse((tmp_path / "repo" / name / "config.pbtxt").read_text(), mc.ModelConfig())
        assert cfg.max_batch_size == 32 and cfg.HasField("dynamic_batching")  # fixed-size images batch too
        (warmup,) = cfg.model_warmup
        feeds = {k: np.zeros([warmup.batch_size, *v.dims], dtypes[v.data_type]) for k, v in warmup.inputs.items()}
        # exactly what Triton sends at load time (an all-zero mask included) must run
        sess = ort.InferenceSession(str(tmp_path / "repo" / name / "1" / "model.onnx"),
                                    providers=["CPUExecutionProvider"])
        assert np.isfinite(sess.run(None, feeds)[0]).all()


def test_the_serving_tokenizer_gives_the_ids_of_the_hugging_face_one(small_model_settings):
    from transformers import AutoTokenizer

    from enrich.models.encoders import load_encoder_tokenizer

    path = small_model_settings.models_path / "tagger" / "tokenizer"
    hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    mine = load_encoder_tokenizer(path)
    first = ["A long description of a package. " * 30, "café naïve 中文 🎉", "x"]
    for second in (None, ["works with: audio", "use: editing", "a b c"]):
        want = hf(first, second, padding=True, truncation="only_first" if second else True, max_length=64,
                  return_tensors="np")
        mine.enable_truncation(64, strategy="only_first" if second else "longest_first")
        got = mine.encode_batch(list(zip(first, second, strict=True)) if second else first)
        for key, attr in (("input_ids", "ids"), ("token_type_ids", "type_ids"), ("attention_mask", "attention_mask")):
            assert np.array_equal(want[key], np.array([getattr(e, attr) for e in got])), key


@pytest.mark.slow
def test_the_apps_gate_learns_to_keep_text_and_to_keep_an_icon_alone():
    """Modality dropout on synthetic features shaped like serving's: the retrained gate mixes less of the icon
    into items with text than before, and keeps an icon alone as it is."""
    import torch.nn.functional as F

    from training.fusion_apps import AppFeatures, evaluate, train_gate
    from triton_models.export_small import EMOJI_FUSION
    from triton_models.small_models import load_fusion_head

    g = torch.Generator().manual_seed(0)
    n = 400
    listing = F.normalize(torch.randn(n, 384, generator=g), dim=-1)
    short = F.normalize(listing + 0.5 * torch.randn(n, 384, generator=g) / 384 ** 0.5, dim=-1)
    empty = F.normalize(torch.randn(1, 384, generator=g), dim=-1).expand(n, 384)
    f = AppFeatures(["train"] * 300 + ["val"] * 100,
                    {"long_text_image": listing, "short_text_image": short, "image_only": empty},
                    torch.randn(n, 1280, generator=g).abs())
    before = evaluate(load_fusion_head(EMOJI_FUSION)[0], f, "val")
    after = evaluate(train_gate(f, EMOJI_FUSION, epochs=8), f, "val")
    for kind in ("long_text_image", "short_text_image"):
        assert after[kind]["cosine_to_text"] > before[kind]["cosine_to_text"] + 0.1, (kind, before, after)
        assert after[kind]["mean_image_share"] < before[kind]["mean_image_share"]
    assert after["image_only"]["cosine_to_icon"] > 0.9  # the real icons: 0.924 -> 0.998 (the training record)
    assert after["image_only"]["mean_image_share"] > after["long_text_image"]["mean_image_share"]


def test_the_gate_calibration_takes_as_much_of_the_icon_as_the_neighbours_bear():
    """On validation apps whose icons say nothing about their tags the calibration turns the image down; where
    the icons tell the tag groups apart and the texts barely do, it keeps more of it."""
    import torch.nn.functional as F

    from training.fusion_apps import AppFeatures, calibrate_gate
    from triton_models.export_small import DEFAULT_FUSION
    from triton_models.small_models import load_fusion_head

    g = torch.Generator().manual_seed(0)
    n, groups = 240, 6
    group = torch.arange(n) % groups
    tags = [frozenset({f"t{int(k)}"}) for k in group]
    centres = F.normalize(torch.randn(groups, 384, generator=g), dim=-1)
    icon_patterns = torch.randn(groups, 1280, generator=g).abs() * 3

    def features(text_noise: float, informative_icons: bool) -> AppFeatures:
        text = F.normalize(centres[group] + text_noise * torch.randn(n, 384, generator=g) / 384 ** 0.5, dim=-1)
        icons = icon_patterns[group] if informative_icons else torch.randn(n, 1280, generator=g).abs() * 3
        return AppFeatures(["val"] * n, {"long_text_image": text, "short_text_image": text,
                                         "image_only": F.normalize(torch.ones(n, 384), dim=-1)}, icons, tags)

    base, _ = load_fusion_head(DEFAULT_FUSION)
    bias = base.gate.proj.bias.detach().clone()
    _, noisy_icons = calibrate_gate(load_fusion_head(DEFAULT_FUSION)[0], features(8.0, False))
    head, telling_icons = calibrate_gate(load_fusion_head(DEFAULT_FUSION)[0], features(40.0, True))
    assert noisy_icons["offset"] < telling_icons["offset"], (noisy_icons, telling_icons)
    assert torch.allclose(head.gate.proj.bias, bias + telling_icons["offset"])
    assert set(telling_icons["table"]) == {str(o) for o in (0.0, -0.25, -0.5, -0.75, -1.0, -1.25, -1.5, -2.0, -3.0)}
