"""The generated Triton configs, parsed with Triton's own protobuf schema and checked against the graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from triton_models.repository import GRAPHS, ServingOptions, build_repository

_NP = {mc.TYPE_FP32: np.float32, mc.TYPE_INT64: np.int64}


@pytest.fixture(scope="module")
def production(models_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("repo") / "production"
    build_repository(models_dir, out, "production", ServingOptions(instances=2, max_batch=16))
    configs = {}
    for role, graph in GRAPHS:
        name = f"{role}_{graph}"
        configs[name] = text_format.Parse((out / name / "config.pbtxt").read_text(), mc.ModelConfig())
    return out, configs


def _onnx_io(path) -> dict[str, list[int]]:
    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return {v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            for v in list(g.input) + list(g.output) if v.name not in inits}


def test_production_configs_batch_accelerate_and_warm_up(production):
    _, configs = production
    for name, cfg in configs.items():
        assert cfg.backend == "onnxruntime" and cfg.platform == "onnxruntime_onnx"
        assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 2)]
        (trt,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
        assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
        assert trt.parameters["trt_engine_cache_enable"] == "1"
        (warmup,) = cfg.model_warmup
        assert set(warmup.inputs) == {i.name for i in cfg.input}
        if name.endswith("_text"):
            assert cfg.max_batch_size == 16 and list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
            assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
        else:  # ragged patch runs: only the worker can batch them
            assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")


def test_config_tensors_match_the_onnx_graphs_and_the_warmup_runs(production):
    out, configs = production
    for name, cfg in configs.items():
        path = out / name / "1" / "model.onnx"
        graph = _onnx_io(path)
        batch = [-1] if cfg.max_batch_size else []
        assert {t.name: batch + list(t.dims) for t in list(cfg.input) + list(cfg.output)} == graph
        # Triton sends exactly this request at load time; it must be a valid one.
        (warmup,) = cfg.model_warmup
        feeds = {k: np.zeros(([warmup.batch_size] if cfg.max_batch_size else []) + list(v.dims), _NP[v.data_type])
                 for k, v in warmup.inputs.items()}
        result = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        assert np.isfinite(result).all()


def test_local_configs_use_the_python_backend(models_dir, tmp_path):
    build_repository(models_dir, tmp_path / "local", "local", ServingOptions(threads=3))
    cfg = text_format.Parse((tmp_path / "local" / "tagger_text" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.backend == "python" and cfg.parameters["intra_op_threads"].string_value == "3"
    assert (tmp_path / "local" / "tagger_text" / "1" / "model.py").exists()
