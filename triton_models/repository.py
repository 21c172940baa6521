"""Generate a Triton model repository from the exported graphs.

Two targets from the same ONNX files:

- ``local``: the tritonserver bundled in nvidia-pytriton (Python backend only);
  each graph is served by ``python_backend/model.py`` running ONNX Runtime.
- ``production``: the NVIDIA Triton container on GPU nodes; the
  ``onnxruntime`` backend with the TensorRT execution accelerator (FP16).

Tensor specs are read from the ONNX graphs themselves, so the configs cannot
drift from the exports.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

GRAPHS = [(role, graph) for role in ("embedder", "tagger") for graph in ("vision", "text")]
_ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64",
                   onnx.TensorProto.FLOAT16: "TYPE_FP16", onnx.TensorProto.INT32: "TYPE_INT32"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    dims: tuple[int, ...]

    def pbtxt(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        return f'  {{ name: "{self.name}" data_type: {self.dtype} dims: [ {dims} ] }}'


def tensor_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    model = onnx.load(str(path), load_external_data=False)

    def spec(v: onnx.ValueInfoProto) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(v.name, _ONNX_TO_TRITON[t.elem_type], dims)

    inits = {i.name for i in model.graph.initializer}
    return [spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output]


def config_pbtxt(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], target: str,
                 instances: int = 1, threads: int = 1) -> str:
    io = ("input [\n" + ",\n".join(s.pbtxt() for s in inputs) + "\n]\n"
          "output [\n" + ",\n".join(s.pbtxt() for s in outputs) + "\n]\n")
    # Batch lives inside the graphs (ragged image patches), so Triton's own batch dim is off.
    head = f'name: "{name}"\nmax_batch_size: 0\n'
    if target == "local":
        return (head + 'backend: "python"\n' + io +
                f"instance_group [ {{ kind: KIND_CPU count: {instances} }} ]\n"
                f'parameters: {{ key: "intra_op_threads" value: {{ string_value: "{threads}" }} }}\n')
    if target == "production":
        return (head + 'platform: "onnxruntime_onnx"\nbackend: "onnxruntime"\n' + io +
                f"instance_group [ {{ kind: KIND_GPU count: {instances} }} ]\n"
                "optimization { execution_accelerators { gpu_execution_accelerator : [ {\n"
                '  name : "tensorrt"\n'
                '  parameters { key: "precision_mode" value: "FP16" }\n'
                '  parameters { key: "max_workspace_size_bytes" value: "4294967296" }\n'
                "} ] } }\n")
    raise ValueError(f"unknown target {target!r}: expected 'local' or 'production'")


def build_repository(model_root: Path, out: Path, target: str = "local", instances: int = 1,
                     threads: int = 1) -> list[str]:
    """Write ``out/<role>_<graph>/{config.pbtxt,1/model.onnx[,1/model.py]}``; returns model names."""
    names = []
    if out.exists():
        shutil.rmtree(out)
    for role, graph in GRAPHS:
        src = model_root / role / f"{graph}.onnx"
        if not src.exists():
            raise FileNotFoundError(f"{src} missing: run `enrich models export` first")
        name = f"{role}_{graph}"
        version_dir = out / name / "1"
        version_dir.mkdir(parents=True)
        shutil.copyfile(src, version_dir / "model.onnx")
        if target == "local":
            shutil.copyfile(Path(__file__).parent / "python_backend" / "model.py", version_dir / "model.py")
        inputs, outputs = tensor_specs(src)
        (out / name / "config.pbtxt").write_text(config_pbtxt(name, inputs, outputs, target, instances, threads))
        names.append(name)
    return names
