"""A float16 export: each graph one ``.onnx`` plus one external data file, loaded by ONNX Runtime from the
model folder, served by the repository as exactly those files, and grading like the float32 export."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from enrich.models.inference import OnnxRuntimeBackend
from enrich.models.loading import load_models
from enrich.preprocess import PreparedItem
from triton_models.export import export_model
from triton_models.repository import build_repository


@pytest.fixture(scope="module")
def fp16_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16")
    for role in ("embedder", "tagger"):
        export_model(role, root / role, preset="tiny", dtype="float16", progress=lambda _m: None)
    return root


def test_each_graph_is_one_onnx_file_and_one_data_file(fp16_models):
    for role in ("embedder", "tagger"):
        files = sorted(p.name for p in (fp16_models / role).iterdir())
        assert files == ["meta.json", "text.onnx", "text.onnx.data", "vision.onnx", "vision.onnx.data"]
        assert (fp16_models / role / "text.onnx").stat().st_size < 1_000_000  # the weights are in .data
    import onnx

    graph = onnx.load(str(fp16_models / "tagger" / "text.onnx"), load_external_data=False)
    types = {i.name: i.type.tensor_type.elem_type for i in graph.graph.input}
    assert types["image_embeds"] == onnx.TensorProto.FLOAT16 and types["attn_segments"] == onnx.TensorProto.INT64


def test_the_repository_serves_exactly_the_exported_files(fp16_models, tmp_path):
    names = build_repository(fp16_models, tmp_path / "repo", target="production")
    for name in names:
        role, graph = name.split("_")
        served = sorted(p.name for p in (tmp_path / "repo" / name / "1").iterdir())
        assert served == ["model.onnx", f"{graph}.onnx.data"]
        assert (tmp_path / "repo" / name / "1" / f"{graph}.onnx.data").read_bytes() == \
            (fp16_models / role / f"{graph}.onnx.data").read_bytes()
        assert "TYPE_FP16" in (tmp_path / "repo" / name / "config.pbtxt").read_text()


def test_the_float16_export_grades_and_embeds_like_the_float32_one(fp16_models, models_dir):
    rng = np.random.default_rng(0)
    items = [PreparedItem(item=None, text=f"an item about topic {k}",  # type: ignore[arg-type]
                          images=[Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))])
             for k in range(3)]
    tags = [["alpha", "beta", "gamma"]] * len(items)
    out = {}
    for name, root in (("fp32", models_dir), ("fp16", fp16_models)):
        backend = OnnxRuntimeBackend(root)
        embedder, tagger = load_models(root, backend, 64, 8)
        out[name] = (embedder.embed(items), np.stack([s.probs for s in tagger.score(items, tags)]))
        backend.close()
    (v32, p32), (v16, p16) = out["fp32"], out["fp16"]
    assert v16.dtype == np.float32 and p16.dtype == np.float32  # the client hands float32 on
    assert np.abs(v16 - v32).max() < 0.02 and np.abs(p16 - p32).max() < 0.02
