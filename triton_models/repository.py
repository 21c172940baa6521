"""Generate a Triton model repository from the exported graphs.

Two targets from the same ONNX files:

- ``local``: the tritonserver bundled in nvidia-pytriton (Python backend only);
  each graph is served by ``python_backend/model.py`` running ONNX Runtime.
- ``production``: the NVIDIA Triton container on GPU nodes; the
  ``onnxruntime`` backend with the TensorRT execution accelerator (FP16,
  engine cache), dynamic batching of the text graphs, GPU instance groups and
  an all-zero warm-up request per model.

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
    dims: tuple[int, ...]  # -1 where the graph's axis is dynamic
    axes: tuple[str, ...]  # the dynamic axes' names from the export ("batch", "seq", ...), else ""

    def pbtxt(self, batched: bool) -> str:
        dims = ", ".join(str(d) for d in (self.dims[1:] if batched else self.dims))
        return f'  {{ name: "{self.name}" data_type: {self.dtype} dims: [ {dims} ] }}'

    def warmup_dims(self, batched: bool) -> list[int]:
        dims = zip(self.dims[1:], self.axes[1:], strict=True) if batched else zip(self.dims, self.axes, strict=True)
        return [d if d >= 0 else WARMUP_SIZES.get(a, 1) for d, a in dims]


# Shapes of the all-zero warm-up request: a short item, one small image, a few readouts.
# (64 slots: whole merge units and whole windows of every preset)
WARMUP_SIZES = {"seq": 64, "image_tokens": 16, "readouts": 2, "frames": 1, "slots": 64, "batch": 1}


@dataclass(frozen=True)
class ServingOptions:
    instances: int = 1
    threads: int = 1  # local target: ONNX Runtime intra-op threads per instance
    # Production text graphs: Triton's dynamic batcher merges requests of equal padded shapes
    # (workers pad to ENRICH_SEQ_BUCKET) up to max_batch rows, waiting at most queue_delay_us.
    max_batch: int = 32
    preferred_batch: tuple[int, ...] = (8, 16, 32)
    queue_delay_us: int = 2000
    trt_cache_dir: str = "/tmp/trt-engines"


def tensor_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    model = onnx.load(str(path), load_external_data=False)

    def spec(v: onnx.ValueInfoProto) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        axes = tuple(d.dim_param if d.HasField("dim_param") else "" for d in t.shape.dim)
        return TensorSpec(v.name, _ONNX_TO_TRITON[t.elem_type], dims, axes)

    inits = {i.name for i in model.graph.initializer}
    return [spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output]


def _batch_first(specs: list[TensorSpec]) -> bool:
    return all(s.axes[:1] == ("batch",) for s in specs)


def _warmup(inputs: list[TensorSpec], batched: bool) -> str:
    entries = "\n".join(
        f'    inputs {{ key: "{s.name}" value: {{ data_type: {s.dtype} '
        f'dims: [ {", ".join(str(d) for d in s.warmup_dims(batched))} ] zero_data: true }} }}' for s in inputs)
    batch = "batch_size: 1 " if batched else ""
    return f'model_warmup [ {{\n    name: "zeros" {batch}\n{entries}\n}} ]\n'


def config_pbtxt(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], target: str,
                 opts: ServingOptions = ServingOptions()) -> str:
    if target == "local":
        # The bundled Triton's Python backend runs one request at a time; batching happens in the worker.
        io = ("input [\n" + ",\n".join(s.pbtxt(False) for s in inputs) + "\n]\n"
              "output [\n" + ",\n".join(s.pbtxt(False) for s in outputs) + "\n]\n")
        return (f'name: "{name}"\nmax_batch_size: 0\nbackend: "python"\n' + io +
                f"instance_group [ {{ kind: KIND_CPU count: {opts.instances} }} ]\n"
                f'parameters: {{ key: "intra_op_threads" value: {{ string_value: "{opts.threads}" }} }}\n')
    if target != "production":
        raise ValueError(f"unknown target {target!r}: expected 'local' or 'production'")
    # Text graphs are batch-first, so Triton may stack requests. The vision graphs take a row per frame,
    # padded to the call's longest frame, which only the worker can assemble: no Triton batching.
    batched = _batch_first(inputs + outputs)
    io = ("input [\n" + ",\n".join(s.pbtxt(batched) for s in inputs) + "\n]\n"
          "output [\n" + ",\n".join(s.pbtxt(batched) for s in outputs) + "\n]\n")
    head = f'name: "{name}"\nplatform: "onnxruntime_onnx"\nbackend: "onnxruntime"\n'
    if batched:
        preferred = ", ".join(str(b) for b in opts.preferred_batch if b <= opts.max_batch)
        head += (f"max_batch_size: {opts.max_batch}\n"
                 f"dynamic_batching {{ preferred_batch_size: [ {preferred} ] "
                 f"max_queue_delay_microseconds: {opts.queue_delay_us} }}\n")
    else:
        head += "max_batch_size: 0\n"
    return (head + io +
            f"instance_group [ {{ kind: KIND_GPU count: {opts.instances} }} ]\n"
            "optimization { execution_accelerators { gpu_execution_accelerator : [ {\n"
            '  name : "tensorrt"\n'
            '  parameters { key: "precision_mode" value: "FP16" }\n'
            '  parameters { key: "max_workspace_size_bytes" value: "4294967296" }\n'
            '  parameters { key: "trt_engine_cache_enable" value: "1" }\n'
            f'  parameters {{ key: "trt_engine_cache_path" value: "{opts.trt_cache_dir}/{name}" }}\n'
            "} ] } }\n" + _warmup(inputs, batched))


def external_files(path: Path) -> list[str]:
    """The external-data files the graph at ``path`` names (relative to its folder), without reading them."""
    model = onnx.load(str(path), load_external_data=False)
    return sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})


def build_repository(model_root: Path, out: Path, target: str = "local",
                     opts: ServingOptions = ServingOptions()) -> list[str]:
    """Write ``out/<role>_<graph>/{config.pbtxt,1/model.onnx[,1/<graph>.onnx.data][,1/model.py]}``: the exported
    files unchanged, the graph under Triton's name and its weights under the name the graph gives them;
    returns model names."""
    names = []
    if out.exists():
        shutil.rmtree(out)
    for role, graph in GRAPHS:
        src = model_root / role / f"{graph}.onnx"
        if not src.exists():
            if graph == "vision" and (model_root / role / "text.onnx").exists():
                continue  # a text-only model (the small tagger)
            raise FileNotFoundError(f"{src} missing: run `enrich models export` first")
        name = f"{role}_{graph}"
        version_dir = out / name / "1"
        version_dir.mkdir(parents=True)
        shutil.copyfile(src, version_dir / "model.onnx")
        for data in external_files(src):  # the graph's weights, under the name the graph gives them
            shutil.copyfile(src.parent / data, version_dir / data)
        if target == "local":
            shutil.copyfile(Path(__file__).parent / "python_backend" / "model.py", version_dir / "model.py")
        inputs, outputs = tensor_specs(src)
        (out / name / "config.pbtxt").write_text(config_pbtxt(name, inputs, outputs, target, opts))
        names.append(name)
    return names
