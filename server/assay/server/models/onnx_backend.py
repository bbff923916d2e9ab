"""The embedded backend: onnxruntime in-process, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from assay.server.errors import BackendError, ConfigError
from assay.server.models.backend import BackendMetadata, TensorInfo

_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(bool)": np.dtype(np.bool_),
}


def _tensor_info(node: ort.NodeArg) -> TensorInfo:
    dtype = _ORT_TYPES.get(node.type)
    if dtype is None:
        raise ConfigError(f"tensor {node.name!r} has unsupported type {node.type}")
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in node.shape]
    return TensorInfo(name=node.name, dtype=dtype, shape=tuple(dims[1:]))


class OnnxBackend:
    """Runs an ONNX model with onnxruntime on a small dedicated thread pool.

    session.run releases the GIL, so the event loop keeps serving while a
    batch runs.
    """

    kind = "onnx"

    def __init__(
        self,
        path: Path,
        *,
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
        session_workers: int = 1,
        allow_spinning: bool = False,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads burn the cores the event loop needs between batches.
        spin = "1" if allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ConfigError(f"cannot load ONNX model {path}: {exc}") from exc
        inputs = tuple(_tensor_info(n) for n in self._session.get_inputs())
        outputs = tuple(_tensor_info(n) for n in self._session.get_outputs())
        self._metadata = BackendMetadata(
            kind=self.kind, inputs=inputs, outputs=outputs, max_batch_size=None
        )
        self._output_names = [o.name for o in outputs]
        self._pool = ThreadPoolExecutor(session_workers, thread_name_prefix=f"ort-{path.stem}")
        self._closed = False

    def run_sync(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch on the calling thread (benchmarks and reference checks)."""
        results = self._session.run(self._output_names, dict(inputs))
        return {
            name: np.asarray(value) for name, value in zip(self._output_names, results, strict=True)
        }

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch on the backend's thread pool."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self.run_sync, inputs)
        except Exception as exc:
            raise BackendError(f"onnxruntime failed: {exc}") from exc

    def metadata(self) -> BackendMetadata:
        """Inputs and outputs read from the ONNX graph."""
        return self._metadata

    def ready(self) -> bool:
        """An in-process session is ready as soon as it is loaded."""
        return not self._closed

    async def aclose(self) -> None:
        """Stop the thread pool after the running batch."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
