"""Triton Python-backend model that serves an ONNX graph with ONNX Runtime.

The Triton binary bundled in nvidia-pytriton has only the Python backend, so
the local stack serves the same ONNX files the production ``onnxruntime``
backend would, through this file. Inputs and outputs come from config.pbtxt.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        threads = int(params.get("intra_op_threads", "0"))
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feeds = {}
                for name in self.inputs:
                    t = pb_utils.get_input_tensor_by_name(request, name)
                    if t is not None:
                        feeds[name] = t.as_numpy()
                results = self.session.run(self.outputs, feeds)
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor(n, np.ascontiguousarray(r)) for n, r in zip(self.outputs, results, strict=True)]))
            except Exception as exc:  # report per request; the model stays up
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")))
        return responses
