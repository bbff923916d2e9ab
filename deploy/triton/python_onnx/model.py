"""Triton Python-backend model that runs an ONNX file with onnxruntime.

The pip-installable tritonserver (nvidia-pytriton) ships only the Python
backend, so CPU tests serve the production ONNX files through this model.
Triton's dynamic batcher hands `execute` several requests at once; they are
concatenated into one onnxruntime call and split back, so batching behaves
as with the onnxruntime backend.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One onnxruntime session per model instance."""

    def initialize(self, args):
        """Load <version dir>/model.onnx and remember the configured outputs."""
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "1")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        """Run all requests of a dynamic batch as one onnxruntime call."""
        feeds = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in self.input_names
        }
        sizes = [len(array) for array in feeds[self.input_names[0]]]
        batch = {name: np.concatenate(arrays) for name, arrays in feeds.items()}
        outputs = self.session.run(self.output_names, batch)
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + size]))
                for name, value in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
