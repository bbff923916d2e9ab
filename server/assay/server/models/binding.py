"""Checks a registry entry against what its backend reports.

Every mismatch is a ConfigError that names the entry's side and the
model's side, so the fix is obvious from the message alone.
"""

from __future__ import annotations

import numpy as np

from assay.server.errors import ConfigError
from assay.server.models.backend import BackendMetadata, TensorInfo
from assay.server.models.config import ModelConfig, OutputRole, Task


def class_output(config: ModelConfig) -> str | None:
    """The output that holds class scores (probabilities preferred over logits)."""
    return config.outputs.get(OutputRole.PROBABILITIES) or config.outputs.get(OutputRole.LOGITS)


def check_input(config: ModelConfig, meta: BackendMetadata) -> TensorInfo:
    """The model input the entry feeds, checked for name, dtype and shape."""
    spec = config.input
    if spec.name is None:
        if len(meta.inputs) != 1:
            names = [i.name for i in meta.inputs]
            raise ConfigError(f"model {config.name!r} has inputs {names}; set input.name to one")
        info = meta.inputs[0]
    else:
        try:
            info = meta.input(spec.name)
        except KeyError:
            names = [i.name for i in meta.inputs]
            raise ConfigError(
                f"model {config.name!r}: input.name {spec.name!r} is not a model input {names}"
            ) from None
    if info.dtype != np.dtype(spec.dtype.value):
        raise ConfigError(
            f"model {config.name!r}: input.dtype is {spec.dtype.value} but the model's "
            f"{info.name!r} is {info.dtype}"
        )
    if len(info.shape) != 3 or any(
        m not in (-1, s) for m, s in zip(info.shape, spec.shape, strict=True)
    ):
        raise ConfigError(
            f"model {config.name!r}: input spec gives shape {list(spec.shape)} "
            f"({spec.layout.value}) but the model's {info.name!r} is {list(info.shape)}"
        )
    return TensorInfo(info.name, info.dtype, spec.shape)


def check_outputs(config: ModelConfig, meta: BackendMetadata, labels: tuple[str, ...]) -> None:
    """Every role names a real output, and the label count matches the classes."""
    names = {o.name for o in meta.outputs}
    for role, name in config.outputs.items():
        if name not in names:
            raise ConfigError(
                f"model {config.name!r}: outputs.{role.value} = {name!r} is not a model "
                f"output {sorted(names)}"
            )
    scores = class_output(config)
    if config.task is Task.CLASSIFIER and scores and labels:
        classes = meta.output(scores).shape
        if classes and classes[-1] not in (-1, len(labels)):
            raise ConfigError(
                f"model {config.name!r}: labels list {len(labels)} classes but output "
                f"{scores!r} has {classes[-1]}"
            )
    if config.task is Task.AIGEN_DETECTOR and scores:
        _check_aigen_output(config, meta.output(scores).shape)


def _check_aigen_output(config: ModelConfig, shape: tuple[int, ...]) -> None:
    """A detector's score output is one column, or two classes with generated_index set."""
    columns = shape[-1] if shape else 1
    index = config.aigen.generated_index
    if index is None and columns not in (-1, 1):
        raise ConfigError(
            f"model {config.name!r}: an aigen_detector output has {columns} columns; give one "
            "column (logit or probability of 'generated') or set aigen.generated_index"
        )
    if index is not None and columns != -1 and index >= columns:
        raise ConfigError(
            f"model {config.name!r}: aigen.generated_index {index} is out of range for "
            f"{columns} output columns"
        )
