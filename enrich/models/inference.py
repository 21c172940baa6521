"""Inference backends: "named graph, tensors in, one tensor out".

Two implementations of one protocol: Triton over gRPC (the service path) and
ONNX Runtime in-process (single node, tests, and the baseline that shows what
the Triton hop costs). Graph names are ``<role>_<graph>``, e.g. ``embedder_text``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from enrich import metrics
from enrich.errors import BackendUnavailable, ModelConfigError, ModelRejected

log = logging.getLogger(__name__)

ROLE_TEXT_OUTPUT = {"embedder": "embeddings", "tagger": "label_logits"}


def output_name(model_name: str) -> str:
    role, graph = model_name.rsplit("_", 1)
    if graph == "vision":
        return "image_embeds"
    try:
        return ROLE_TEXT_OUTPUT[role]
    except KeyError:
        raise ModelConfigError(f"unknown model {model_name!r}") from None


# gRPC status -> what to do. Unlisted codes (INVALID_ARGUMENT, INTERNAL, OUT_OF_RANGE, UNKNOWN, ...) mean the
# request reached a model that failed it: retried item by item, then dead-lettered (ModelRejected). A client
# error with no status (no connection yet) counts as unavailable.
TRITON_STATUS: dict[str, type[Exception]] = {
    "": BackendUnavailable, "UNAVAILABLE": BackendUnavailable, "DEADLINE_EXCEEDED": BackendUnavailable,
    "RESOURCE_EXHAUSTED": BackendUnavailable, "ABORTED": BackendUnavailable, "CANCELLED": BackendUnavailable,
    "NOT_FOUND": ModelConfigError, "UNIMPLEMENTED": ModelConfigError, "PERMISSION_DENIED": ModelConfigError,
    "UNAUTHENTICATED": ModelConfigError,
}


class InferenceBackend(Protocol):
    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def is_ready(self, models: list[str]) -> bool: ...

    def close(self) -> None: ...


class OnnxRuntimeBackend:
    """Runs the exported graphs in this process."""

    def __init__(self, model_root: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self._sessions: dict[str, ort.InferenceSession] = {}
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        for role in ("embedder", "tagger"):
            if not (model_root / role / "text.onnx").exists():
                raise ModelConfigError(f"{model_root / role / 'text.onnx'} missing: run `enrich models export` first")
            for graph in ("vision", "text"):  # a text-only model (the small tagger) has no vision graph
                path = model_root / role / f"{graph}.onnx"
                if path.exists():
                    self._sessions[f"{role}_{graph}"] = ort.InferenceSession(
                        str(path), opts, providers=["CPUExecutionProvider"])

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        try:
            session = self._sessions[model]
        except KeyError:
            raise ModelConfigError(f"no graph named {model!r}") from None
        with metrics.MODEL_SECONDS.labels(model, "onnxruntime").time():
            try:
                return session.run(None, dict(inputs))[0]
            except Exception as exc:  # onnxruntime raises its own (pybind) exception types
                metrics.MODEL_ERRORS.labels(model, "rejected").inc()
                raise ModelRejected(f"onnxruntime {model}: {exc}") from exc

    def is_ready(self, models: list[str]) -> bool:
        return all(m in self._sessions for m in models)

    def close(self) -> None:
        self._sessions.clear()


class TritonBackend:
    """Calls the Triton server over gRPC; connection errors become ``BackendUnavailable``."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url=url)
        self._timeout = timeout_s
        self.url = url

    def is_ready(self, models: list[str]) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return all(self._client.is_model_ready(m) for m in models)
        except InferenceServerException:
            return False

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        req = []
        for name, arr in inputs.items():
            arr = np.ascontiguousarray(arr)
            t = self._grpc.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            t.set_data_from_numpy(arr)
            req.append(t)
        out = output_name(model)
        t0 = time.perf_counter()
        try:
            res = self._client.infer(model, req, outputs=[self._grpc.InferRequestedOutput(out)],
                                     client_timeout=self._timeout)
        except InferenceServerException as exc:
            raise self._classify(model, exc) from exc
        metrics.MODEL_SECONDS.labels(model, "triton").observe(time.perf_counter() - t0)
        result = res.as_numpy(out)
        if result is None:
            raise ModelConfigError(f"triton {model} returned no {out}")
        return result

    def _classify(self, model: str, exc: Exception) -> Exception:
        """A Triton error as what the caller should do, by its gRPC status code (never by message text)."""
        code = str(getattr(exc, "status", lambda: None)() or "").upper().removeprefix("STATUSCODE.")
        kind = TRITON_STATUS.get(code, ModelRejected)
        metrics.MODEL_ERRORS.labels(model, "unavailable" if kind is BackendUnavailable else "rejected").inc()
        return kind(f"triton {self.url} {model}: {code or 'no status'}: {exc}")

    def close(self) -> None:
        self._client.close()
