"""The one seam between assay and whatever runs the model.

onnxruntime in-process, Triton over gRPC and (later) TorchScript each
implement `ModelBackend`; everything above it (batcher, scorers, services)
only sees named numpy arrays in and out.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

batch_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "batch_deadline", default=None
)
"""Absolute loop.time() by which the running batch must finish (the latest
deadline of its requests; None = no deadline). The MicroBatcher sets it
around each backend call; network backends turn it into a timeout."""


@dataclass(frozen=True)
class TensorInfo:
    """A named backend input or output; -1 marks a dynamic dimension.

    `shape` excludes the batch dimension.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class BackendMetadata:
    """What a backend reports about the model it runs."""

    kind: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    max_batch_size: int | None
    """Largest batch the backend accepts in one call; None = unbounded."""

    def input(self, name: str) -> TensorInfo:
        """The input called name (KeyError if none)."""
        return _by_name(self.inputs, name)

    def output(self, name: str) -> TensorInfo:
        """The output called name (KeyError if none)."""
        return _by_name(self.outputs, name)


def _by_name(infos: tuple[TensorInfo, ...], name: str) -> TensorInfo:
    for info in infos:
        if info.name == name:
            return info
    raise KeyError(name)


@runtime_checkable
class ModelBackend(Protocol):
    """Runs one model on batches of named arrays (leading dimension = batch)."""

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; every output has the inputs' leading dimension."""
        ...

    def metadata(self) -> BackendMetadata:
        """Inputs, outputs and batch limit of the model."""
        ...

    def ready(self) -> bool:
        """True when infer() can be called now."""
        ...

    async def aclose(self) -> None:
        """Release sessions, threads and connections."""
        ...
